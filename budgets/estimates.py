"""How far preflight's input count can be trusted, learned from settled reservations.

tiktoken counts OpenAI models exactly; for other providers its count is an estimate that runs low
(Claude: 15-28% on prose, up to 65% on tool definitions). Preflight multiplies such counts by a safety
factor per provider and model family: a conservative default until enough reservations settled, then
a high percentile of actual / estimated input tokens (per tenant where the tenant has enough data).

Learned factors are computed by one query and kept in process for LEARN_TTL_SECONDS, so preflight's
hot path reads a dict.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from django.db.models import Count, F, Max, Q

from budgets.models import Reservation

DEFAULT_SAFETY_FACTORS = {"anthropic": Decimal("1.70"), "google": Decimal("1.40")}
DEFAULT_SAFETY_FACTOR = Decimal("1.50")
MIN_SAMPLES = 50  # settled estimates before a learned factor replaces the default
PERCENTILE = Decimal("0.999")  # fewer than 1 in 1,000 calls above their hold is the target
LEARN_TTL_SECONDS = 300
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


class _Cache:
    learned: dict[tuple[int | None, str], SafetyFactor] = {}
    at: float = -math.inf


def safety_factors_reset() -> None:
    _Cache.at = -math.inf


def safety_factor(*, tenant_id: int | None, provider: str, family: str) -> SafetyFactor:
    """The factor for one call: the tenant's learned one, else all tenants', else the default."""
    if time.monotonic() - _Cache.at > LEARN_TTL_SECONDS:
        _Cache.learned, _Cache.at = safety_factors_learn(), time.monotonic()
    found = _Cache.learned.get((tenant_id, family)) or _Cache.learned.get((None, family))
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
    learned = safety_factors_learn()
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
