"""Forms for the budget and control pages. Parsing only: the services (`budget_create`/`budget_update`,
`control_start`/`control_end`) validate, save and audit, and a refusal of theirs is shown next to the
field it names (`add_service_error`)."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import cast
from zoneinfo import available_timezones

from django import forms
from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from budgets.models import ApprovalRequest, Budget, ControlKind, HardAction, Metric, Period
from budgets.policy import PRIORITIES
from budgets.selectors import ApprovalFilters
from budgets.services.budgets import limit_parse
from finops.models import Environment, Workflow
from finops.pricing import nanos_to_decimal
from finops.selectors.catalog import model_tiers
from tenants.errors import ApplicationError
from tenants.models import Tenant

TIME_ZONES = sorted(available_timezones() - {"localtime", "Factory"})


def _plain(value: Decimal) -> str:
    """250.000000000 -> "250.00", 0.125 -> "0.125": what a person typed, not nine places of padding."""
    if value == value.quantize(Decimal("0.01")):
        return f"{value.quantize(Decimal('0.01')):f}"
    return f"{value.normalize():f}"


class ServiceErrorForm(forms.Form):
    """A form whose data a service checks: the service's refusal is shown like a form error."""

    def add_service_error(self, error: ApplicationError) -> None:
        """Show a service's refusal next to the field it names (or above the form)."""
        details = error.details if isinstance(error.details, dict) else {}
        placed = False
        for name, messages in details.items():
            if name in self.fields:
                for message in messages if isinstance(messages, list) else [messages]:
                    self.add_error(name, str(message))
                placed = True
        if not placed:
            self.add_error(None, error.message)


class BudgetForm(ServiceErrorForm):
    """A budget's scope, period and limits. Limits are typed in USD (cost) or whole tokens and become
    integers in the budget's unit (nano-USD or tokens) exactly, through the service's `limit_parse`.

    `tenants` are the tenants the person may put a budget on, `workflows` the workflows the person's
    scope sees (finops.selectors.workflows); `platform` lets operators leave the
    tenant empty (a budget over all tenants). A tenant admin's only tenant is fixed.
    """

    name = forms.CharField(max_length=200)
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.none(), required=False, to_field_name="slug")
    workflow = forms.ModelChoiceField(
        queryset=Workflow.objects.order_by("name"), required=False, to_field_name="slug", empty_label="All workflows"
    )
    environment = forms.ChoiceField(choices=[("", "All environments"), *Environment.choices], required=False)
    tier = forms.ModelChoiceField(queryset=model_tiers(), required=False, to_field_name="slug", empty_label="All tiers")
    metric = forms.ChoiceField(choices=Metric.choices, initial=Metric.COST, widget=forms.RadioSelect)
    period = forms.ChoiceField(choices=Period.choices, initial=Period.MONTH)
    time_zone = forms.ChoiceField(choices=[(z, z) for z in TIME_ZONES], help_text="Periods start at midnight here.")
    soft_limit = forms.CharField(
        required=False, help_text="Alerts and the first controls of the ladder start here (85% and 100%)."
    )
    hard_limit = forms.CharField(required=False, help_text="Never exceeded: preflights are held against it.")
    hard_action = forms.ChoiceField(
        choices=HardAction.choices, initial=HardAction.DENY, help_text="What happens to calls at the hard limit."
    )
    is_active = forms.BooleanField(required=False, initial=True, label="Active")

    def __init__(
        self,
        *args,
        tenants: QuerySet[Tenant],
        workflows: QuerySet[Workflow],
        platform: bool,
        budget: Budget | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.budget = budget
        # Only the workflows the person's tenants may see: another tenant's auto-discovered workflow is
        # neither listed nor accepted (it answers like a missing one).
        cast(forms.ModelChoiceField, self.fields["workflow"]).queryset = workflows.order_by("name")
        field = cast(forms.ModelChoiceField, self.fields["tenant"])
        field.queryset = tenants.order_by("name")
        field.empty_label = "All tenants (platform-wide)" if platform else None
        field.required = not platform
        if not platform and len(field.queryset) == 1:
            field.initial = field.queryset[0].slug
            field.disabled = True
        self.fields["time_zone"].initial = settings.BUDGET_TIME_ZONE
        for name in ("soft_limit", "hard_limit"):
            self.fields[name].widget.attrs.update({"inputmode": "decimal", "class": "num", "autocomplete": "off"})
        if budget is not None:
            if not platform:
                field.disabled = True  # a tenant admin never moves a budget to another tenant
            self.initial.update(
                name=budget.name,
                tenant=budget.tenant.slug if budget.tenant is not None else None,
                workflow=budget.workflow.slug if budget.workflow is not None else None,
                environment=budget.environment,
                tier=budget.tier.slug if budget.tier is not None else None,
                metric=budget.metric,
                period=budget.period,
                time_zone=budget.time_zone,
                soft_limit=self._limit_text(budget.soft_limit, budget.metric),
                hard_limit=self._limit_text(budget.hard_limit, budget.metric),
                hard_action=budget.hard_action,
                is_active=budget.is_active,
            )
        else:
            del self.fields["is_active"]

    @staticmethod
    def _limit_text(amount: int | None, metric: str) -> str:
        if amount is None:
            return ""
        return str(amount) if metric == Metric.TOKENS else _plain(nanos_to_decimal(amount))

    def clean(self):
        super().clean()
        cleaned = self.cleaned_data  # what Form.clean() returns; its stub allows None for overrides
        metric = cleaned.get("metric")
        if metric is None:
            return cleaned
        for name in ("soft_limit", "hard_limit"):
            raw = (cleaned.get(name) or "").strip().replace(",", "")
            if metric == Metric.COST:
                raw = raw.removeprefix("$")
            try:
                cleaned[name] = limit_parse(raw, metric, name)
            except ApplicationError as error:
                self.add_error(name, error.message)
        return cleaned

    def service_fields(self) -> dict:
        """The cleaned values as `budget_create`/`budget_update` take them."""
        data = self.cleaned_data
        fields = {
            "name": data["name"].strip(),
            "tenant": data.get("tenant"),
            "workflow": data.get("workflow"),
            "environment": data.get("environment") or "",
            "tier": data.get("tier"),
            "metric": data["metric"],
            "period": data["period"],
            "time_zone": data["time_zone"],
            "soft_limit": data.get("soft_limit"),
            "hard_limit": data.get("hard_limit"),
            "hard_action": data["hard_action"],
        }
        if "is_active" in self.fields:
            fields["is_active"] = data.get("is_active", False)
        return fields


class ControlForm(ServiceErrorForm):
    """A manual control: an operator's rung of the ladder, for a scope, until ended (or a given end)."""

    kind = forms.ChoiceField(choices=ControlKind.choices)
    tenant = forms.ModelChoiceField(
        queryset=Tenant.objects.order_by("name"),
        required=False,
        to_field_name="slug",
        empty_label="All tenants",
    )
    workflow = forms.ModelChoiceField(
        queryset=Workflow.objects.order_by("name"), required=False, to_field_name="slug", empty_label="All workflows"
    )
    environment = forms.ChoiceField(choices=[("", "All environments"), *Environment.choices], required=False)
    tier = forms.ModelChoiceField(queryset=model_tiers(), required=False, to_field_name="slug", empty_label="All tiers")
    priorities = forms.MultipleChoiceField(
        choices=[(p, p) for p in PRIORITIES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Workflows of these priorities only; none ticked = all.",
    )
    params = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "class": "mono", "placeholder": '{"max_output_tokens": 1024}'}),
        help_text='JSON object, e.g. {"max_output_tokens": 1024} or {"steps": 1}. Empty = none.',
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Shown to everyone the control affects.",
        error_messages={"required": "Say why: the reason is shown with the control."},
    )
    ends_at = forms.DateTimeField(
        required=False,
        label="Ends at",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        zone = timezone.get_current_timezone_name()
        self.fields["ends_at"].help_text = f"Date and time in {zone}. Empty = until someone ends it."

    def clean_params(self) -> dict:
        """The JSON object typed; what it may hold is `control_start`'s to check."""
        raw = (self.cleaned_data.get("params") or "").strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise forms.ValidationError("Not valid JSON.", code="json") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("Give a JSON object, e.g. {}.", code="not_object")
        return value

    def service_fields(self) -> dict:
        data = self.cleaned_data
        return {
            "kind": data["kind"],
            "tenant": data.get("tenant"),
            "workflow": data.get("workflow"),
            "environment": data.get("environment") or "",
            "tier": data.get("tier"),
            "priorities": list(data.get("priorities") or []),
            "params": data["params"],
            "reason": data["reason"],
            "ends_at": data.get("ends_at"),
        }


class ControlEndForm(forms.Form):
    reason = forms.CharField(max_length=1000)

    def clean_reason(self) -> str:
        reason = (self.cleaned_data.get("reason") or "").strip()
        if not reason:
            raise forms.ValidationError("Say why the control ends.", code="required")
        return reason


class BudgetIncreaseForm(forms.Form):
    """Ask for more room on a budget: parses the limits in the budget's unit; the service validates."""

    soft_limit = forms.CharField(required=False, label="New soft limit", help_text="Empty: keep the current one.")
    hard_limit = forms.CharField(required=False, label="New hard limit", help_text="Empty: keep the current one.")
    current_window_only = forms.BooleanField(
        required=False, label="This period only", help_text="The increase ends with the current period."
    )
    justification = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)

    def __init__(self, *args, budget: Budget, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget = budget
        for name in ("soft_limit", "hard_limit"):
            self.fields[name].widget.attrs.update({"inputmode": "decimal", "class": "num", "autocomplete": "off"})

    def clean(self):
        cleaned = super().clean() or {}
        for name in ("soft_limit", "hard_limit"):
            raw = (cleaned.get(name) or "").strip().replace(",", "")
            if self.budget.metric == Metric.COST:
                raw = raw.removeprefix("$")
            try:
                cleaned[name] = limit_parse(raw, self.budget.metric, name)
            except ApplicationError as error:
                self.add_error(name, error.message)
        return cleaned


class ApprovalFilterForm(forms.Form):
    """The approvals queue's `?kind=&workflow=&status=&age=` (the tenant is the scope's own `?tenant=`).
    An invalid value filters nothing; the page says which."""

    AGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}

    kind = forms.ChoiceField(
        required=False,
        choices=[
            ("", "Any kind"),
            (ApprovalRequest.Kind.WORKFLOW_RUN, "Run"),
            (ApprovalRequest.Kind.BUDGET_INCREASE, "Budget increase"),
            (ApprovalRequest.Kind.PROMPT_CHANGE, "Prompt change"),
        ],
    )
    workflow = forms.ChoiceField(required=False)
    status = forms.ChoiceField(
        required=False,
        choices=[
            ("", "Any status"),
            (ApprovalRequest.Status.PENDING, "Waiting"),
            (ApprovalRequest.Status.APPROVED, "Approved"),
            (ApprovalRequest.Status.CONSUMED, "Used (an approved run)"),
            (ApprovalRequest.Status.REJECTED, "Rejected"),
            (ApprovalRequest.Status.EXPIRED, "Expired"),
            (ApprovalRequest.Status.CANCELLED, "Cancelled"),
        ],
    )
    age = forms.ChoiceField(
        required=False,
        choices=[
            ("", "Any age"),
            ("1h", "Older than 1 hour"),
            ("24h", "Older than 24 hours"),
            ("7d", "Older than 7 days"),
        ],
    )

    def __init__(self, *args, workflows: QuerySet[Workflow], **kwargs):
        super().__init__(*args, **kwargs)
        workflow = cast(forms.ChoiceField, self.fields["workflow"])
        workflow.choices = [("", "Any workflow"), *((w.slug, w.name or w.slug) for w in workflows)]

    def filters(self) -> ApprovalFilters:
        self.is_valid()
        value = {name: self.cleaned_data.get(name) or "" for name in self.fields if name not in self.errors}
        return ApprovalFilters(
            kind=value.get("kind", ""),
            workflow=value.get("workflow", ""),
            status=value.get("status", ""),
            older_than=self.AGES.get(value.get("age", "")),
        )

    @property
    def given(self) -> list[tuple[str, str]]:
        """The filters as chosen, to keep them when the tenant switcher reloads the page."""
        return [(name, str(self.data[name])) for name in self.fields if self.data.get(name)]

    def described(self) -> list[str]:
        """The valid filters in words ("kind: prompt change", "older than 24 hours"), for the empty state."""
        self.is_valid()
        words = []
        for name in self.fields:
            raw = self.cleaned_data.get(name) if name not in self.errors else None
            if raw:
                choices = cast(list[tuple[str, str]], cast(forms.ChoiceField, self.fields[name]).choices)
                label = dict(choices)[raw]
                words.append(str(label).lower() if name == "age" else f"{name}: {str(label).lower()}")
        return words
