from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from budgets.forecasting import WindowForecast, window_forecasts_weekday
from budgets.models import Budget, BudgetWindow, HardAction, Metric, Period
from budgets.periods import period_bounds
from budgets.selectors import approvals_scoped, budget_current_windows, budgets_visible
from budgets.services.budget_increases import budget_increase_ask
from budgets.services.budgets import (
    budget_create,
    budget_deactivate,
    budget_snapshot,
    budget_update,
    limit_format,
    limit_parse,
)
from finops.models import Environment
from finops.parsers import OrjsonParser
from finops.selectors.catalog import model_tiers
from finops.selectors.workflows import workflows_visible
from tenants.schema import results_of
from tenants.scoping import TenantScopedAPIView
from tenants.strict_input import StrictDecimalField, StrictInputSerializer, query_bool

from .approvals import ApprovalOutputSerializer, approval_out
from .base import by_slug


class BudgetInputSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=200)
    tenant = serializers.CharField(required=False, help_text="Platform callers only; tenant callers get their own.")
    workflow = serializers.SlugField(required=False, allow_null=True, help_text="Workflow slug; empty = all.")
    environment = serializers.ChoiceField(choices=Environment.choices, required=False, allow_blank=True)
    tier = serializers.SlugField(required=False, allow_null=True, help_text="Model tier slug; empty = all.")
    metric = serializers.ChoiceField(choices=Metric.choices, default=Metric.COST)
    period = serializers.ChoiceField(choices=Period.choices, default=Period.MONTH)
    time_zone = serializers.CharField(required=False, max_length=64, help_text="IANA name; default BUDGET_TIME_ZONE.")
    soft_limit = serializers.JSONField(required=False, allow_null=True, help_text='USD string ("250.00") or tokens.')
    hard_limit = serializers.JSONField(required=False, allow_null=True, help_text='USD string ("500.00") or tokens.')
    hard_action = serializers.ChoiceField(choices=HardAction.choices, default=HardAction.DENY)
    policy = serializers.JSONField(required=False, help_text="Ladder rungs; empty = the default policy.")
    is_active = serializers.BooleanField(required=False)
    unreserved_alert_pct = StrictDecimalField(
        max_digits=5,
        decimal_places=2,
        min_value=0,
        max_value=100,
        required=False,
        allow_null=True,
        help_text="Alert when usage without a preflight reservation passes this percent of the window's spend "
        "(default 5; null = never).",
    )


class BudgetOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    tenant = serializers.CharField(allow_null=True)
    workflow = serializers.CharField(allow_null=True)
    environment = serializers.CharField()
    tier = serializers.CharField(allow_null=True)
    scope = serializers.CharField()
    metric = serializers.CharField()
    period = serializers.CharField()
    time_zone = serializers.CharField()
    soft_limit = serializers.CharField(allow_null=True)
    hard_limit = serializers.CharField(allow_null=True)
    hard_action = serializers.CharField()
    policy = serializers.JSONField()
    is_active = serializers.BooleanField()
    unreserved_alert_pct = serializers.CharField(allow_null=True)
    window = serializers.DictField(
        help_text="The current period: starts_at, ends_at, spent, reserved, remaining, and unreserved_spent, "
        "unreserved_calls, unreserved_share_pct: usage that arrived without a preflight reservation."
    )
    forecast = serializers.DictField(
        required=False,
        help_text="The current period's end forecast with the weekday pattern: expected, p10, p90, run_rate (the "
        "linear one), method (weekday, run_rate with too little history, final for a period that is over) and "
        "history_days (days with spend in the last four weeks; the ladder's forecast rung acts on the weekday "
        "forecast from 14). Absent while the period has no window yet (nothing counted).",
    )


def _share(part: int, whole: int) -> str | None:
    return f"{(Decimal(part) * 100 / whole).quantize(Decimal('0.01'))}" if whole else None


def budget_out(budget: Budget, window: BudgetWindow | None) -> dict:
    now = timezone.now()
    unreserved = unreserved_calls = 0
    if window is None:
        starts_at, ends_at = period_bounds(budget.period, budget.time_zone, now)
        spent = reserved = 0
    else:
        starts_at, ends_at, spent, reserved = window.starts_at, window.ends_at, window.spent, window.reserved
        unreserved, unreserved_calls = window.unreserved_spent, window.unreserved_calls
    remaining = max(budget.hard_limit - spent - reserved, 0) if budget.hard_limit is not None else None
    return {
        "id": budget.pk,
        "tenant": budget.tenant.slug if budget.tenant is not None else None,
        "workflow": budget.workflow.slug if budget.workflow is not None else None,
        "environment": budget.environment,
        "tier": budget.tier.slug if budget.tier is not None else None,
        **budget_snapshot(budget),
        "window": {
            "starts_at": starts_at,
            "ends_at": ends_at,
            "spent": limit_format(spent, budget.metric),
            "reserved": limit_format(reserved, budget.metric),
            "remaining": limit_format(remaining, budget.metric),
            "unreserved_spent": limit_format(unreserved, budget.metric),
            "unreserved_calls": unreserved_calls,
            "unreserved_share_pct": _share(unreserved, spent),
        },
    }


def forecast_out(f: WindowForecast, metric: str) -> dict:
    return {
        "expected": limit_format(f.expected, metric),
        "p10": limit_format(f.p10, metric),
        "p90": limit_format(f.p90, metric),
        "run_rate": limit_format(f.run_rate, metric),
        "method": f.method,
        "history_days": f.history_days,
    }


def budgets_out(budgets: list[Budget]) -> list[dict]:
    """Budgets with their current window and its forecast: a fixed number of queries for any number."""
    windows = budget_current_windows(budgets)
    pairs = [(b, windows[b.pk]) for b in budgets if b.pk in windows]
    forecasts = window_forecasts_weekday(pairs, now=timezone.now())
    out = []
    for budget in budgets:
        row = budget_out(budget, windows.get(budget.pk))
        if budget.pk in forecasts:
            row["forecast"] = forecast_out(forecasts[budget.pk], budget.metric)
        out.append(row)
    return out


class _BudgetApiBase(TenantScopedAPIView):
    """Reads need the read scope (viewer role); writes the manage scope (admin role). Platform callers
    see every tenant's budgets and the platform-wide ones, and may name the tenant in the body."""

    parser_classes = [OrjsonParser]
    tenant_required = False  # a platform caller without a tenant sees (and creates) platform-wide budgets
    tenant_from_body = True

    def queryset(self):
        return budgets_visible(scope=self.scope)

    def resolve_fields(self, data: dict, *, partial: bool, metric: str) -> dict:
        fields: dict = {}
        for name in ("name", "environment", "period", "time_zone", "hard_action", "policy", "is_active"):
            if name in data:
                fields[name] = data[name] if data[name] is not None else ""
        if "unreserved_alert_pct" in data:
            fields["unreserved_alert_pct"] = data["unreserved_alert_pct"]
        if not partial:
            fields["metric"] = data["metric"]
            fields.setdefault("time_zone", settings.BUDGET_TIME_ZONE)
        if "workflow" in data:
            fields["workflow"] = by_slug(workflows_visible(scope=self.scope), data["workflow"], "workflow")
        if "tier" in data:
            fields["tier"] = by_slug(model_tiers(), data["tier"], "tier")
        for name in ("soft_limit", "hard_limit"):
            if name in data:
                fields[name] = limit_parse(data[name], metric, name)
        return fields


class BudgetCollectionApi(_BudgetApiBase):
    """Budgets the caller may see, with their current window; create a budget."""

    @extend_schema(
        operation_id="budgets_list",
        parameters=[
            OpenApiParameter("tenant", str, description="Platform callers: one tenant's budgets."),
            OpenApiParameter("active", bool, description="Only active (true) or retired (false) budgets."),
        ],
        responses={200: results_of(BudgetOutputSerializer, name="BudgetList")},
    )
    def get(self, request: Request) -> Response:
        budgets = self.queryset()
        active = query_bool(request.query_params, "active")
        if active is not None:
            budgets = budgets.filter(is_active=active)
        return Response({"results": budgets_out(list(budgets[:1000]))})

    @extend_schema(
        operation_id="budgets_create",
        request=BudgetInputSerializer,
        responses={201: BudgetOutputSerializer},
        examples=[
            OpenApiExample(
                "Monthly cost budget",
                value={"name": "Acme monthly", "soft_limit": "400.00", "hard_limit": "500.00", "hard_action": "deny"},
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = BudgetInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        fields = self.resolve_fields(data, partial=False, metric=data["metric"])
        budget = budget_create(tenant=self.scope.tenant, actor=self.scope.actor, **fields)
        return Response(budget_out(budget, None), status=status.HTTP_201_CREATED)


class BudgetDetailApi(_BudgetApiBase):
    """One budget: read, change (PATCH), retire (DELETE keeps its history)."""

    lookup_kwarg = "budget_id"

    def budget(self, budget_id: int) -> Budget:
        return self.object_in_scope(self.queryset(), platform_rows=True)

    @extend_schema(operation_id="budgets_retrieve", responses={200: BudgetOutputSerializer})
    def get(self, request: Request, budget_id: int) -> Response:
        return Response(budgets_out([self.budget(budget_id)])[0])

    @extend_schema(
        operation_id="budgets_update", request=BudgetInputSerializer, responses={200: BudgetOutputSerializer}
    )
    def patch(self, request: Request, budget_id: int) -> Response:
        budget = self.budget(budget_id)
        serializer = BudgetInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        data.pop("tenant", None)  # a budget never moves between tenants
        metric = data.get("metric", budget.metric)
        fields = self.resolve_fields(data, partial=True, metric=metric)
        if "metric" in data:
            fields["metric"] = metric
        budget = budget_update(budget=budget, actor=self.scope.actor, **fields)
        return Response(budget_out(budget, budget_current_windows([budget]).get(budget.pk)))

    @extend_schema(operation_id="budgets_destroy", responses={204: None})
    def delete(self, request: Request, budget_id: int) -> Response:
        budget = self.budget(budget_id)
        budget_deactivate(budget=budget, actor=self.scope.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class BudgetIncreaseInputSerializer(StrictInputSerializer):
    soft_limit = serializers.JSONField(required=False, allow_null=True, help_text='USD string ("600.00") or tokens.')
    hard_limit = serializers.JSONField(required=False, allow_null=True, help_text='USD string ("800.00") or tokens.')
    current_window_only = serializers.BooleanField(
        default=False, help_text="True: only the current period gets the new limits (ends with it)."
    )
    justification = serializers.CharField(max_length=2000)


class BudgetIncreaseApi(_BudgetApiBase):
    """Ask for a higher soft or hard limit: opens a `budget_increase` approval request that another
    approver of the tenant decides; approving applies it at once (audited)."""

    lookup_kwarg = "budget_id"

    @extend_schema(
        operation_id="budgets_increase",
        request=BudgetIncreaseInputSerializer,
        responses={201: ApprovalOutputSerializer},
        examples=[
            OpenApiExample(
                "More room this month",
                value={"hard_limit": "800.00", "current_window_only": True, "justification": "Launch week"},
                request_only=True,
            )
        ],
    )
    def post(self, request: Request, budget_id: int) -> Response:
        budget = self.object_in_scope(self.queryset(), platform_rows=True)
        serializer = BudgetIncreaseInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        approval = budget_increase_ask(
            budget=budget,
            new_soft_limit=limit_parse(data.get("soft_limit"), budget.metric, "soft_limit"),
            new_hard_limit=limit_parse(data.get("hard_limit"), budget.metric, "hard_limit"),
            current_window_only=data["current_window_only"],
            justification=data["justification"],
            actor=self.scope.actor,
        )
        return Response(approval_out(approvals_scoped(scope=self.scope).get(pk=approval.pk)), status=201)
