"""Budget alerts: raised by the evaluation job at fixed levels, once per window, kind and level.

Levels (percent):
- soft_limit: 85, 95 and 100 of the soft limit, always, plus the percent of every `alert` rung at
  "soft" in the budget's policy. The three standard levels are kept even when a custom policy leaves
  them out: a policy shapes the controls, while people and webhooks subscribe to alerts and rely on
  the same levels on every budget. A custom `alert` rung can only add levels.
- hard_limit: 100 of the hard limit (plus any `alert` rung at "hard").
- forecast: 100 of the hard limit by the period-end forecast (plus any `alert` rung at "forecast").

When a level jumps past several thresholds between two evaluations, only the highest is raised, and a
level at or below one already raised in the window is never raised afterwards: one message saying
"100%" instead of three arriving together, and no "85%" after a "100%" once spend drops again.

Creating an alert creates one Notification per active channel that matches (a channel without a
tenant receives every alert; a tenant's channel only that tenant's) and queues their delivery when
the transaction commits. Delivery happens in tasks only, so a dead webhook endpoint never slows
ingest or preflight.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from budgets.forecasting import PATTERN_MIN_DAYS
from budgets.models import Alert, Notification, NotificationChannel
from budgets.policy import policy_effective
from tenants.scope import Actor
from tenants.services import audit_record

if TYPE_CHECKING:
    from .ladder import BudgetLevels

STANDARD_LEVELS = {
    Alert.Kind.SOFT_LIMIT: (85, 95, 100),
    Alert.Kind.HARD_LIMIT: (100,),
    Alert.Kind.FORECAST: (100,),
}
_BASIS: dict[str, str] = {Alert.Kind.SOFT_LIMIT: "soft", Alert.Kind.HARD_LIMIT: "hard", Alert.Kind.FORECAST: "forecast"}


def alert_levels(policy: list[dict] | None) -> dict[str, list[int]]:
    """The levels each budget alert kind is raised at under a policy: the standard ones plus alert rungs."""
    levels: dict[str, set[int]] = {kind: set(values) for kind, values in STANDARD_LEVELS.items()}
    by_basis = {basis: kind for kind, basis in _BASIS.items()}
    for rung in policy_effective(policy):
        if rung["kind"] == "alert":
            levels[by_basis[rung["at"]]].add(int(rung["percent"]))
    return {kind: sorted(values) for kind, values in levels.items()}


def alerts_raise(levels: BudgetLevels) -> list[Alert]:
    """Raise the alerts a window's levels call for and have not had yet; returns the new ones."""
    budget, window = levels.budget, levels.window
    raised = Alert.objects.filter(window=window).order_by().values("kind").annotate(top=Max("level"))
    raised_before = {row["kind"]: row["top"] for row in raised}
    created = []
    for kind, thresholds in alert_levels(budget.policy).items():
        current = levels.level(_BASIS[kind])
        if current is None:
            continue
        crossed = [t for t in thresholds if current >= t]
        if not crossed or crossed[-1] <= raised_before.get(kind, 0):
            continue
        alert = alert_create(levels, kind=kind, level=crossed[-1], current=current)
        if alert is not None:
            created.append(alert)
    return created


def alert_create(levels: BudgetLevels, *, kind: str, level: int, current: Decimal) -> Alert | None:
    """Create one alert and its notifications; None when another run raised the same one first."""
    budget, window = levels.budget, levels.window
    basis = _BASIS[kind]
    label = {"soft": "soft limit", "hard": "hard limit", "forecast": "forecast over hard limit"}[basis]
    subject = f"[Tokenspend] {budget.name}: {level}% of {label}"
    message = (
        f"{levels.describe(basis)}.\n"
        f"Window: {window.starts_at:%Y-%m-%d %H:%M} to {window.ends_at:%Y-%m-%d %H:%M} UTC "
        f"({budget.period}, {budget.time_zone}).\n"
        f"Spent {levels.fmt(levels.spent)}; soft limit {levels.fmt(window.soft_limit)}; "
        f"hard limit {levels.fmt(window.hard_limit)}; forecast {levels.fmt(levels.forecast)} by the period end.\n"
        f"Scope: {budget.scope_label()}."
    )
    if kind == Alert.Kind.FORECAST:
        message += f"\n{forecast_method_sentence(levels)}"
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                kind=kind,
                level=level,
                tenant=budget.tenant,
                budget=budget,
                window=window,
                subject=subject[:300],
                message=message,
                created_at=levels.at,
            )
            notifications_create(alert)
    except IntegrityError:
        # alert_once_per_window_level: a concurrent evaluation raised it; that one notifies.
        return None
    return alert


def forecast_method_sentence(levels: BudgetLevels) -> str:
    """Which forecast the forecast level (and so this alert and the forecast rung) used, and the other."""
    weekday, fmt = levels.weekday, levels.fmt
    if levels.forecast_method == "weekday" and weekday is not None:
        return (
            f"Forecast method: the weekday pattern ({weekday.history_days} days with spend in the last four weeks): "
            f"{fmt(levels.forecast)} by the period end, p10 {fmt(weekday.p10)}, p90 {fmt(weekday.p90)}; "
            f"the linear run-rate would say {fmt(levels.run_rate)}."
        )
    days = weekday.history_days if weekday is not None else 0
    return (
        f"Forecast method: the linear run-rate, {fmt(levels.forecast)} by the period end (too little history "
        f"for the weekday pattern: {days} days with spend in the last four weeks, {PATTERN_MIN_DAYS} needed)."
    )


def notifications_create(alert: Alert) -> list[Notification]:
    """One pending notification per matching active channel, delivered by a task after commit."""
    # An alert of an all-tenant budget covers every tenant's spend: only all-tenant channels get it.
    audience = Q(tenant__isnull=True) | Q(tenant_id=alert.tenant_id) if alert.tenant_id else Q(tenant__isnull=True)
    channels = NotificationChannel.objects.filter(audience, is_active=True).order_by("id")
    notifications = Notification.objects.bulk_create(
        [Notification(alert=alert, channel=c, next_attempt_at=alert.created_at) for c in channels]
    )
    if notifications:
        from budgets.tasks import deliver_notification
        from finops.services.outbox import task_send

        # A broker that is down must not fail what raised the alert (a preflight that opened an
        # approval, say): the rows are there, and the deliver-notifications sweeper sends them later.
        ids = [n.pk for n in notifications]
        transaction.on_commit(lambda: [task_send(deliver_notification, pk, what=f"notification {pk}") for pk in ids])
    return notifications


def alert_acknowledge(*, alert: Alert, actor: Actor = Actor.system(), now: datetime | None = None) -> Alert:
    """Mark an alert seen (by whom, when), audited. Acknowledging it again changes nothing."""
    now = now or timezone.now()
    with transaction.atomic():
        updated = Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
            acknowledged_at=now, acknowledged_by=actor.actor_user
        )
        alert.refresh_from_db()
        if updated:
            audit_record(
                action="alert.acknowledge",
                tenant=alert.tenant,
                actor=actor,
                target=alert,
                after={"kind": alert.kind, "level": alert.level, "acknowledged_at": now.isoformat()},
            )
    return alert
