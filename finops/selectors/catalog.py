"""Reads of the model catalog (models with their prices) and of the scope's unpriced model names.

The catalog is shared product data that every signed-in person may read; what usage shows (unknown
model names) is limited to the tenant scope passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TypedDict
from urllib.parse import urlsplit

from django.db.models import Count, Max, Min, Prefetch, QuerySet
from django.utils import timezone

from finops.models import LlmModel, ModelPrice, ModelTier, UsageRecord
from tenants.scope import TenantScope

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class _WithPrices(TypedDict):
    """What `_with_prices` adds to each model (Prefetch's to_attr)."""

    prices_newest_first: list[ModelPrice]


@dataclass(frozen=True, slots=True)
class PriceEntry:
    price: ModelPrice
    status: str  # "current", "past" or "scheduled"

    @property
    def source_url(self) -> str:
        """The source when it is a web link (only those are rendered as links)."""
        source = self.price.source
        return source if urlsplit(source).scheme in ("http", "https") else ""

    @property
    def source_label(self) -> str:
        return urlsplit(self.source_url).netloc.removeprefix("www.") if self.source_url else self.price.source


@dataclass
class CatalogModel:
    """A catalog model with its prices newest first and the one in force now (None if none yet)."""

    model: LlmModel
    history: list[PriceEntry]
    current: ModelPrice | None = None
    variants: list[ModelPrice] = field(default_factory=list)
    past_count: int = 0
    scheduled_count: int = 0

    @property
    def all_in_force(self) -> list[ModelPrice]:
        return ([self.current] if self.current is not None else []) + self.variants


# How providers spell themselves; any other provider is shown as stored, capitalised.
PROVIDER_LABELS = {"openai": "OpenAI", "anthropic": "Anthropic", "google": "Google", "xai": "xAI", "aws": "AWS"}


@dataclass
class ProviderGroup:
    provider: str
    models: list[CatalogModel] = field(default_factory=list)

    @property
    def label(self) -> str:
        return PROVIDER_LABELS.get(self.provider.lower(), self.provider[:1].upper() + self.provider[1:])


@dataclass(frozen=True, slots=True)
class UnknownModelName:
    """A model name seen in unpriced usage; `model` is set when the catalog knows the name but had
    no price in force when the calls happened."""

    model_name: str
    calls: int
    first_seen: datetime
    last_seen: datetime
    model: LlmModel | None


def _catalog_model(model: LlmModel, prices: list[ModelPrice], now: datetime) -> CatalogModel:
    """Each (channel, service tier) has its own history; `current` is the provider API's standard
    price in force (what most calls pay), `variants` the other channels' and tiers' prices in force."""
    entry = CatalogModel(model=model, history=[])
    in_force: set[tuple[str, str]] = set()
    for price in prices:  # newest start first
        key = (price.channel, price.service_tier)
        if price.effective_from > now:
            status = "scheduled"
            entry.scheduled_count += 1
        elif key not in in_force:
            status = "current"
            in_force.add(key)
            if key == ("api", "standard"):
                entry.current = price
            else:
                entry.variants.append(price)
        else:
            status = "past"
            entry.past_count += 1
        entry.history.append(PriceEntry(price=price, status=status))
    return entry


def _with_prices(models: QuerySet[LlmModel]) -> QuerySet[WithAnnotations[LlmModel, _WithPrices]]:
    return models.select_related("tier").prefetch_related(
        Prefetch("prices", queryset=ModelPrice.objects.order_by("-effective_from"), to_attr="prices_newest_first")
    )


def model_tiers() -> QuerySet[ModelTier]:
    """The model tiers, cheapest rank first (platform data every caller may read)."""
    return ModelTier.objects.order_by("rank")


def catalog_by_provider(*, now: datetime | None = None) -> list[ProviderGroup]:
    """Every catalog model with its price history, grouped by provider (two queries)."""
    now = now or timezone.now()
    groups: dict[str, ProviderGroup] = {}
    for model in _with_prices(LlmModel.objects.order_by("provider", "tier__rank", "name")):
        group = groups.setdefault(model.provider, ProviderGroup(provider=model.provider))
        group.models.append(_catalog_model(model, model.prices_newest_first, now))
    return list(groups.values())


def catalog_model_get(*, name: str, now: datetime | None = None) -> CatalogModel | None:
    model = _with_prices(LlmModel.objects.filter(name=name)).first()
    if model is None:
        return None
    return _catalog_model(model, model.prices_newest_first, now or timezone.now())


def unknown_model_names(*, scope: TenantScope, limit: int | None = None) -> list[UnknownModelName]:
    """Model names of the scope's unpriced usage with their call counts, most calls first."""
    records = scope.filter(UsageRecord.objects.filter(priced=False))
    rows = (
        records.values("model_name")
        .annotate(
            calls=Count("id"),
            first_seen=Min("occurred_at"),
            last_seen=Max("occurred_at"),
            catalog_model_id=Max("model_id"),  # set when the name is known but had no price in force
        )
        .order_by("-calls", "model_name")
    )
    if limit is not None:
        rows = rows[:limit]
    found = list(rows)
    known = LlmModel.objects.in_bulk([r["catalog_model_id"] for r in found if r["catalog_model_id"] is not None])
    return [
        UnknownModelName(
            model_name=r["model_name"],
            calls=r["calls"],
            first_seen=r["first_seen"],
            last_seen=r["last_seen"],
            model=known.get(r["catalog_model_id"]),
        )
        for r in found
    ]
