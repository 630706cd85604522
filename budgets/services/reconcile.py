"""Reconciliation: put each budget window's spent and reserved back in step with the records.

Ingest moves windows incrementally, and some changes never reach them: re-pricing (a price added or
corrected after the fact), records of a model whose tier changed, budgets edited mid-period. Every
ten minutes (budgets.tasks.reconcile_windows) each open window, and each window closed in the last
day (late records still land there), is recomputed:

- spent, the exact spend of the budget's scope over the window from finops (`spend_total`: rollups
  where they are exact, raw usage where they are not, such as days whose rollups lag their records
  and the partial UTC days at the edges of a window in another time zone);
- reserved, from the holds of reservations still held.

Nothing waits for the sums (at millions of records they take minutes). They are read in one
REPEATABLE READ snapshot together with the window's own spent, reserved and unreserved counters, so the
drift is measured between two numbers of the same moment: ingest moves a window in the same transaction
that stores its records, preflight and settles move it with their holds, so every change is either in
both numbers or in neither. The drift is then applied as a difference (`spent = spent - drift`), which
keeps whatever committed since the snapshot. Two reconciliations of one window take turns (an advisory
lock, not a row lock), or both would subtract the same drift. Inside a caller's transaction, where no
snapshot of its own can be taken, and on SQLite (one writer at a time), the window row is locked for the
whole recomputation instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import F, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from budgets.models import Budget, BudgetWindow, Reservation, ReservationHold
from budgets.services.unreserved import unreserved_totals
from finops.locks import taking_turns
from finops.selectors.spend_totals import spend_total
from tenants.scope import TenantScope

logger = logging.getLogger(__name__)

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
    """Recompute one window and correct its drift; returns the correction, or None if it was in step."""
    now = now or timezone.now()
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        with transaction.atomic():
            window = BudgetWindow.objects.select_for_update().select_related("budget").filter(pk=window_id).first()
            return None if window is None else _drift_correct(window, _window_measure(window, now), now)
    with taking_turns(f"reconcile-window:{window_id}"):
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            window = BudgetWindow.objects.select_related("budget").filter(pk=window_id).first()
            if window is None:
                return None
            measured = _window_measure(window, now)
        return _drift_correct(window, measured, now)


@dataclass(frozen=True, slots=True)
class _Measured:
    spent: int
    reserved: int
    unreserved: tuple[int, int] | None  # (spent, calls) without a reservation, None when not tracked


def _window_measure(window: BudgetWindow, now: datetime) -> _Measured:
    return _Measured(
        spent=window_spent(window.budget, window.starts_at, window.ends_at, now=now),
        reserved=ReservationHold.objects.filter(
            window_id=window.pk, reservation__status=Reservation.Status.HELD
        ).aggregate(total=Coalesce(Sum("amount"), 0))["total"],
        unreserved=unreserved_totals(budget=window.budget, window=window),
    )


def _drift_correct(window: BudgetWindow, measured: _Measured, now: datetime) -> dict | None:
    """Apply the drift between `window` (its counters as read with `measured`) and `measured` as a
    difference, so changes committed since are kept."""
    changes: dict = {"reconciled_at": now}
    if measured.unreserved is not None and measured.unreserved != (window.unreserved_spent, window.unreserved_calls):
        # Usage that reached the window other than through ingest (a budget created mid-period,
        # re-pricing, seeded data) is counted here; not a drift of money held, so not reported.
        changes["unreserved_spent"] = F("unreserved_spent") + (measured.unreserved[0] - window.unreserved_spent)
        changes["unreserved_calls"] = F("unreserved_calls") + (measured.unreserved[1] - window.unreserved_calls)
    spent_drift = window.spent - measured.spent
    reserved_drift = window.reserved - measured.reserved
    correction = None
    if spent_drift or reserved_drift:
        changes["spent"] = F("spent") - spent_drift
        changes["reserved"] = F("reserved") - reserved_drift
        correction = {
            "window": window.pk,
            "budget": window.budget.name,
            "spent_before": window.spent,
            "spent_after": measured.spent,
            "spent_drift": spent_drift,
            "reserved_before": window.reserved,
            "reserved_after": measured.reserved,
            "reserved_drift": reserved_drift,
        }
    BudgetWindow.objects.filter(pk=window.pk).update(**changes)
    return correction


def window_spent(budget: Budget, start: datetime, end: datetime, *, now: datetime) -> int:
    """What the usage in [start, end) matching the budget's scope adds up to, in its unit, exactly."""
    return spend_total(
        scope=TenantScope.for_tenant(budget.tenant) if budget.tenant is not None else TenantScope.system(),
        start=start,
        end=end,
        metric=budget.metric,
        workflow_id=budget.workflow_id,
        environment=budget.environment,
        tier_id=budget.tier_id,
    )
