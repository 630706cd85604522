"""Notification delivery: signed webhooks to a real local HTTP receiver, retries with backoff, attempts
recorded, email through Django's locmem backend, and the receivers' signature check."""

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from budgets.models import Alert, Notification, NotificationChannel
from budgets.periods import period_bounds
from budgets.services.ladder import budget_levels
from budgets.services.notifications import (
    backoff_after,
    notification_deliver,
    webhook_sign,
    webhook_signature_verify,
)
from budgets.services.windows import windows_open
from budgets.tasks import deliver_due_notifications
from finops.pricing import NANOS_PER_USD

from .factories import BudgetFactory

USD = NANOS_PER_USD
T0 = datetime(2026, 11, 20, 12, tzinfo=UTC)
SECRET = "whsec-test-0123456789"


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that answers 500 to the first `failures` requests, then 204."""

    def __init__(self, failures: int):
        self.failures = failures
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                self.send_response(500 if len(receiver.requests) <= receiver.failures else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/tokenspend"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _receivers_on_loopback_allowed(settings):
    """The receivers here listen on 127.0.0.1, which webhooks may reach only when the operator allows it."""
    settings.WEBHOOK_ALLOWED_INTERNAL_HOSTS = ["127.0.0.1"]


def _alert(tenant, metric="cost"):
    if metric == "cost":
        budget = BudgetFactory(tenant=tenant, name="Acme monthly", soft_limit=500 * USD, hard_limit=800 * USD)
        spent = int(515.20 * USD)
    else:
        budget = BudgetFactory(tenant=tenant, name="Acme tokens", metric="tokens", soft_limit=1_000_000)
        spent = 1_200_000
    start, end = period_bounds(budget.period, budget.time_zone, T0)
    window = windows_open([(budget, start, end)])[(budget.pk, start)]
    window.spent = spent
    window.save()
    from budgets.services.alerts import alert_create

    levels = budget_levels(budget, window, now=T0)
    return alert_create(levels, kind="soft_limit", level=100, current=levels.soft)


def _notification(alert, channel):
    return Notification.objects.create(alert=alert, channel=channel, next_attempt_at=alert.created_at)


def test_webhook_fails_twice_then_succeeds_with_backoff(tenant_a):
    alert = _alert(tenant_a)
    with Receiver(failures=2) as receiver:
        channel = NotificationChannel.objects.create(
            tenant=tenant_a, kind="webhook", target=receiver.url, secret=SECRET
        )
        notification = _notification(alert, channel)

        first = notification_deliver(notification, now=T0)
        notification.refresh_from_db()
        assert (first.ok, first.status_code, first.error) == (False, 500, "HTTP 500")
        assert notification.status == "pending" and notification.attempts == 1
        assert notification.next_attempt_at == T0 + timedelta(seconds=30)
        # Not due yet: nothing is sent.
        assert notification_deliver(notification, now=T0 + timedelta(seconds=29)) is None

        second_at = T0 + timedelta(seconds=30)
        second = notification_deliver(notification, now=second_at)
        notification.refresh_from_db()
        assert second.ok is False and notification.attempts == 2
        assert notification.next_attempt_at == second_at + timedelta(minutes=2)

        third_at = second_at + timedelta(minutes=2)
        third = notification_deliver(notification, now=third_at)
        notification.refresh_from_db()
        assert (third.ok, third.status_code, third.error) == (True, 204, "")
        assert notification.status == "sent" and notification.delivered_at == third_at
        assert notification.attempts == 3 and notification.last_error == ""
        # Sent: a late duplicate task changes nothing.
        assert notification_deliver(notification, now=third_at + timedelta(hours=1)) is None

    assert len(receiver.requests) == 3
    attempts = list(notification.attempt_log.order_by("at").values_list("ok", "status_code"))
    assert attempts == [(False, 500), (False, 500), (True, 204)]
    assert all(a.duration_ms >= 0 for a in notification.attempt_log.all())

    request = receiver.requests[-1]
    body, headers = request["body"], request["headers"]
    timestamp, signature = headers["X-Tokenspend-Timestamp"], headers["X-Tokenspend-Signature"]
    assert headers["Content-Type"] == "application/json"
    assert webhook_signature_verify(SECRET, timestamp, body, signature)
    assert not webhook_signature_verify("wrong-secret", timestamp, body, signature)
    assert not webhook_signature_verify(SECRET, timestamp, body.replace(b"515.2", b"015.2"), signature)
    assert not webhook_signature_verify(SECRET, str(int(timestamp) - 3600), body, signature)

    payload = json.loads(body)
    assert payload["alert"] == {"id": alert.pk, "kind": "soft_limit", "level": 100}
    assert payload["budget"] == {"id": alert.budget_id, "name": "Acme monthly", "metric": "cost"}
    assert payload["window"]["spent"] == "515.200000000"
    assert payload["window"]["soft_limit"] == "500.000000000"
    assert payload["window"]["hard_limit"] == "800.000000000"
    assert payload["window"]["start"] == "2026-11-01T00:00:00+00:00"
    assert payload["tenant"] == "acme"
    assert payload["subject"] == alert.subject and payload["message"] == alert.message
    assert payload["created_at"] == "2026-11-20T12:00:00+00:00"


def test_token_budget_payload_has_integer_amounts(tenant_a):
    alert = _alert(tenant_a, metric="tokens")
    with Receiver(failures=0) as receiver:
        channel = NotificationChannel.objects.create(
            tenant=tenant_a, kind="webhook", target=receiver.url, secret=SECRET
        )
        assert notification_deliver(_notification(alert, channel), now=T0).ok

    window = json.loads(receiver.requests[0]["body"])["window"]
    assert (window["spent"], window["soft_limit"], window["hard_limit"]) == (1_200_000, 1_000_000, None)


def test_gives_up_after_the_maximum_attempts(tenant_a, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    alert = _alert(tenant_a)
    with Receiver(failures=100) as receiver:
        channel = NotificationChannel.objects.create(
            tenant=tenant_a, kind="webhook", target=receiver.url, secret=SECRET
        )
        notification = _notification(alert, channel)
        at = T0
        for _ in range(5):
            notification_deliver(notification, now=at)
            at += timedelta(days=1)

    notification.refresh_from_db()
    assert notification.status == "failed" and notification.attempts == 3
    assert notification.last_error == "HTTP 500"
    assert len(receiver.requests) == 3


def test_unreachable_endpoint_is_recorded_as_an_error(tenant_a, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 1
    alert = _alert(tenant_a)
    with Receiver(failures=0) as receiver:
        url = receiver.url  # the port is closed once the receiver stops
    channel = NotificationChannel.objects.create(tenant=tenant_a, kind="webhook", target=url, secret=SECRET)
    notification = _notification(alert, channel)

    attempt = notification_deliver(notification, now=T0)

    assert attempt.ok is False and attempt.status_code is None
    assert "refused" in attempt.error.lower() or "URLError" in attempt.error
    notification.refresh_from_db()
    assert notification.status == "pending" and notification.next_attempt_at == T0 + timedelta(seconds=30)


def test_email_goes_through_djangos_mail_backend(tenant_a, mailoutbox, settings):
    settings.DEFAULT_FROM_EMAIL = "tokenspend@example.com"
    alert = _alert(tenant_a)
    channel = NotificationChannel.objects.create(tenant=tenant_a, kind="email", target="finops@acme.example")
    notification = _notification(alert, channel)

    attempt = notification_deliver(notification, now=T0)

    assert attempt.ok
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["finops@acme.example"] and mail.from_email == "tokenspend@example.com"
    assert mail.subject == "[Tokenspend] Acme monthly: 100% of soft limit"
    assert "at 103% of its $500.00 soft limit ($515.20 spent)" in mail.body


def test_due_notifications_task_delivers_what_is_due(tenant_a, mailoutbox):
    alert = _alert(tenant_a)
    channel = NotificationChannel.objects.create(tenant=tenant_a, kind="email", target="finops@acme.example")
    due = _notification(alert, channel)
    later = Notification.objects.create(
        alert=alert,
        channel=NotificationChannel.objects.create(tenant=None, kind="email", target="ops@example.com"),
        next_attempt_at=datetime(2999, 1, 1, tzinfo=UTC),
    )

    assert deliver_due_notifications.delay().get() == 1

    due.refresh_from_db()
    later.refresh_from_db()
    assert due.status == "sent" and later.status == "pending"
    assert [m.to for m in mailoutbox] == [["finops@acme.example"]]


def test_backoff_schedule():
    assert [backoff_after(n).total_seconds() for n in range(1, 8)] == [30, 120, 600, 1800, 7200, 7200, 7200]


@pytest.mark.parametrize("header", ["", "sha256=", "sha1=abc", "nonsense"])
def test_signature_verification_refuses_malformed_headers(header):
    assert not webhook_signature_verify(SECRET, "1764460800", b"{}", header, tolerance_seconds=None)


def test_signature_is_hmac_sha256_over_timestamp_and_body():
    import hashlib
    import hmac

    expected = hmac.new(b"s", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert webhook_sign("s", "1700000000", '{"a":1}') == f"sha256={expected}"
    assert webhook_signature_verify("s", "1700000000", b'{"a":1}', f"sha256={expected}", now=1700000100)


def test_alert_without_channels_creates_no_notifications(tenant_a):
    _alert(tenant_a)
    assert Alert.objects.count() == 1 and Notification.objects.count() == 0
