"""Reads behind the people-facing pages: spend dashboards (from rollups) and the usage record list.

Dashboards read rollups, never raw usage: through `spend_query` (three queries a call) and, where a
page needs token buckets per day, which `spend_query` does not split out, one aggregate over daily
`UsageRollup` rows. Days are UTC calendar days, the grain rollups keep. Money stays integer nano-USD
here; templates and figures turn it into dollars for display only.

The usage list and detail read raw `UsageRecord` rows: they show single records, keyset-paginated.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from finops.models import Environment, LlmModel, ModelTier, UsageRecord, UsageRollup, UsageTagRollup, Workflow
from finops.pricing import cost_per_priced_call
from finops.selectors.spend import UNKNOWN, SpendGroup, SpendQuery, SpendResult, spend_query
from finops.services.rollups import hourly_retention_start
from tenants.models import Tenant

TenantScope = Tenant | QuerySet[Tenant]
TenantIds = list[int] | None  # None: every tenant (operators only)

TOP_ROWS = 10
CHART_SERIES = 10  # stacked series shown; the rest is summed into "Other"
EXPLORER_MAX_ROWS = 500  # table rows; beyond them one "other" row, in the CSV too
OTHER = "Other"


def utc_today(now: datetime | None = None) -> date:
    return (now or timezone.now()).astimezone(UTC).date()


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass(frozen=True, slots=True)
class SpendRow:
    """One row of a breakdown: `key` is the dimension value (UNKNOWN for none), `label` is shown."""

    key: str
    label: str
    calls: int = 0
    tokens: int = 0
    cost_nanos: int = 0
    unpriced_calls: int = 0
    share: Decimal = Decimal(0)

    @property
    def is_none(self) -> bool:
        return self.key == UNKNOWN

    @property
    def cost_per_call_nanos(self) -> int | None:
        return cost_per_priced_call(self.cost_nanos, self.calls, self.unpriced_calls)


@dataclass(frozen=True, slots=True)
class Series:
    """One line or stack of a figure: integer values (nano-USD, calls or tokens) aligned with its x."""

    name: str
    values: list[int]
    key: str = ""


def _rows_by(groups: Iterable[SpendGroup], index: int, total_cost: int, labels: Mapping[str, str]) -> list[SpendRow]:
    """Sum groups of a (possibly two-dimensional) query over one of their dimensions, costliest first."""
    acc: dict[str, list[int]] = {}
    for g in groups:
        a = acc.setdefault(g.key[index], [0, 0, 0, 0])
        a[0] += g.calls
        a[1] += g.tokens
        a[2] += g.cost_nanos
        a[3] += g.unpriced_calls
    rows = [
        SpendRow(
            key=key,
            label=labels.get(key, key),
            calls=calls,
            tokens=tokens,
            cost_nanos=cost,
            unpriced_calls=unpriced,
            share=Decimal(cost) / total_cost if total_cost else Decimal(0),
        )
        for key, (calls, tokens, cost, unpriced) in acc.items()
    ]
    rows.sort(key=lambda r: (-r.cost_nanos, -r.calls, r.label))
    return rows


def workflow_names(slugs: Iterable[str]) -> dict[str, str]:
    """Names of the workflows the caller already sees in spend (never a list of all workflows)."""
    wanted = {s for s in slugs if s and s != UNKNOWN}
    if not wanted:
        return {}
    return dict(Workflow.objects.filter(slug__in=wanted).values_list("slug", "name"))


def _stack(
    points: Iterable[tuple[object, str, int]], x: list, order: list[str], labels: Mapping[str, str], limit: int
) -> list[Series]:
    """(bucket, key, value) points -> one series per key in `order` (top `limit`), the rest as Other."""
    position = {b: i for i, b in enumerate(x)}
    shown = order[:limit]
    values = {k: [0] * len(x) for k in shown}
    other = [0] * len(x)
    for bucket, key, value in points:
        i = position.get(bucket)
        if i is None:
            continue
        (values[key] if key in values else other)[i] += value
    series = [Series(name=labels.get(k, k), values=values[k], key=k) for k in shown]
    if len(order) > limit:
        series.append(Series(name=OTHER, values=other, key=""))
    return series


# --- Overview -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeriodSpend:
    """Spend of a calendar period so far, beside the same number of days of the period before."""

    label: str
    previous_label: str
    first: date
    last: date
    previous_first: date
    previous_last: date
    cost_nanos: int = 0
    calls: int = 0
    tokens: int = 0
    previous_cost_nanos: int = -1  # -1 until summed: from daily rows unless set from hourly ones

    @property
    def change(self) -> Decimal | None:
        """(now - before) / before; None when there was nothing before to compare with."""
        if self.previous_cost_nanos <= 0:
            return None
        return Decimal(self.cost_nanos - self.previous_cost_nanos) / self.previous_cost_nanos


def overview_periods(today: date) -> list[PeriodSpend]:
    """Today, this calendar week (from Monday) and this month so far, each against the same number
    of days at the start of the period before (yesterday, last week, last month)."""
    yesterday = today - timedelta(days=1)
    monday = today - timedelta(days=today.weekday())
    last_monday = monday - timedelta(days=7)
    month_first = today.replace(day=1)
    last_month_last = month_first - timedelta(days=1)
    last_month_first = last_month_last.replace(day=1)
    return [
        PeriodSpend("Today", "yesterday", today, today, yesterday, yesterday),
        PeriodSpend("This week", "last week", monday, today, last_monday, last_monday + (today - monday)),
        PeriodSpend(
            "Month to date",
            "last month",
            month_first,
            today,
            last_month_first,
            min(last_month_first + (today - month_first), last_month_last),
        ),
    ]


@dataclass
class Overview:
    today: date
    periods: list[PeriodSpend]
    days: list[date]  # the chart's days, oldest first
    daily_by_environment: list[Series]
    window: SpendGroup  # totals over `days`
    tiers: list[SpendRow]
    environments: list[SpendRow]
    workflows: list[SpendRow]
    models: list[SpendRow]
    tenants: list[SpendRow]
    unpriced_models: list[SpendRow]  # models with unpriced calls in `days`, most calls first
    has_usage: bool  # any usage at all, even older than the periods

    @property
    def has_recent(self) -> bool:
        return self.window.calls > 0


def _today_so_far(tenant_ids: TenantIds, now: datetime, today: PeriodSpend) -> PeriodSpend:
    """Today against yesterday up to the same hour, from hourly rollups (3 queries): a whole
    yesterday against a morning would always read as a drop. Whole days when hours are not kept."""
    midnight = day_start(today.first)
    hour_end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    yesterday = midnight - timedelta(days=1)
    if yesterday < hourly_retention_start(now):
        return replace(today, previous_cost_nanos=-1)
    hourly = spend_query(tenant_ids=tenant_ids, query=SpendQuery(start=yesterday, end=hour_end, granularity="hour"))
    cut = yesterday + (hour_end - midnight)
    previous = sum(p.cost_nanos for p in hourly.series if p.bucket < cut)
    label = "yesterday" if hour_end - midnight == timedelta(days=1) else f"yesterday until {hour_end:%H:%M} UTC"
    return replace(today, previous_label=label, previous_cost_nanos=previous)


ENVIRONMENT_ORDER = ("prod", "stage", "dev")  # stacking order: where the money goes first
ENVIRONMENT_LABELS = dict(Environment.choices)


def overview_get(
    *,
    tenant_ids: TenantIds,
    tenant_names: Mapping[str, str],
    with_tenants: bool,
    now: datetime | None = None,
    window_days: int = 30,
) -> Overview:
    """The overview in 9 spend queries (12 with the tenant breakdown), +1 for workflow names.

    One daily query by (tier, environment) from the start of last month gives the period cards, the
    daily chart and the tier and environment splits; one hourly query since yesterday compares today
    with yesterday up to the same hour; one by (workflow, model) over the window gives top workflows,
    top models and the unpriced models (month granularity: its series is not read).
    """
    now = now or timezone.now()
    today = utc_today(now)
    periods = overview_periods(today)
    periods[0] = _today_so_far(tenant_ids, now, periods[0])
    first_day = today - timedelta(days=window_days - 1)
    days = days_between(first_day, today)
    start = day_start(min(first_day, periods[-1].previous_first))
    end = day_start(today + timedelta(days=1))

    daily = spend_query(
        tenant_ids=tenant_ids,
        query=SpendQuery(start=start, end=end, granularity="day", group_by=("tier", "environment")),
    )
    per_day: dict[date, list[int]] = defaultdict(lambda: [0, 0, 0])
    tier_acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    env_acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    env_points = []
    for p in daily.series:
        day = p.bucket.date()
        acc = per_day[day]
        acc[0] += p.cost_nanos
        acc[1] += p.calls
        acc[2] += p.tokens
        if day >= first_day:
            tier, env = p.key
            for target in (tier_acc[tier], env_acc[env]):
                target[0] += p.cost_nanos
                target[1] += p.calls
                target[2] += p.tokens
            env_points.append((day, env, p.cost_nanos))

    def span(first: date, last: date) -> list[int]:
        out = [0, 0, 0]
        for d in days_between(first, last):
            for i, v in enumerate(per_day.get(d, ())):
                out[i] += v
        return out

    filled = []
    for p in periods:
        cost, calls, tokens = span(p.first, p.last)
        previous = p.previous_cost_nanos if p.previous_cost_nanos >= 0 else span(p.previous_first, p.previous_last)[0]
        filled.append(replace(p, cost_nanos=cost, calls=calls, tokens=tokens, previous_cost_nanos=max(previous, 0)))

    window_query = SpendQuery(start=day_start(first_day), end=end, granularity="month", group_by=("workflow", "model"))
    by_workflow_model = spend_query(tenant_ids=tenant_ids, query=window_query)
    window = by_workflow_model.totals
    total = window.cost_nanos
    workflows = _rows_by(by_workflow_model.groups, 0, total, {})
    names = workflow_names(r.key for r in workflows[:TOP_ROWS])
    workflows = [_relabel(r, names) for r in workflows]
    models = _rows_by(by_workflow_model.groups, 1, total, {})

    tenants: list[SpendRow] = []
    if with_tenants:
        by_tenant = spend_query(
            tenant_ids=tenant_ids, query=SpendQuery(**{**_fields(window_query), "group_by": ("tenant",)})
        )
        tenants = _rows_by(by_tenant.groups, 0, total, tenant_names)

    env_rows = _acc_rows(env_acc, total, ENVIRONMENT_LABELS)
    env_rank = {e: i for i, e in enumerate(ENVIRONMENT_ORDER)}
    env_order = sorted(env_acc, key=lambda e: (env_rank.get(e, 99), e))
    has_usage = daily.totals.calls > 0 or _rollups_exist(tenant_ids)
    return Overview(
        today=today,
        periods=filled,
        days=days,
        daily_by_environment=_stack(env_points, days, env_order, ENVIRONMENT_LABELS, len(env_order)),
        window=window,
        tiers=_acc_rows(tier_acc, total, {k: k.capitalize() for k in tier_acc}),
        environments=env_rows,
        workflows=workflows[:TOP_ROWS],
        models=models[:TOP_ROWS],
        tenants=tenants[:TOP_ROWS],
        unpriced_models=sorted((m for m in models if m.unpriced_calls), key=lambda m: (-m.unpriced_calls, m.key)),
        has_usage=has_usage,
    )


def _fields(query: SpendQuery) -> dict:
    return {f: getattr(query, f) for f in ("start", "end", "granularity", "group_by", "filters")}


def _relabel(row: SpendRow, labels: Mapping[str, str]) -> SpendRow:
    label = labels.get(row.key)
    if label is None:
        return row
    return SpendRow(row.key, label, row.calls, row.tokens, row.cost_nanos, row.unpriced_calls, row.share)


def _acc_rows(acc: Mapping[str, list[int]], total_cost: int, labels: Mapping[str, str]) -> list[SpendRow]:
    rows = [
        SpendRow(
            key=key,
            label=labels.get(key, key),
            calls=calls,
            tokens=tokens,
            cost_nanos=cost,
            share=Decimal(cost) / total_cost if total_cost else Decimal(0),
        )
        for key, (cost, calls, tokens) in acc.items()
    ]
    rows.sort(key=lambda r: (-r.cost_nanos, -r.calls, r.label))
    return rows


def _rollups_exist(tenant_ids: TenantIds) -> bool:
    qs = UsageRollup.objects.filter(grain=UsageRollup.Grain.DAY)
    if tenant_ids is not None:
        qs = qs.filter(tenant_id__in=tenant_ids)
    return qs.exists()


# --- Attribution explorer -------------------------------------------------------------------------

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


def _bucket_of(bucket: datetime, granularity: str) -> datetime:
    bucket = bucket.astimezone(UTC) if bucket.tzinfo else bucket.replace(tzinfo=UTC)
    if granularity == "month":
        return day_start(bucket.date().replace(day=1))
    return bucket


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


def explore(*, tenant_ids: TenantIds, query: SpendQuery, sort: str = "-cost") -> Exploration:
    """Spend grouped by the query's dimensions: table rows sorted as asked, and a stacked series by the
    first dimension. Raises ApplicationError (from `spend_query`) for a query it cannot answer."""
    result: SpendResult = spend_query(tenant_ids=tenant_ids, query=query)
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
    order = sorted(first_totals, key=lambda k: -first_totals[k])
    points = [(_bucket_of(p.bucket, query.granularity), p.key[0] if p.key else "", p.cost_nanos) for p in result.series]
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
        stacks=_stack(points, buckets, order, {}, CHART_SERIES),
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


def explorer_options(*, tenant_ids: TenantIds, today: date | None = None) -> ExplorerOptions:
    """What the explorer's controls offer. Registered workflows and catalog models are shared product
    data; tag keys come from the visible tenants' tag rollups (recent ones), never from others'."""
    today = today or utc_today()
    tags = UsageTagRollup.objects.filter(bucket_start__gte=day_start(today - timedelta(days=TAG_KEYS_LOOKBACK_DAYS)))
    if tenant_ids is not None:
        tags = tags.filter(tenant_id__in=tenant_ids)
    return ExplorerOptions(
        workflows=list(
            Workflow.objects.filter(status=Workflow.Status.REGISTERED).order_by("name").values_list("slug", "name")
        ),
        models=list(LlmModel.objects.filter(is_active=True).order_by("name").values_list("name", flat=True)),
        tiers=list(ModelTier.objects.order_by("rank").values_list("slug", "name")),
        tag_keys=list(tags.order_by("tag_key").values_list("tag_key", flat=True).distinct()),
    )


# --- Tenant and workflow pages --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayProfile:
    """One day of daily rollups summed: what `spend_query` does not split (token buckets, unpriced)."""

    day: date
    calls: int = 0
    unpriced_calls: int = 0
    cost_nanos: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    tenants: int = 0  # tenants with usage that day

    @property
    def prompt_tokens(self) -> int:
        """Everything sent: uncached, cache-read and cache-write input (what an input envelope counts)."""
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    @property
    def cost_per_call_nanos(self) -> int | None:
        return cost_per_priced_call(self.cost_nanos, self.calls, self.unpriced_calls)


TOKEN_BUCKETS = (
    ("input_tokens", "Input"),
    ("cached_input_tokens", "Cached input"),
    ("cache_write_tokens", "Cache write"),
    ("output_tokens", "Output"),
    ("reasoning_tokens", "Reasoning"),
)


def daily_profile(*, tenant_ids: TenantIds, days: list[date], workflow_id: int | None = None) -> list[DayProfile]:
    """Per day of `days` (every day, empty ones too): calls, cost and each token bucket; one query."""
    qs = UsageRollup.objects.filter(
        grain=UsageRollup.Grain.DAY,
        bucket_start__gte=day_start(days[0]),
        bucket_start__lt=day_start(days[-1] + timedelta(days=1)),
    )
    if tenant_ids is not None:
        qs = qs.filter(tenant_id__in=tenant_ids)
    if workflow_id is not None:
        qs = qs.filter(workflow_id=workflow_id)
    sums = [f for f, _ in TOKEN_BUCKETS] + ["calls", "unpriced_calls", "cost_nanos"]
    rows = (
        qs.values("bucket_start")
        .annotate(**{f"sum_{f}": Sum(f) for f in sums}, tenants=Count("tenant_id", distinct=True))
        .order_by("bucket_start")
    )
    by_day = {
        _bucket_of(r["bucket_start"], "day").date(): DayProfile(
            day=_bucket_of(r["bucket_start"], "day").date(),
            tenants=r["tenants"],
            **{f: int(r[f"sum_{f}"] or 0) for f in sums},
        )
        for r in rows
    }
    return [by_day.get(d) or DayProfile(day=d) for d in days]


@dataclass
class DetailDashboard:
    """A tenant's or a workflow's spend over `days`."""

    days: list[date]
    totals: SpendGroup
    stacks: list[Series]  # daily cost by the breakdown dimension
    breakdown: list[SpendRow]  # workflows (tenant page) or models (workflow page), costliest first
    second: list[SpendRow]  # models (tenant page) or tenants (workflow page)
    profile: list[DayProfile]

    @property
    def token_totals(self) -> list[tuple[str, int]]:
        return [(label, getattr(self.totals, f)) for f, label in TOKEN_BUCKETS]

    @property
    def active_days(self) -> int:
        return sum(1 for p in self.profile if p.calls)


def tenant_dashboard(*, tenant: Tenant, days: list[date]) -> DetailDashboard:
    """A tenant's daily spend by workflow, top models and token profile: 7 queries (+1 for names)."""
    base = SpendQuery(start=day_start(days[0]), end=day_start(days[-1] + timedelta(days=1)), group_by=("workflow",))
    by_workflow = spend_query(tenant_ids=[tenant.pk], query=base)
    by_model = spend_query(
        tenant_ids=[tenant.pk], query=SpendQuery(**{**_fields(base), "granularity": "month", "group_by": ("model",)})
    )
    total = by_workflow.totals.cost_nanos
    workflows = _rows_by(by_workflow.groups, 0, total, {})
    names = workflow_names(r.key for r in workflows)
    workflows = [_relabel(r, names) for r in workflows]
    return DetailDashboard(
        days=days,
        totals=by_workflow.totals,
        stacks=_daily_stacks(by_workflow, days, workflows),
        breakdown=workflows,
        second=_rows_by(by_model.groups, 0, total, {}),
        profile=daily_profile(tenant_ids=[tenant.pk], days=days),
    )


def workflow_dashboard(
    *, tenant_ids: TenantIds, workflow: Workflow, days: list[date], tenant_names: Mapping[str, str], with_tenants: bool
) -> DetailDashboard:
    """A workflow's daily spend by model for the visible tenants, their split, and its token profile:
    4 queries, 7 with the tenant split."""
    base = SpendQuery(
        start=day_start(days[0]),
        end=day_start(days[-1] + timedelta(days=1)),
        group_by=("model",),
        filters={"workflow": (workflow.slug,)},
    )
    by_model = spend_query(tenant_ids=tenant_ids, query=base)
    total = by_model.totals.cost_nanos
    models = _rows_by(by_model.groups, 0, total, {})
    tenants: list[SpendRow] = []
    if with_tenants:
        by_tenant = spend_query(
            tenant_ids=tenant_ids,
            query=SpendQuery(**{**_fields(base), "granularity": "month", "group_by": ("tenant",)}),
        )
        tenants = _rows_by(by_tenant.groups, 0, total, tenant_names)
    return DetailDashboard(
        days=days,
        totals=by_model.totals,
        stacks=_daily_stacks(by_model, days, models),
        breakdown=models,
        second=tenants,
        profile=daily_profile(tenant_ids=tenant_ids, days=days, workflow_id=workflow.pk),
    )


def _daily_stacks(result: SpendResult, days: list[date], rows: list[SpendRow]) -> list[Series]:
    x = [day_start(d) for d in days]
    points = [(_bucket_of(p.bucket, "day"), p.key[0], p.cost_nanos) for p in result.series]
    return _stack(points, x, [r.key for r in rows], {r.key: r.label for r in rows}, 8)


def workflow_seen_by(*, workflow: Workflow, tenant_ids: TenantIds) -> bool:
    """Registered workflows are shared product data; an auto-discovered one was named by some tenant's
    service, so people see it only when one of their tenants has used it."""
    if tenant_ids is None or workflow.status == Workflow.Status.REGISTERED:
        return True
    return UsageRollup.objects.filter(
        grain=UsageRollup.Grain.DAY, tenant_id__in=tenant_ids, workflow_id=workflow.pk
    ).exists()


# --- Usage record list and detail -----------------------------------------------------------------


def _records(tenants: TenantScope) -> QuerySet[UsageRecord]:
    if isinstance(tenants, Tenant):
        return UsageRecord.objects.filter(tenant=tenants)
    return UsageRecord.objects.filter(tenant__in=tenants)


@dataclass(frozen=True, slots=True)
class UsageFilters:
    """Filters of the usage list; empty values do not filter."""

    workflow: str = ""
    model: str = ""
    environment: str = ""
    priced: bool | None = None


@dataclass(frozen=True, slots=True)
class UsageCursor:
    """A position in the newest-first order (occurred_at desc, id desc).

    `direction` "older" asks for the records after this position in that order; "newer" for the
    ones before it (shown newest first as well).
    """

    occurred_at: datetime
    id: int
    direction: str = "older"


@dataclass(frozen=True, slots=True)
class UsagePage:
    records: list[UsageRecord]
    has_newer: bool
    has_older: bool

    @property
    def newer_cursor(self) -> UsageCursor | None:
        if not self.has_newer or not self.records:
            return None
        first = self.records[0]
        return UsageCursor(occurred_at=first.occurred_at, id=first.pk, direction="newer")

    @property
    def older_cursor(self) -> UsageCursor | None:
        if not self.has_older or not self.records:
            return None
        last = self.records[-1]
        return UsageCursor(occurred_at=last.occurred_at, id=last.pk, direction="older")


# A page is first looked for among the records of one day next to the cursor: with the PostgreSQL
# BRIN (or the SQLite B-tree) on occurred_at that reads only recent blocks instead of sorting every
# row of the scope. Only when that day holds too few records is the query repeated without bound.
_LIST_WINDOWS = (timedelta(days=1), None)


def usage_record_list(
    *, tenants: TenantScope, filters: UsageFilters, cursor: UsageCursor | None = None, page_size: int = 50
) -> UsagePage:
    """Newest first, keyset-paginated on (occurred_at, id): no COUNT and no OFFSET, so a page costs the
    same on the millionth record as on the first."""
    qs = _records(tenants).select_related("tenant", "workflow", "model")
    if filters.workflow:
        qs = qs.filter(workflow__slug=filters.workflow)
    if filters.model:
        qs = qs.filter(Q(model_name=filters.model) | Q(model__name=filters.model))
    if filters.environment:
        qs = qs.filter(environment=filters.environment)
    if filters.priced is not None:
        qs = qs.filter(priced=filters.priced)

    newer = cursor is not None and cursor.direction == "newer"
    if cursor is None:
        anchor = timezone.now()
    elif newer:
        anchor = cursor.occurred_at
        qs = qs.filter(Q(occurred_at__gt=cursor.occurred_at) | Q(occurred_at=cursor.occurred_at, id__gt=cursor.id))
    else:
        anchor = cursor.occurred_at
        qs = qs.filter(Q(occurred_at__lt=cursor.occurred_at) | Q(occurred_at=cursor.occurred_at, id__lt=cursor.id))
    ordered = qs.order_by("occurred_at", "id") if newer else qs.order_by("-occurred_at", "-id")

    for window in _LIST_WINDOWS:
        candidates = ordered
        if window is not None:
            # Every record outside the window lies beyond every record inside it in this order, so a
            # full page found inside the window is exactly the page the unbounded query would return.
            bound = {"occurred_at__lte": anchor + window} if newer else {"occurred_at__gte": anchor - window}
            candidates = ordered.filter(**bound)
        rows = list(candidates[: page_size + 1])
        if len(rows) > page_size:
            break

    if newer:
        page = rows[:page_size]
        page.reverse()
        return UsagePage(records=page, has_newer=len(rows) > page_size, has_older=True)
    return UsagePage(records=rows[:page_size], has_newer=cursor is not None, has_older=len(rows) > page_size)


def usage_record_get(*, tenants: TenantScope, record_id: int) -> UsageRecord | None:
    """One record inside the scope; another tenant's record answers like a missing one (None)."""
    return (
        _records(tenants)
        .select_related("tenant", "workflow", "model", "model__tier", "price", "api_key")
        .filter(pk=record_id)
        .first()
    )


def usage_filter_suggestions() -> dict[str, list[str]]:
    """Values offered (not enforced) by the usage filters: registered workflows and active catalog
    models are shared product data. Auto-discovered workflows are left out: their names come from
    some tenant's services and could tell one tenant about another."""
    return {
        "workflows": list(Workflow.objects.filter(status=Workflow.Status.REGISTERED).values_list("slug", flat=True)),
        "models": list(LlmModel.objects.filter(is_active=True).order_by("name").values_list("name", flat=True)),
    }
