"""Reconciliation: put each budget window's spent and reserved back in step with the records.

Ingest moves windows incrementally, and some changes never reach them: re-pricing (a price added or
corrected after the fact), records of a model whose tier changed, budgets edited mid-period. Every
ten minutes (budgets.tasks.reconcile_windows) each open window, and each window closed in the last
day (late records still land there), is recomputed:

- spent, from rollups where they are exact and from raw usage where they are not:
  - full UTC days inside the window: daily `UsageRollup` rows;
  - the partial UTC days at the window's edges (a budget in Europe/Berlin starts at 23:00 or 22:00
    UTC): hourly rollups for whole hours within the hourly retention, raw records for the rest
    (half-hour zones, older edges);
  - a (tenant, day) marked in `RollupDirtyDay` has rollups that lag its records: raw records;
- reserved, from the holds of reservations still held.

The window row is locked (SELECT … FOR UPDATE) before anything is read, so an ingest or preflight
touching the window waits for the correction and then applies its own change on top of it: nothing
that commits concurrently is lost or counted twice. Dirty marks are read both before and after the
rollups, so a day that became dirty, or was recomputed, in between is read from raw records.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from django.db import transaction
from django.db.models import F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from budgets.models import Budget, BudgetWindow, Metric, Reservation, ReservationHold
from finops.models import RollupDirtyDay, UsageRecord, UsageRollup
from finops.services.rollups import hourly_retention_start

logger = logging.getLogger(__name__)

TOKEN_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
CLOSED_GRACE = timedelta(days=1)


@dataclass
class ReconcileResult:
    windows: int = 0
    corrected: int = 0
    # Per corrected window: id, budget, spent before/after, reserved before/after.
    corrections: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"windows": self.windows, "corrected": self.corrected, "corrections": self.corrections}


def windows_reconcile(*, now: datetime | None = None) -> dict:
    """Recompute spent and reserved of open windows (and those closed in the last day); returns what
    was corrected, with the drift of each window."""
    now = now or timezone.now()
    result = ReconcileResult()
    ids = list(
        BudgetWindow.objects.filter(
            budget__is_active=True, starts_at__lte=now, ends_at__gt=now - CLOSED_GRACE
        ).values_list("pk", flat=True)
    )
    for window_id in ids:
        correction = window_reconcile(window_id=window_id, now=now)
        result.windows += 1
        if correction:
            result.corrected += 1
            result.corrections.append(correction)
            logger.warning(
                "budget window %s (%s) drifted: spent %+d, reserved %+d; corrected",
                window_id,
                correction["budget"],
                correction["spent_drift"],
                correction["reserved_drift"],
            )
    return result.as_dict()


def window_reconcile(*, window_id: int, now: datetime | None = None) -> dict | None:
    """Recompute one window under its row lock; returns the correction, or None if it was in step."""
    now = now or timezone.now()
    with transaction.atomic():
        window = BudgetWindow.objects.select_for_update().select_related("budget").filter(pk=window_id).first()
        if window is None:
            return None
        spent = window_spent(window.budget, window.starts_at, window.ends_at, now=now)
        reserved = ReservationHold.objects.filter(
            window_id=window.pk, reservation__status=Reservation.Status.HELD
        ).aggregate(total=Coalesce(Sum("amount"), 0))["total"]
        if spent == window.spent and reserved == window.reserved:
            BudgetWindow.objects.filter(pk=window.pk).update(reconciled_at=now)
            return None
        correction = {
            "window": window.pk,
            "budget": window.budget.name,
            "spent_before": window.spent,
            "spent_after": spent,
            "spent_drift": window.spent - spent,
            "reserved_before": window.reserved,
            "reserved_after": reserved,
            "reserved_drift": window.reserved - reserved,
        }
        BudgetWindow.objects.filter(pk=window.pk).update(spent=spent, reserved=reserved, reconciled_at=now)
    return correction


def _scope_q(budget: Budget) -> Q:
    q = Q()
    if budget.tenant_id:
        q &= Q(tenant_id=budget.tenant_id)
    if budget.workflow_id:
        q &= Q(workflow_id=budget.workflow_id)
    if budget.environment:
        q &= Q(environment=budget.environment)
    if budget.tier_id:
        q &= Q(model__tier_id=budget.tier_id)
    return q


def _measure(budget: Budget):
    if budget.metric == Metric.TOKENS:
        total = F(TOKEN_FIELDS[0])
        for name in TOKEN_FIELDS[1:]:
            total = total + F(name)
        return Coalesce(Sum(total), 0)
    return Coalesce(Sum("cost_nanos"), 0)  # unpriced records have no cost yet: they count 0


def _dirty(tenant_id: int | None, first: date, last: date) -> set[tuple[int, date]]:
    rows = RollupDirtyDay.objects.filter(day__gte=first, day__lte=last)
    if tenant_id:
        rows = rows.filter(tenant_id=tenant_id)
    return set(rows.values_list("tenant_id", "day"))


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def window_spent(budget: Budget, start: datetime, end: datetime, *, now: datetime) -> int:
    """What the records in [start, end) matching the budget's scope add up to, in its unit."""
    scope, measure = _scope_q(budget), _measure(budget)
    first_day, last_day = start.astimezone(UTC).date(), (end - timedelta(microseconds=1)).astimezone(UTC).date()
    full_days = [
        first_day + timedelta(days=i)
        for i in range((last_day - first_day).days + 1)
        if _day_start(first_day + timedelta(days=i)) >= start
        and _day_start(first_day + timedelta(days=i)) + timedelta(days=1) <= end
    ]
    # The edges: the parts of the window outside its full UTC days (none for a UTC budget).
    edges: list[tuple[datetime, datetime]] = []
    if full_days:
        if start < _day_start(full_days[0]):
            edges.append((start, _day_start(full_days[0])))
        if _day_start(full_days[-1]) + timedelta(days=1) < end:
            edges.append((_day_start(full_days[-1]) + timedelta(days=1), end))
    else:
        edges.append((start, end))

    dirty = _dirty(budget.tenant_id, first_day, last_day)
    total = 0
    # Daily rollups, per (tenant, day) so a dirty tenant-day can be left to the raw records.
    daily: dict[tuple[int, date], int] = {}
    if full_days:
        rows = (
            UsageRollup.objects.filter(
                scope,
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
    # Hourly rows exist for days recomputed within the retention, which follows the clock, not `now`;
    # a day of margin keeps clear of the pruning of the oldest ones.
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
                scope, grain=UsageRollup.Grain.HOUR, bucket_start__gte=h_lo, bucket_start__lt=h_hi
            )
            .order_by()
            .values("tenant_id", "bucket_start")
            .annotate(amount=measure)
            .values_list("tenant_id", "bucket_start", "amount")
        )
        for t, b, a in rows:
            hourly[(t, b)] = hourly.get((t, b), 0) + a
    # Marks read again after the rollups: a day dirtied or recomputed meanwhile counts as dirty.
    dirty |= _dirty(budget.tenant_id, first_day, last_day)
    dirty_days = {d for _, d in dirty}

    total += sum(a for (t, d), a in daily.items() if (t, d) not in dirty)
    total += sum(a for (t, b), a in hourly.items() if (t, b.astimezone(UTC).date()) not in dirty)

    # Raw records: the uncovered edge ranges for every tenant, plus each dirty day (clipped to the
    # rollup-covered part of the window) for the tenants dirty on it.
    raw = UsageRecord.objects.filter(scope)
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


def _floor_hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ceil_hour(at: datetime) -> datetime:
    floor = _floor_hour(at)
    return floor if floor == at else floor + timedelta(hours=1)
