"""Reads behind the people-facing pages: the spend overview and the usage record list.

Every function takes the tenant scope (one `Tenant` or a queryset of the tenants the caller may
see) and, for aggregates, a half-open time range. Money is summed in the database as integer
nano-USD and stays an `int` here; templates turn it into dollars for display only.

These read raw `UsageRecord` rows with one aggregate query per figure or table. Dashboards move to
rollups later (DESIGN.md 4); the function signatures are meant to survive that move.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from finops.models import Environment, LlmModel, UsageRecord, Workflow
from tenants.models import Tenant

TenantScope = Tenant | QuerySet[Tenant]

_TOTAL_TOKENS = (
    F("input_tokens") + F("cached_input_tokens") + F("cache_write_tokens") + F("output_tokens") + F("reasoning_tokens")
)
_UNPRICED = Q(priced=False)


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Half-open interval [start, end) of aware datetimes."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class OverviewPeriods:
    """The calendar periods of the overview, in the current time zone, each ending at the end of today.

    Periods are whole local days (today, today and the 6 days before, ...), so the sum of the last
    seven bars of the daily chart equals the seven-day card.
    """

    today: TimeRange
    last_7_days: TimeRange
    last_30_days: TimeRange
    days: list[date]

    @classmethod
    def ending_today(cls, now: datetime | None = None) -> OverviewPeriods:
        local_now = timezone.localtime(now)
        today_start = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
        end = _local_midnight(today_start.date() + timedelta(days=1))

        def days_back(n: int) -> TimeRange:
            return TimeRange(_local_midnight(today_start.date() - timedelta(days=n - 1)), end)

        first_day = today_start.date() - timedelta(days=29)
        return cls(
            today=days_back(1),
            last_7_days=days_back(7),
            last_30_days=days_back(30),
            days=[first_day + timedelta(days=i) for i in range(30)],
        )

    def as_dict(self) -> dict[str, TimeRange]:
        return {"today": self.today, "last_7_days": self.last_7_days, "last_30_days": self.last_30_days}


def _local_midnight(day: date) -> datetime:
    # make_aware per day (not start + timedelta) so days around a DST change stay calendar days.
    return timezone.make_aware(datetime(day.year, day.month, day.day))


@dataclass(frozen=True, slots=True)
class SpendTotals:
    calls: int = 0
    tokens: int = 0
    cost_nanos: int = 0
    unpriced_calls: int = 0


@dataclass(frozen=True, slots=True)
class SpendRow:
    """One row of a breakdown table: `key` is the filter value for the usage list, `label` is shown."""

    key: str
    label: str
    calls: int
    tokens: int
    cost_nanos: int | None  # None when no call of the row is priced yet
    unpriced_calls: int


@dataclass(frozen=True, slots=True)
class DailySpend:
    day: date
    environment: str
    calls: int
    cost_nanos: int


@dataclass(frozen=True, slots=True)
class UnpricedSummary:
    calls: int = 0
    model_names: list[str] = field(default_factory=list)  # most frequent first


def _records(tenants: TenantScope) -> QuerySet[UsageRecord]:
    if isinstance(tenants, Tenant):
        return UsageRecord.objects.filter(tenant=tenants)
    return UsageRecord.objects.filter(tenant__in=tenants)


def _in_range(qs: QuerySet[UsageRecord], period: TimeRange) -> QuerySet[UsageRecord]:
    return qs.filter(occurred_at__gte=period.start, occurred_at__lt=period.end)


def _period_q(period: TimeRange) -> Q:
    return Q(occurred_at__gte=period.start, occurred_at__lt=period.end)


def usage_exists(*, tenants: TenantScope) -> bool:
    return _records(tenants).exists()


def spend_totals(*, tenants: TenantScope, periods: Mapping[str, TimeRange]) -> dict[str, SpendTotals]:
    """Calls, tokens, cost and unpriced calls for each named period, in one query."""
    if not periods:
        return {}
    outer = TimeRange(min(p.start for p in periods.values()), max(p.end for p in periods.values()))
    aggregates: dict[str, Any] = {}
    for name, period in periods.items():
        in_period = _period_q(period)
        aggregates[f"{name}__calls"] = Count("id", filter=in_period)
        aggregates[f"{name}__tokens"] = Sum(_TOTAL_TOKENS, filter=in_period)
        aggregates[f"{name}__cost"] = Sum("cost_nanos", filter=in_period)
        aggregates[f"{name}__unpriced"] = Count("id", filter=in_period & _UNPRICED)
    row = _in_range(_records(tenants), outer).aggregate(**aggregates)
    return {
        name: SpendTotals(
            calls=row[f"{name}__calls"] or 0,
            tokens=row[f"{name}__tokens"] or 0,
            cost_nanos=row[f"{name}__cost"] or 0,
            unpriced_calls=row[f"{name}__unpriced"] or 0,
        )
        for name in periods
    }


def daily_spend(*, tenants: TenantScope, period: TimeRange) -> list[DailySpend]:
    """Cost and calls per local calendar day and environment; days without usage are absent."""
    rows = (
        _in_range(_records(tenants), period)
        .annotate(day=TruncDate("occurred_at", tzinfo=timezone.get_current_timezone()))
        .values("day", "environment")
        .annotate(calls=Count("id"), cost=Sum("cost_nanos"))
        .order_by("day", "environment")
    )
    return [
        DailySpend(day=r["day"], environment=r["environment"], calls=r["calls"], cost_nanos=r["cost"] or 0)
        for r in rows
    ]


def _breakdown(qs: QuerySet, *, key: str, label: str | None = None, limit: int | None) -> list[SpendRow]:
    label = label or key
    rows = (
        qs.values(*dict.fromkeys((key, label)))
        .annotate(
            calls=Count("id"),
            tokens=Sum(_TOTAL_TOKENS),
            cost=Sum("cost_nanos"),
            unpriced=Count("id", filter=_UNPRICED),
        )
        .order_by(F("cost").desc(nulls_last=True), "-calls", key)
    )
    if limit is not None:
        rows = rows[:limit]
    return [
        SpendRow(
            key=r[key] or "",
            label=r[label] or r[key] or "",
            calls=r["calls"],
            tokens=r["tokens"] or 0,
            cost_nanos=r["cost"],
            unpriced_calls=r["unpriced"],
        )
        for r in rows
    ]


def top_workflows(*, tenants: TenantScope, period: TimeRange, limit: int = 10) -> list[SpendRow]:
    """Costliest workflows; calls reported without a workflow form one row with an empty key."""
    qs = _in_range(_records(tenants), period)
    return _breakdown(qs, key="workflow__slug", label="workflow__name", limit=limit)


def top_models(*, tenants: TenantScope, period: TimeRange, limit: int = 10) -> list[SpendRow]:
    """Costliest models. Known models group under their catalog name (snapshots and deployment
    aliases together); unknown ones under the raw name sent, so unpriced usage stays visible."""
    qs = _in_range(_records(tenants), period).annotate(model_label=Coalesce("model__name", "model_name"))
    return _breakdown(qs, key="model_label", limit=limit)


def top_tenants(*, tenants: TenantScope, period: TimeRange, limit: int = 10) -> list[SpendRow]:
    qs = _in_range(_records(tenants), period)
    return _breakdown(qs, key="tenant__slug", label="tenant__name", limit=limit)


def spend_by_environment(*, tenants: TenantScope, period: TimeRange) -> list[SpendRow]:
    rows = _breakdown(_in_range(_records(tenants), period), key="environment", limit=None)
    labels = dict(Environment.choices)
    return [
        SpendRow(
            key=r.key,
            label=labels.get(r.key, r.key),
            calls=r.calls,
            tokens=r.tokens,
            cost_nanos=r.cost_nanos,
            unpriced_calls=r.unpriced_calls,
        )
        for r in rows
    ]


def unpriced_summary(*, tenants: TenantScope, period: TimeRange) -> UnpricedSummary:
    """Calls that could not be priced (model unknown to the catalog) and the raw model names sent."""
    rows = (
        _in_range(_records(tenants), period)
        .filter(_UNPRICED)
        .values("model_name")
        .annotate(calls=Count("id"))
        .order_by("-calls", "model_name")
    )
    rows = list(rows)
    return UnpricedSummary(calls=sum(r["calls"] for r in rows), model_names=[r["model_name"] for r in rows])


# --- Usage record list and detail -----------------------------------------------------------------


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
