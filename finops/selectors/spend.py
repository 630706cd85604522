"""Spend from rollups: totals, groups and time series by up to two dimensions.

Every page and the spend API read through `spend_query`. It reads `UsageRollup` (hourly rows for
hour granularity, daily rows otherwise) or, when a tag key is involved, `UsageTagRollup`; never
raw usage. Three queries per call: totals, groups, series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from django.db.models import F, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, NullIf, TruncMonth

from finops.errors import ApplicationError
from finops.models import UsageRollup, UsageTagRollup
from finops.pricing import cost_per_priced_call
from finops.services.rollups import MEASURES, hourly_retention_start

GRANULARITIES = ("hour", "day", "month")
DIMENSIONS = ("tenant", "workflow", "model", "tier", "environment")
TAG_PREFIX = "tag:"
MAX_GROUP_BY = 2
UNKNOWN = "(none)"

# Rollup columns (or expressions) that label each dimension.
_DIM_FIELDS = {
    "tenant": "tenant__slug",
    "workflow": "workflow__slug",
    "model": "model_label",
    "tier": "model__tier__slug",
    "environment": "environment",
}
_TAG_DIMS = frozenset({"tenant", "workflow", "environment"})


@dataclass(frozen=True)
class SpendQuery:
    start: datetime
    end: datetime
    granularity: str = "day"
    group_by: tuple[str, ...] = ()
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dimension -> values; "tag" -> key=value

    def tag_key(self) -> str | None:
        for dim in self.group_by:
            if dim.startswith(TAG_PREFIX):
                return dim[len(TAG_PREFIX) :]
        if self.filters.get("tag"):
            return self.filters["tag"][0].partition("=")[0]
        return None


@dataclass
class SpendGroup:
    key: tuple[str, ...]
    calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nanos: int = 0
    unpriced_calls: int = 0
    share: Decimal = Decimal(0)

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.cached_input_tokens
            + self.cache_write_tokens
            + self.output_tokens
            + self.reasoning_tokens
        )

    @property
    def cost_per_call_nanos(self) -> int | None:
        return cost_per_priced_call(self.cost_nanos, self.calls, self.unpriced_calls)


@dataclass
class SpendPoint:
    bucket: datetime
    key: tuple[str, ...]
    cost_nanos: int
    calls: int
    tokens: int


@dataclass
class SpendResult:
    query: SpendQuery
    totals: SpendGroup
    groups: list[SpendGroup]
    series: list[SpendPoint]
    source: str


def validate_query(query: SpendQuery) -> None:
    if query.granularity not in GRANULARITIES:
        raise ApplicationError("invalid_granularity", f"granularity must be one of {', '.join(GRANULARITIES)}.")
    if query.end <= query.start:
        raise ApplicationError("invalid_range", "The end of the range must be after its start.")
    if len(query.group_by) > MAX_GROUP_BY or len(set(query.group_by)) != len(query.group_by):
        raise ApplicationError("invalid_group_by", f"Group by up to {MAX_GROUP_BY} different dimensions.")
    tag_dims = [d for d in query.group_by if d.startswith(TAG_PREFIX)]
    for dim in query.group_by:
        if dim not in DIMENSIONS and not (dim.startswith(TAG_PREFIX) and len(dim) > len(TAG_PREFIX)):
            raise ApplicationError(
                "invalid_group_by", f"Unknown dimension '{dim}': use {', '.join(DIMENSIONS)} or tag:<key>."
            )
    for dim in query.filters:
        if dim not in DIMENSIONS and dim != "tag":
            raise ApplicationError("invalid_filter", f"Unknown filter '{dim}'.")
    if query.filters.get("tag"):
        if len(query.filters["tag"]) != 1 or "=" not in query.filters["tag"][0]:
            raise ApplicationError("invalid_filter", "Filter one tag as key=value.")
    if query.tag_key() is not None:
        if len(tag_dims) > 1 or (
            tag_dims and query.filters.get("tag") and query.filters["tag"][0].partition("=")[0] != query.tag_key()
        ):
            raise ApplicationError("invalid_group_by", "Use one tag key at a time (group by it or filter on it).")
        other = {d for d in query.group_by if not d.startswith(TAG_PREFIX)} | (set(query.filters) - {"tag"})
        if not other <= _TAG_DIMS:
            raise ApplicationError(
                "invalid_group_by", "Tags combine with tenant, workflow and environment (not model or tier)."
            )
        if query.granularity == "hour":
            raise ApplicationError("invalid_granularity", "Tag spend is kept per day: use day or month.")
    if query.granularity == "hour" and query.start < hourly_retention_start():
        raise ApplicationError(
            "invalid_range",
            f"Hourly spend is kept for recent days only (from {hourly_retention_start():%Y-%m-%d}); "
            "use day granularity for older ranges.",
        )


def _base(query: SpendQuery, tenant_ids: list[int] | None) -> tuple[QuerySet, str]:
    tag_key = query.tag_key()
    if tag_key is not None:
        qs = UsageTagRollup.objects.filter(tag_key=tag_key)
        source = "tag"
        if query.filters.get("tag"):
            qs = qs.filter(tag_value=query.filters["tag"][0].partition("=")[2])
    else:
        grain = UsageRollup.Grain.HOUR if query.granularity == "hour" else UsageRollup.Grain.DAY
        qs = UsageRollup.objects.filter(grain=grain).annotate(
            model_label=Coalesce(F("model__name"), NullIf(F("unknown_model_name"), Value("")))
        )
        source = "hourly" if grain == UsageRollup.Grain.HOUR else "daily"
    qs = qs.filter(bucket_start__gte=query.start, bucket_start__lt=query.end)
    if tenant_ids is not None:
        qs = qs.filter(tenant_id__in=tenant_ids)
    for dim, values in query.filters.items():
        if dim == "tag" or not values:
            continue
        if dim == "model":
            qs = qs.filter(Q(model__name__in=values) | Q(unknown_model_name__in=values))
        else:
            qs = qs.filter(**{f"{_DIM_FIELDS[dim]}__in": values})
    return qs, source


def _label_fields(query: SpendQuery) -> list[str]:
    return ["tag_value" if d.startswith(TAG_PREFIX) else _DIM_FIELDS[d] for d in query.group_by]


def _sums() -> dict:
    return {m: Coalesce(Sum(m), 0) for m in MEASURES}


def _group(key: tuple, row: dict) -> SpendGroup:
    return SpendGroup(key=key, **{m: int(row[m]) for m in MEASURES})


def spend_query(*, tenant_ids: list[int] | None, query: SpendQuery) -> SpendResult:
    """Spend over `query` for the given tenants (None: all tenants, operators only)."""
    validate_query(query)
    qs, source = _base(query, tenant_ids)
    labels = _label_fields(query)

    totals = _group((), qs.aggregate(**_sums()))
    groups = []
    if labels:
        for row in qs.values(*labels).annotate(**_sums()).order_by("-cost_nanos", "-calls"):
            groups.append(_group(tuple(row[f] or UNKNOWN for f in labels), row))
    for g in groups:
        g.share = (Decimal(g.cost_nanos) / totals.cost_nanos) if totals.cost_nanos else Decimal(0)

    bucket = TruncMonth("bucket_start", tzinfo=UTC) if query.granularity == "month" else F("bucket_start")
    series = [
        SpendPoint(
            bucket=row["bucket"],
            key=tuple(row[f] or UNKNOWN for f in labels),
            cost_nanos=int(row["cost_nanos"]),
            calls=int(row["calls"]),
            tokens=sum(int(row[m]) for m in MEASURES[1:6]),
        )
        for row in qs.annotate(bucket=bucket).values("bucket", *labels).annotate(**_sums()).order_by("bucket")
    ]
    return SpendResult(query=query, totals=totals, groups=groups, series=series, source=source)


__all__ = [
    "DIMENSIONS",
    "GRANULARITIES",
    "SpendGroup",
    "SpendPoint",
    "SpendQuery",
    "SpendResult",
    "spend_query",
    "validate_query",
]
