"""A scope's spend over a period as one number or as a simple series: what budgets count and chart.

Callers name what they want (the tenants of a scope, a period [start, end), a metric, and optionally
one workflow, environment and tier); which rollup table answers, the hourly retention and the days
whose rollups lag their records stay in here.

- `spend_total` is exact (reconciliation puts budget windows back in step with it):
  - full UTC days inside the period: daily `UsageRollup` rows;
  - the partial UTC days at its edges (a budget in Europe/Berlin starts at 23:00 or 22:00 UTC):
    hourly rollups for whole hours within the hourly retention, raw records for the rest
    (half-hour zones, older edges);
  - a (tenant, day) marked in `RollupDirtyDay` has rollups that lag its records: raw records.
  Dirty marks are read both before and after the rollups, so a day that became dirty, or was
  recomputed, in between is read from raw records.
- `spend_series` reads rollups only, like every chart: daily buckets (whole UTC days) before the
  hourly retention, hourly ones from it. What was ingested since the last refresh shows after the next.

Tier scope goes through each model's tier, so calls of unknown models (no tier) match only when no
tier is asked for. Unpriced calls cost nothing until they are priced.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple

from django.db.models import Q
from django.db.models.functions import Coalesce

from finops.measures import COST, metric_sum
from finops.models import RollupDirtyDay, UsageRecord, UsageRollup
from finops.services.rollups import hourly_retention_start
from tenants.scope import TenantScope


class SpendBucket(NamedTuple):
    """One bucket of a series: the metric's sum over [start, end)."""

    start: datetime
    end: datetime
    amount: int


def _filter(
    scope: TenantScope, workflow_id: int | None, environment: str, tier_id: int | None
) -> tuple[Q, list[int] | None] | None:
    """The rows of the scope's tenants and the given workflow, environment and tier (the same lookups
    on rollup rows and raw records), and the tenant ids; None when the scope sees no tenant."""
    tenant_ids = scope.tenant_ids
    if tenant_ids is not None and not tenant_ids:
        return None
    q = Q()
    if tenant_ids is not None:
        q &= Q(tenant_id__in=tenant_ids)
    if workflow_id:
        q &= Q(workflow_id=workflow_id)
    if environment:
        q &= Q(environment=environment)
    if tier_id:
        q &= Q(model__tier_id=tier_id)
    return q, tenant_ids


def spend_total(
    *,
    scope: TenantScope,
    start: datetime,
    end: datetime,
    metric: str = COST,
    workflow_id: int | None = None,
    environment: str = "",
    tier_id: int | None = None,
) -> int:
    """What the usage in [start, end) of the scope (and workflow, environment, tier when given) adds up
    to in `metric` ("cost": nano-USD, "tokens": every bucket), exactly: see the module docstring."""
    found = _filter(scope, workflow_id, environment, tier_id)
    if found is None:
        return 0
    where, tenant_ids = found
    measure = Coalesce(metric_sum(metric), 0)
    first_day, last_day = start.astimezone(UTC).date(), (end - timedelta(microseconds=1)).astimezone(UTC).date()
    full_days = [
        first_day + timedelta(days=i)
        for i in range((last_day - first_day).days + 1)
        if _day_start(first_day + timedelta(days=i)) >= start
        and _day_start(first_day + timedelta(days=i)) + timedelta(days=1) <= end
    ]
    # The edges: the parts of the period outside its full UTC days (none for UTC-aligned periods).
    edges: list[tuple[datetime, datetime]] = []
    if full_days:
        if start < _day_start(full_days[0]):
            edges.append((start, _day_start(full_days[0])))
        if _day_start(full_days[-1]) + timedelta(days=1) < end:
            edges.append((_day_start(full_days[-1]) + timedelta(days=1), end))
    else:
        edges.append((start, end))

    dirty = _dirty(tenant_ids, first_day, last_day)
    total = 0
    # Daily rollups, per (tenant, day) so a dirty tenant-day can be left to the raw records.
    daily: dict[tuple[int, date], int] = {}
    if full_days:
        rows = (
            UsageRollup.objects.filter(
                where,
                grain=UsageRollup.Grain.DAY,
                bucket_start__gte=_day_start(full_days[0]),
                bucket_start__lte=_day_start(full_days[-1]),
            )
            .order_by()
            .values("tenant_id", "bucket_start")
            .annotate(amount=measure)
            .values_list("tenant_id", "bucket_start", "amount")
        )
        daily = {(t, b.astimezone(UTC).date()): a for t, b, a in rows}
    # Hourly rollups for whole hours of the edges within the retention; raw records for what is left.
    hourly: dict[tuple[int, datetime], int] = {}
    raw_ranges: list[tuple[datetime, datetime]] = []
    # Hourly rows exist for days recomputed within the retention, which follows the clock; a day of
    # margin keeps clear of the pruning of the oldest ones.
    retention = hourly_retention_start() + timedelta(days=1)
    for lo, hi in edges:
        h_lo = _ceil_hour(max(lo, retention))
        h_hi = _floor_hour(hi)
        if h_lo >= h_hi:
            raw_ranges.append((lo, hi))
            continue
        if lo < h_lo:
            raw_ranges.append((lo, h_lo))
        if h_hi < hi:
            raw_ranges.append((h_hi, hi))
        rows = (
            UsageRollup.objects.filter(
                where, grain=UsageRollup.Grain.HOUR, bucket_start__gte=h_lo, bucket_start__lt=h_hi
            )
            .order_by()
            .values("tenant_id", "bucket_start")
            .annotate(amount=measure)
            .values_list("tenant_id", "bucket_start", "amount")
        )
        for t, b, a in rows:
            hourly[(t, b)] = hourly.get((t, b), 0) + a
    # Marks read again after the rollups: a day dirtied or recomputed meanwhile counts as dirty.
    dirty |= _dirty(tenant_ids, first_day, last_day)
    dirty_days = {d for _, d in dirty}

    total += sum(a for (t, d), a in daily.items() if (t, d) not in dirty)
    total += sum(a for (t, b), a in hourly.items() if (t, b.astimezone(UTC).date()) not in dirty)

    # Raw records: the uncovered edge ranges for every tenant, plus each dirty day (clipped to the
    # rollup-covered part of the period) for the tenants dirty on it.
    raw = UsageRecord.objects.filter(where)
    for lo, hi in raw_ranges:
        total += raw.filter(occurred_at__gte=lo, occurred_at__lt=hi).aggregate(amount=measure)["amount"]
    covered_hours = defaultdict(list)
    for lo, hi in edges:
        h_lo, h_hi = _ceil_hour(max(lo, retention)), _floor_hour(hi)
        if h_lo < h_hi:
            covered_hours["edge"].append((h_lo, h_hi))
    for day in sorted(dirty_days):
        tenants = [t for t, d in dirty if d == day]
        day_lo, day_hi = _day_start(day), _day_start(day) + timedelta(days=1)
        if day in full_days:
            parts = [(day_lo, day_hi)]
        else:
            parts = [
                (max(lo, day_lo), min(hi, day_hi)) for lo, hi in covered_hours["edge"] if lo < day_hi and hi > day_lo
            ]
        for lo, hi in parts:
            total += raw.filter(tenant_id__in=tenants, occurred_at__gte=lo, occurred_at__lt=hi).aggregate(
                amount=measure
            )["amount"]
    return total


def spend_series(
    *,
    scope: TenantScope,
    start: datetime,
    end: datetime,
    metric: str = COST,
    workflow_id: int | None = None,
    environment: str = "",
    tier_id: int | None = None,
) -> list[SpendBucket]:
    """The usage of the scope (and workflow, environment, tier when given) per rollup bucket from
    `start` until `end`, in time order, in `metric`; buckets without usage are left out.

    Before the hourly retention the buckets are whole UTC days, so the first one starts at the UTC
    midnight before `start` when `start` falls mid-day; from it they are hours starting before `end`.
    """
    found = _filter(scope, workflow_id, environment, tier_id)
    if found is None:
        return []
    rows = UsageRollup.objects.filter(found[0])
    amount = metric_sum(metric)
    hourly_from = max(start, hourly_retention_start())
    buckets: list[SpendBucket] = []
    if start < hourly_from:
        first_day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        daily = (
            rows.filter(
                grain=UsageRollup.Grain.DAY, bucket_start__gte=first_day, bucket_start__lt=min(hourly_from, end)
            )
            .values("bucket_start")
            .annotate(amount=amount)
        )
        day = timedelta(days=1)
        buckets += [SpendBucket(r["bucket_start"], r["bucket_start"] + day, r["amount"] or 0) for r in daily]
    hourly = (
        rows.filter(grain=UsageRollup.Grain.HOUR, bucket_start__gte=hourly_from, bucket_start__lt=end)
        .values("bucket_start")
        .annotate(amount=amount)
    )
    hour = timedelta(hours=1)
    buckets += [SpendBucket(r["bucket_start"], r["bucket_start"] + hour, r["amount"] or 0) for r in hourly]
    buckets.sort(key=lambda b: b.start)
    return buckets


def _dirty(tenant_ids: list[int] | None, first: date, last: date) -> set[tuple[int, date]]:
    rows = RollupDirtyDay.objects.filter(day__gte=first, day__lte=last)
    if tenant_ids is not None:
        rows = rows.filter(tenant_id__in=tenant_ids)
    return set(rows.values_list("tenant_id", "day"))


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def _floor_hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ceil_hour(at: datetime) -> datetime:
    floor = _floor_hour(at)
    return floor if floor == at else floor + timedelta(hours=1)
