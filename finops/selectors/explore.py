"""The attribution explorer: spend grouped by one or two dimensions, table rows and stacked series."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from finops.models import LlmModel, UsageTagRollup, Workflow
from finops.pricing import cost_per_priced_call
from finops.selectors.catalog import model_tiers
from finops.selectors.dashboard import (
    CHART_SERIES,
    EXPLORER_MAX_ROWS,
    OTHER,
    Series,
    bucket_of,
    day_start,
    days_between,
    stack,
    utc_today,
    workflow_names,
)
from finops.selectors.spend import SpendGroup, SpendQuery, SpendResult, spend_query
from tenants.scope import TenantScope

EXPLORER_SORTS = ("cost", "calls", "tokens", "cost_per_call", "share", "name", "name2")


@dataclass(frozen=True, slots=True)
class ExplorerRow:
    key: tuple[str, ...]
    calls: int = 0
    tokens: int = 0
    cost_nanos: int = 0
    unpriced_calls: int = 0
    share: Decimal = Decimal(0)
    folded: int = 0  # > 0 for the one row that sums the groups beyond EXPLORER_MAX_ROWS

    @property
    def cost_per_call_nanos(self) -> int | None:
        return cost_per_priced_call(self.cost_nanos, self.calls, self.unpriced_calls)


@dataclass
class Exploration:
    query: SpendQuery
    totals: SpendGroup
    rows: list[ExplorerRow]
    other: ExplorerRow | None
    buckets: list[datetime]
    stacks: list[Series]  # cost per bucket by the first dimension (top CHART_SERIES, then Other)
    workflow_names: dict[str, str]


def time_buckets(start: datetime, end: datetime, granularity: str) -> list[datetime]:
    """Every bucket start of [start, end) at the granularity, so empty buckets still get a slot."""
    if granularity == "hour":
        first = start.replace(minute=0, second=0, microsecond=0)
        return [first + timedelta(hours=i) for i in range(int((end - first) / timedelta(hours=1)))]
    first_day = start.astimezone(UTC).date()
    if granularity == "day":
        last = (end - timedelta(microseconds=1)).astimezone(UTC).date()
        return [day_start(d) for d in days_between(first_day, last)]
    out, month = [], first_day.replace(day=1)
    while day_start(month) < end:
        out.append(day_start(month))
        month = (month + timedelta(days=32)).replace(day=1)
    return out


def _sort_key(sort: str):
    if sort == "name":
        return lambda r: tuple(k.lower() for k in r.key)
    if sort == "name2":
        return lambda r: tuple(k.lower() for k in reversed(r.key))
    if sort == "cost_per_call":
        # Rows without a priced call sort below every priced one, whichever the direction.
        return lambda r: (r.cost_per_call_nanos is not None, r.cost_per_call_nanos or 0)
    attribute = {"cost": "cost_nanos", "share": "cost_nanos"}.get(sort, sort)
    return lambda r: getattr(r, attribute)


def explore(*, scope: TenantScope, query: SpendQuery, sort: str = "-cost", chart: bool = True) -> Exploration:
    """Spend grouped by the query's dimensions: table rows sorted as asked, and a stacked series by the
    first dimension (empty with `chart=False`, for the CSV). Raises ApplicationError (from
    `spend_query`) for a query it cannot answer."""
    # The chart stacks the CHART_SERIES costliest values of the first dimension and sums the rest:
    # spend_query returns the series that way (a few hundred points, not 90 days x 200 workflows).
    result: SpendResult = spend_query(scope=scope, query=query, series_top=CHART_SERIES if chart else 0)
    rows = [
        ExplorerRow(
            key=g.key,
            calls=g.calls,
            tokens=g.tokens,
            cost_nanos=g.cost_nanos,
            unpriced_calls=g.unpriced_calls,
            share=g.share,
        )
        for g in result.groups
    ]
    other = None
    if len(rows) > EXPLORER_MAX_ROWS:  # groups arrive costliest first: the cheap tail is folded
        tail = rows[EXPLORER_MAX_ROWS:]
        rows = rows[:EXPLORER_MAX_ROWS]
        cost = sum(r.cost_nanos for r in tail)
        other = ExplorerRow(
            key=(OTHER,) * len(query.group_by),
            calls=sum(r.calls for r in tail),
            tokens=sum(r.tokens for r in tail),
            cost_nanos=cost,
            unpriced_calls=sum(r.unpriced_calls for r in tail),
            share=Decimal(cost) / result.totals.cost_nanos if result.totals.cost_nanos else Decimal(0),
            folded=len(tail),
        )
    field_name, descending = sort.lstrip("-"), sort.startswith("-")
    if field_name not in EXPLORER_SORTS:
        field_name, descending = "cost", True
    rows.sort(key=_sort_key(field_name), reverse=descending)

    buckets = time_buckets(query.start, query.end, query.granularity)
    first_totals: dict[str, int] = defaultdict(int)
    for g in result.groups:
        first_totals[g.key[0] if g.key else ""] += g.cost_nanos
    order = sorted(first_totals, key=lambda k: (-first_totals[k], k))  # as spend_query picks its top values
    points = [(bucket_of(p.bucket, query.granularity), p.key[0] if p.key else "", p.cost_nanos) for p in result.series]
    names = {}
    if "workflow" in query.group_by:
        names = workflow_names(g.key[query.group_by.index("workflow")] for g in result.groups)
    if not query.group_by:
        order = [""] if result.totals.calls else []
    return Exploration(
        query=query,
        totals=result.totals,
        rows=rows,
        other=other,
        buckets=buckets,
        stacks=stack(points, buckets, order, {}, CHART_SERIES),
        workflow_names=names,
    )


@dataclass(frozen=True, slots=True)
class ExplorerOptions:
    workflows: list[tuple[str, str]]  # (slug, name) of registered workflows
    models: list[str]
    tiers: list[tuple[str, str]]
    tag_keys: list[str]


# Tag rollup rows are many (one per tag value and day); the keys in use are read from recent days.
TAG_KEYS_LOOKBACK_DAYS = 14


def explorer_options(*, scope: TenantScope, today: date | None = None) -> ExplorerOptions:
    """What the explorer's controls offer. Registered workflows and catalog models are shared product
    data; tag keys come from the visible tenants' tag rollups (recent ones), never from others'."""
    today = today or utc_today()
    tags = UsageTagRollup.objects.filter(bucket_start__gte=day_start(today - timedelta(days=TAG_KEYS_LOOKBACK_DAYS)))
    tags = scope.filter(tags)
    return ExplorerOptions(
        workflows=list(
            Workflow.objects.filter(status=Workflow.Status.REGISTERED).order_by("name").values_list("slug", "name")
        ),
        models=list(LlmModel.objects.filter(is_active=True).order_by("name").values_list("name", flat=True)),
        tiers=list(model_tiers().values_list("slug", "name")),
        tag_keys=list(tags.order_by("tag_key").values_list("tag_key", flat=True).distinct()),
    )
