"""Forms for people. Validation only: saving goes through the services (`model_price_save`)."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.utils import timezone

from finops.models import LlmModel, ModelPrice, ModelTier, Workflow

PRICE_FIELDS = ("input", "cached_input", "cache_write", "cache_write_1h", "output", "reasoning")
LONG_CONTEXT_FIELDS = (
    "long_context_input",
    "long_context_cached_input",
    "long_context_cache_write",
    "long_context_cache_write_1h",
    "long_context_output",
    "long_context_reasoning",
)


def _plain(value: Decimal | None) -> str | None:
    """2.500000 -> "2.50", 0.018750 -> "0.01875": what a person typed, not the column's padding."""
    if value is None:
        return None
    if value == value.quantize(Decimal("0.01")):
        return f"{value.quantize(Decimal('0.01')):f}"
    return f"{value.normalize():f}"


class ModelPriceForm(forms.ModelForm):
    """A list price of one catalog model, in force from `effective_from` (add a new one or correct one).

    The model is fixed by the page, never by the form: pass it as `model`.
    """

    class Meta:
        model = ModelPrice
        fields = [
            "effective_from",
            "channel",
            "service_tier",
            *PRICE_FIELDS,
            "tier_multipliers",
            "long_context_threshold",
            *LONG_CONTEXT_FIELDS,
            "source",
            "price_taken_on",
        ]
        labels = {
            "effective_from": "In force from",
            "input": "Input",
            "cached_input": "Cached input (read)",
            "cache_write": "Cache write (5 minutes)",
            "cache_write_1h": "Cache write (1 hour)",
            "channel": "Channel",
            "service_tier": "Service tier",
            "tier_multipliers": "Other tiers as multiples of this price",
            "long_context_threshold": "Above this many input tokens",
            "long_context_input": "Input",
            "long_context_cached_input": "Cached input",
            "long_context_cache_write": "Cache write (5 minutes)",
            "long_context_cache_write_1h": "Cache write (1 hour)",
            "long_context_output": "Output",
            "long_context_reasoning": "Reasoning",
            "output": "Output",
            "reasoning": "Reasoning",
            "source": "Source",
            "price_taken_on": "Taken on",
        }
        help_texts = {
            "source": "Link to the provider's pricing page the price was read from.",
            "price_taken_on": "The day the public list price was read.",
            "reasoning": "Empty: same as output.",
            "cache_write_1h": "Empty: same as 5-minute writes.",
            "tier_multipliers": 'JSON, on a standard price only, e.g. {"batch": "0.5", "priority": "2"}.',
        }
        widgets = {
            # Seconds are kept so that correcting a price never moves its start by accident.
            "effective_from": forms.DateTimeInput(
                attrs={"type": "datetime-local", "step": "1"}, format="%Y-%m-%dT%H:%M:%S"
            ),
            "price_taken_on": forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
            "source": forms.TextInput(attrs={"placeholder": "https://…", "inputmode": "url"}),
        }

    def __init__(self, *args, model: LlmModel, copy_from: ModelPrice | None = None, **kwargs):
        if kwargs.get("instance") is None:
            kwargs["instance"] = ModelPrice(model=model)
        super().__init__(*args, **kwargs)
        self.catalog_model = model
        self.instance.model = model
        zone = timezone.get_current_timezone_name()
        self.fields["effective_from"].help_text = f"Date and time in {zone}. Usage from then on is priced with this."
        for name in ("channel", "service_tier"):  # a form without them adds the provider API's standard price
            self.fields[name].required = False
        for name in (*PRICE_FIELDS, *LONG_CONTEXT_FIELDS):
            field = self.fields[name]
            field.validators.append(_not_negative)
            field.widget.attrs.update({"inputmode": "decimal", "min": "0", "step": "any", "class": "num"})
            if name not in ("reasoning", "cache_write_1h"):  # the unit is given once for all prices
                field.help_text = ""
            shown = self.instance if self.instance.pk else copy_from
            if shown is not None and not self.is_bound:
                self.initial[name] = _plain(getattr(shown, name))
        if not self.instance.pk and not self.is_bound:
            if not self.initial.get("price_taken_on"):
                self.initial["price_taken_on"] = timezone.localdate()
            if copy_from is not None:
                self.initial["source"] = copy_from.source

    def sections(self) -> list[dict]:
        """The fields in the groups the page shows them in."""
        return [
            {"legend": "When", "hint": "", "money": False, "fields": [self["effective_from"], self["price_taken_on"]]},
            {
                "legend": "Prices",
                "hint": "USD per 1M tokens, up to 6 decimals",
                "money": True,
                "fields": [self[name] for name in PRICE_FIELDS],
            },
            {
                "legend": "Billed as",
                "hint": "the same model can cost differently per channel and service tier",
                "money": False,
                "fields": [self["channel"], self["service_tier"], self["tier_multipliers"]],
            },
            {
                "legend": "Long context",
                "hint": "the whole request costs these prices when its input is above the threshold",
                "money": False,
                "fields": [self["long_context_threshold"]],
            },
            {
                "legend": "Long-context prices",
                "hint": "USD per 1M tokens; an empty bucket costs its price above",
                "money": True,
                "fields": [self[name] for name in LONG_CONTEXT_FIELDS],
            },
            {"legend": "Where it comes from", "hint": "", "money": False, "fields": [self["source"]]},
        ]

    def clean_channel(self) -> str:
        return self.cleaned_data.get("channel") or "api"

    def clean_service_tier(self) -> str:
        return self.cleaned_data.get("service_tier") or "standard"

    def clean_tier_multipliers(self) -> dict:
        return self.cleaned_data.get("tier_multipliers") or {}

    def clean_source(self) -> str:
        return (self.cleaned_data.get("source") or "").strip()

    def clean(self):
        super().clean()
        cleaned = self.cleaned_data  # what ModelForm.clean() returns; its stub allows None for overrides
        start = cleaned.get("effective_from")
        if start is not None:
            clash = ModelPrice.objects.filter(
                model=self.catalog_model,
                effective_from=start,
                channel=cleaned.get("channel") or "api",
                service_tier=cleaned.get("service_tier") or "standard",
            )
            if self.instance.pk:
                clash = clash.exclude(pk=self.instance.pk)
            if clash.exists():
                self.add_error(
                    "effective_from",
                    f"{self.catalog_model.name} already has a price in force from {start:%Y-%m-%d %H:%M:%S} "
                    "for this channel and service tier. "
                    "Edit that price instead, or pick another start.",
                )
        return cleaned


def _not_negative(value: Decimal | None) -> None:
    if value is not None and value < 0:
        raise forms.ValidationError("A price cannot be negative.", code="negative")


class PromptVersionForm(forms.Form):
    """A prompt version typed on the workflow page; `prompt_version_register` validates the rest."""

    label = forms.CharField(max_length=100, help_text="What usage records and preflights name, e.g. v8.")
    model = forms.CharField(
        max_length=200, required=False, help_text="Empty: the model of the tenant's active version."
    )
    text = forms.CharField(
        label="Prompt", strip=False, widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"})
    )
    git_commit = forms.CharField(max_length=64, required=False, label="Git commit")


class WorkflowForm(forms.Form):
    """A workflow's identity and rules (the envelope is edited on its own)."""

    name = forms.CharField(max_length=200)
    slug = forms.CharField(max_length=100, help_text="What services send as \u201cworkflow\u201d.")
    owner = forms.CharField(max_length=200, required=False, help_text="Team or person responsible.")
    priority = forms.ChoiceField(choices=Workflow.Priority.choices, initial=Workflow.Priority.NORMAL)
    default_tier = forms.ModelChoiceField(
        queryset=ModelTier.objects.order_by("-rank"), required=False, empty_label="(none)", label="Default tier"
    )
    approval_threshold_usd = forms.CharField(
        required=False,
        label="Approval threshold (USD)",
        help_text="A run estimated above this needs approval; empty: never.",
    )
