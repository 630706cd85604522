"""How far preflight's input count can be trusted, learned from settled reservations.

tiktoken counts OpenAI models exactly; for other providers its count is an estimate that runs low
(Claude: 15-28% on prose, up to 65% on tool definitions). Preflight multiplies such counts by a safety
factor per provider and model family: a conservative default until enough reservations settled, then
a high percentile of actual / estimated input tokens (per tenant where the tenant has enough data).

Learning reads up to 50,000 settled reservations, so it is not preflight's work: a periodic task
(budgets.tasks.learn_safety_factors, every LEARN_EVERY_SECONDS) stores the factors in
LearnedSafetyFactor, and preflight reads them from its in-process state (budgets/state.py), reloaded
only when the stored factors change. Preflight never reads the reservation history.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from django.db import transaction
from django.db.models import Count, F, Max, Q
from django.utils import timezone

from budgets.models import LearnedSafetyFactor, Reservation

DEFAULT_SAFETY_FACTORS = {"anthropic": Decimal("1.70"), "google": Decimal("1.40")}
DEFAULT_SAFETY_FACTOR = Decimal("1.50")
MIN_SAMPLES = 50  # settled estimates before a learned factor replaces the default
PERCENTILE = Decimal("0.999")  # fewer than 1 in 1,000 calls above their hold is the target
LEARN_EVERY_SECONDS = 300  # the beat schedule's period for learn_safety_factors (finops/celery.py)
MAX_SAMPLES = 5000  # most recent per group
_VERSION = re.compile(r"^(\d+(\.\d+)*|latest|preview|v\d.*|\d{8}|exp)$")


def model_family(provider: str, model_name: str) -> str:
    """'anthropic', 'claude-sonnet-4-5' -> 'anthropic/claude-sonnet'; version parts are dropped."""
    parts = [p for p in model_name.lower().split("/")[-1].split("@")[0].split("-") if p and not _VERSION.match(p)]
    return f"{provider.lower()}/{'-'.join(parts[:3]) or model_name.lower()}"


@dataclass(frozen=True, slots=True)
class SafetyFactor:
    factor: Decimal
    source: str  # "default", "learned" (all tenants) or "tenant"
    samples: int = 0

    def apply(self, tokens: int) -> int:
        return math.ceil(Decimal(tokens) * self.factor)


def default_factor(provider: str) -> Decimal:
    return DEFAULT_SAFETY_FACTORS.get(provider.lower(), DEFAULT_SAFETY_FACTOR)


def _percentile(ratios: list[Decimal], q: Decimal) -> Decimal:
    ordered = sorted(ratios)
    index = min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)
    return ordered[max(index, 0)]


def safety_factors_learn() -> dict[tuple[int | None, str], SafetyFactor]:
    """Learned factors per (tenant id or None for all tenants, family), from settled estimates."""
    rows = (
        Reservation.objects.filter(
            status=Reservation.Status.SETTLED,
            input_count_estimated=True,
            estimated_input_tokens__gt=0,
            actual_input_tokens__isnull=False,
        )
        .order_by("-created_at")
        .values_list("tenant_id", "estimate_family", "estimated_input_tokens", "actual_input_tokens")[:50_000]
    )
    groups: dict[tuple[int | None, str], list[Decimal]] = {}
    for tenant_id, family, estimated, actual in rows:
        ratio = Decimal(actual or 0) / Decimal(estimated or 1)
        keys: tuple[tuple[int | None, str], ...] = ((tenant_id, family), (None, family))
        for key in keys:
            bucket = groups.setdefault(key, [])
            if len(bucket) < MAX_SAMPLES:
                bucket.append(ratio)
    learned: dict[tuple[int | None, str], SafetyFactor] = {}
    for key, ratios in groups.items():
        if len(ratios) < MIN_SAMPLES:
            continue
        factor = max(Decimal(1), _percentile(ratios, PERCENTILE)).quantize(Decimal("0.001"), rounding=ROUND_CEILING)
        learned[key] = SafetyFactor(factor=factor, source="tenant" if key[0] else "learned", samples=len(ratios))
    return learned


Learned = Mapping[tuple[int | None, str], SafetyFactor]


def safety_factors_store() -> dict:
    """Learn the factors from settled reservations and replace the stored ones (the periodic task's work).

    One transaction: preflight sees the old set or the new one, never a mix. Every process's preflight
    state picks the change up through its fingerprint (budgets/state.py)."""
    learned = safety_factors_learn()
    now = timezone.now()
    with transaction.atomic():
        LearnedSafetyFactor.objects.all().delete()
        LearnedSafetyFactor.objects.bulk_create(
            LearnedSafetyFactor(tenant_id=t, family=f, factor=sf.factor, samples=sf.samples, learned_at=now)
            for (t, f), sf in learned.items()
        )
    from budgets.state import state_changed  # budgets.state imports the preflight snapshot modules

    state_changed()  # this process sees the new factors on its next decision
    return {"factors": len(learned), "tenant_factors": sum(1 for t, _ in learned if t is not None)}


def safety_factors_stored() -> dict[tuple[int | None, str], SafetyFactor]:
    """The stored factors, as preflight's state holds them (one small query, when they changed)."""
    return {
        (row.tenant_id, row.family): SafetyFactor(
            factor=row.factor, source="tenant" if row.tenant_id else "learned", samples=row.samples
        )
        for row in LearnedSafetyFactor.objects.all()
    }


def safety_factor(learned: Learned, *, tenant_id: int | None, provider: str, family: str) -> SafetyFactor:
    """The factor for one call: the tenant's learned one, else all tenants', else the default."""
    found = learned.get((tenant_id, family)) or learned.get((None, family))
    return found or SafetyFactor(factor=default_factor(provider), source="default")


@dataclass(frozen=True, slots=True)
class ProviderAccuracy:
    provider: str
    settled: int
    above_hold: int
    worst_excess_pct: Decimal | None  # how far the dearest overshoot went past its hold

    @property
    def rate(self) -> Decimal | None:
        return Decimal(self.above_hold) / self.settled if self.settled else None

    @property
    def rate_pct(self) -> str:
        return f"{self.rate * 100:.2f}%" if self.rate is not None else "—"


def estimate_accuracy(*, scope=None) -> list[ProviderAccuracy]:
    """Per provider: settled reservations with a cost, how many settled above their hold, the worst excess.
    With a tenant scope, only its tenants' reservations."""
    settled = Reservation.objects.filter(
        status=Reservation.Status.SETTLED,
        estimated_cost_nanos__gt=0,
        actual_cost_nanos__isnull=False,
        model__isnull=False,
    )
    if scope is not None:
        settled = scope.filter(settled)
    above = Q(actual_cost_nanos__gt=F("estimated_cost_nanos"))
    overshoot = F("actual_cost_nanos") * 1000 / F("estimated_cost_nanos")  # per mille of the hold
    totals = (
        settled.values("model__provider")
        .annotate(n=Count("id"), above=Count("id", filter=above), worst=Max(overshoot, filter=above))
        .order_by("model__provider")
    )
    out = []
    for row in totals:
        worst = row["worst"]
        out.append(
            ProviderAccuracy(
                provider=row["model__provider"],
                settled=row["n"],
                above_hold=row["above"],
                worst_excess_pct=(Decimal(worst) / 10 - 100).quantize(Decimal("0.1")) if worst is not None else None,
            )
        )
    return out


def safety_factor_table(providers: dict[str, list[str]]) -> list[dict]:
    """For the models page: each provider family's factor in force (all tenants) and where it comes from."""
    learned = safety_factors_stored()
    rows = []
    for provider, names in sorted(providers.items()):
        for family in sorted({model_family(provider, n) for n in names}):
            found = learned.get((None, family))
            tenants = sum(1 for (t, f) in learned if t is not None and f == family)
            rows.append(
                {
                    "provider": provider,
                    "family": family,
                    "factor": found.factor if found else default_factor(provider),
                    "source": found.source if found else "default",
                    "samples": found.samples if found else 0,
                    "tenant_factors": tenants,
                }
            )
    return rows


def estimates_report(*, scope, providers: dict[str, list[str]]) -> dict:
    """The models page's section (registered as finops.hooks.estimates_report)."""
    return {
        "factors": safety_factor_table(providers),
        "accuracy": estimate_accuracy(scope=scope),
        "min_samples": MIN_SAMPLES,
        "percentile": f"{PERCENTILE * 100:f}".rstrip("0").rstrip("."),
    }
