"""Reconciliation: put each budget window's spent and reserved back in step with the records.

Ingest moves windows incrementally, and some changes never reach them: re-pricing (a price added or
corrected after the fact), records of a model whose tier changed, budgets edited mid-period. Every
ten minutes (budgets.tasks.reconcile_windows) each open window, and each window closed in the last
day (late records still land there), is recomputed:

- spent, the exact spend of the budget's scope over the window from finops (`spend_total`: rollups
  where they are exact, raw usage where they are not, such as days whose rollups lag their records
  and the partial UTC days at the edges of a window in another time zone);
- reserved, from the holds of reservations still held.

The window row is locked (SELECT … FOR UPDATE) before anything is read, so an ingest or preflight
touching the window waits for the correction and then applies its own change on top of it: nothing
that commits concurrently is lost or counted twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from budgets.models import Budget, BudgetWindow, Reservation, ReservationHold
from budgets.services.unreserved import unreserved_totals
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
        bypassed = unreserved_totals(budget=window.budget, window=window)
        if bypassed is not None and bypassed != (window.unreserved_spent, window.unreserved_calls):
            # Usage that reached the window other than through ingest (a budget created mid-period,
            # re-pricing, seeded data) is counted here; not a drift of money held, so not reported.
            BudgetWindow.objects.filter(pk=window.pk).update(
                unreserved_spent=bypassed[0], unreserved_calls=bypassed[1]
            )
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
