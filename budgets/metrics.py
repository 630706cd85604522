"""Budget state for Prometheus, read from the database at scrape time (finops.metrics).

Reservations are expired and notifications delivered by Celery workers, alerts raised by beat jobs:
counting them in the web process would miss that work, so each scrape reads the tables instead.
Registered from `BudgetsConfig.ready()`.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count, Q
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from budgets.models import Alert, Notification, Reservation


def budgets_readings() -> Iterable[Metric]:
    reservations = CounterMetricFamily(
        "tokenspend_reservations",
        "Preflight reservations by status: held now, and settled, released or expired since the start.",
        labels=["status"],
    )
    counts = dict(Reservation.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    for status in Reservation.Status.values:
        if status == Reservation.Status.HELD:
            continue
        reservations.add_metric([status], counts.get(status, 0))
    yield reservations
    held = GaugeMetricFamily("tokenspend_reservations_held", "Reservations holding budget right now.")
    held.add_metric([], counts.get(Reservation.Status.HELD, 0))
    yield held

    alerts = CounterMetricFamily(
        "tokenspend_alerts", "Alerts raised, by kind (anomaly alerts included).", labels=["kind"]
    )
    open_alerts = GaugeMetricFamily(
        "tokenspend_alerts_unacknowledged", "Alerts nobody has acknowledged yet, by kind.", labels=["kind"]
    )
    rows = Alert.objects.values("kind").annotate(
        total=Count("id"), unacked=Count("id", filter=Q(acknowledged_at__isnull=True))
    )
    by_kind = {row["kind"]: row for row in rows}
    for kind in Alert.Kind.values:
        row = by_kind.get(kind, {"total": 0, "unacked": 0})
        alerts.add_metric([kind], row["total"])
        open_alerts.add_metric([kind], row["unacked"])
    yield alerts
    yield open_alerts

    failures = CounterMetricFamily(
        "tokenspend_notification_delivery_failures",
        "Alert deliveries (webhook, email) that failed for good after WEBHOOK_MAX_ATTEMPTS, by channel kind.",
        labels=["channel"],
    )
    failed = dict(
        Notification.objects.filter(status=Notification.Status.FAILED)
        .values_list("channel__kind")
        .annotate(n=Count("id"))
        .values_list("channel__kind", "n")
    )
    for kind in sorted(set(failed) | {"webhook", "email"}):
        failures.add_metric([kind], failed.get(kind, 0))
    yield failures
    retrying = GaugeMetricFamily(
        "tokenspend_notification_deliveries_retrying",
        "Alert deliveries that failed at least once and wait for their next attempt, by channel kind.",
        labels=["channel"],
    )
    waiting = dict(
        Notification.objects.filter(status=Notification.Status.PENDING, attempts__gt=0)
        .values_list("channel__kind")
        .annotate(n=Count("id"))
        .values_list("channel__kind", "n")
    )
    for kind in sorted(set(waiting) | {"webhook", "email"}):
        retrying.add_metric([kind], waiting.get(kind, 0))
    yield retrying
