"""Thin Celery tasks for budgets: ids in, a service call; each is safe to run twice or to overlap.

- expiring reservations and delivering notifications are guarded by the row's current status;
- evaluation starts a control only where none is active for its (window, rung) and raises an alert
  only once per (window, kind, level), enforced by a unique constraint;
- reconciliation recomputes a window and overwrites it, under the window's row lock.
"""

from typing import Any

from celery import shared_task

from budgets.estimates import safety_factors_store
from budgets.models import Notification
from budgets.services.anomalies import anomalies_detect
from budgets.services.approvals import approvals_expire
from budgets.services.ladder import budgets_evaluate
from budgets.services.notifications import notification_deliver, notifications_due
from budgets.services.reconcile import windows_reconcile
from budgets.services.reservations import reservations_expire
from finops.locks import single_run

_RETRY: dict[str, Any] = {
    "acks_late": True,
    "autoretry_for": (ConnectionError,),
    "retry_backoff": True,
    "max_retries": 5,
}


@shared_task(**_RETRY)
def expire_reservations() -> int:
    # Approval requests expire on the same beat: both are holds that lapse when nobody acts.
    approvals_expire()
    return reservations_expire()


@shared_task(**_RETRY)
def evaluate_budgets() -> dict:
    # Two copies at once (two beats) would both see a rung without its control and both start one.
    with single_run("evaluate-budgets") as mine:
        return budgets_evaluate() if mine else {"skipped": "another evaluation is running"}


@shared_task(**_RETRY)
def learn_safety_factors() -> dict:
    # Reads up to 50,000 settled reservations: here, off preflight's path. Two copies at once would do
    # the same work twice and replace each other's rows; the second skips.
    with single_run("learn-safety-factors") as mine:
        return safety_factors_store() if mine else {"skipped": "another run is learning"}


@shared_task(**_RETRY)
def reconcile_windows() -> dict:
    # Each window takes turns anyway (reconcile.py); a second copy (two beats) would redo every sum.
    with single_run("reconcile-budget-windows") as mine:
        return windows_reconcile() if mine else {"skipped": "another reconciliation is running"}


@shared_task(acks_late=True)
def deliver_due_notifications() -> int:
    """Queue one delivery task per due notification; each claims its row before sending, so a
    notification queued twice (here and on commit of its alert) is still attempted once."""
    ids = notifications_due()
    for notification_id in ids:
        deliver_notification.delay(notification_id)
    return len(ids)


# No autoretry: a failed attempt is recorded and rescheduled with backoff by the service itself, and the
# sweeper above picks it up when due. acks_late is safe because the claim is a conditional UPDATE.
@shared_task(acks_late=True)
def deliver_notification(notification_id: int) -> bool:
    notification = Notification.objects.filter(pk=notification_id).first()
    if notification is None:
        return False
    return notification_deliver(notification) is not None


@shared_task(**_RETRY)
def detect_anomalies() -> dict:
    # Each run scores the last closed hour; running it again for the same hour changes nothing.
    result = anomalies_detect()
    return {"tenants": result.tenants, "skipped": result.skipped, "opened": result.opened, "cleared": result.cleared}
