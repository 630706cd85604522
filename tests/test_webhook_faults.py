"""A webhook receiver that hangs (accepts the connection, never answers) or fails (HTTP 500, or refuses the
connection): nothing upstream waits for it. The request that raised the alert (a preflight that opened an
approval) answers at once, having only queued the delivery; the worker's attempt is bounded by
WEBHOOK_TIMEOUT_SECONDS and recorded, and the notification waits for its next attempt; the beat sweeper
only queues deliveries, so it does not wait for the receiver either."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from budgets.models import Notification, NotificationAttempt, NotificationChannel
from finops.celery import app
from finops.models import Workflow
from tests.net import unused_port

TIMEOUT = 3.0  # WEBHOOK_TIMEOUT_SECONDS here: a hanging receiver costs the worker this, and nobody else


class FailingReceiver:
    """Answers every POST with HTTP 500."""

    def __init__(self):
        self.hits = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.hits += 1
                self.send_response(500)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _queued_deliveries() -> list[tuple[str, tuple]]:
    """Take every message off the broker's default queue; returns the deliveries' (task name, args).
    Other tasks are left out: a worker another test stopped may have left a periodic task unacked,
    which the Redis transport puts back on the queue a while later."""
    found = []
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue(app.conf.task_default_queue)
        try:
            while True:
                try:
                    message = queue.get(block=True, timeout=0.5)
                except queue.Empty:
                    return found
                if message.headers.get("task", "").startswith("budgets.tasks.deliver_"):
                    found.append((message.headers.get("task"), tuple(message.payload[0])))
                message.ack()
        finally:
            queue.close()


@pytest.fixture
def real_broker():
    """Tasks go to the broker as in production (the suite runs them eagerly), from a drained queue."""
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    _queued_deliveries()
    try:
        yield
    finally:
        _queued_deliveries()
        app.conf.task_always_eager = eager


@pytest.mark.parametrize("receiver", ["hangs", "fails", "refuses"])
def test_a_hanging_or_failing_receiver_holds_up_nothing_and_attempts_are_recorded(
    receiver, request, real_broker, api_a, catalog, tenant_a, settings, django_capture_on_commit_callbacks
):
    from budgets.tasks import deliver_due_notifications, deliver_notification

    settings.WEBHOOK_ALLOWED_INTERNAL_HOSTS = ["127.0.0.1"]
    settings.WEBHOOK_TIMEOUT_SECONDS = TIMEOUT
    failing = FailingReceiver() if receiver == "fails" else None
    port = {"hangs": lambda: request.getfixturevalue("silent_server"), "refuses": unused_port}.get(
        receiver, lambda: failing.port
    )()
    NotificationChannel.objects.create(
        tenant=tenant_a, kind="webhook", target=f"http://127.0.0.1:{port}/hook", secret="whsec-test-0123456789"
    )
    Workflow.objects.create(slug="batch-summary", name="Batch summary", approval_threshold_usd=Decimal("0.10"))
    body = {"workflow": "batch-summary", "model": "gpt-4o", "input_tokens": 100_000, "max_output_tokens": 1000}
    try:
        warm = api_a.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 10}, format="json")
        assert warm.json()["decision"] == "allow"  # the process's first preflight loads what it needs
        # The request that raises the alert: it answers without waiting for the receiver ...
        started = time.perf_counter()
        with django_capture_on_commit_callbacks(execute=True):
            response = api_a.client.post("/api/v1/preflight", body, format="json")
        elapsed = time.perf_counter() - started
        assert response.status_code == 200 and response.json()["decision"] == "needs_approval"
        assert elapsed < TIMEOUT / 2, elapsed
        notice = Notification.objects.get()
        assert (notice.status, notice.attempts) == (Notification.Status.PENDING, 0)
        assert not NotificationAttempt.objects.exists()
        # ... because it only queued the delivery, for a worker.
        assert _queued_deliveries() == [("budgets.tasks.deliver_notification", (notice.pk,))]

        # The worker's attempt: bounded by the timeout, recorded, rescheduled with backoff.
        started = time.perf_counter()
        deliver_notification(notice.pk)
        spent = time.perf_counter() - started
        assert spent < TIMEOUT + 1.5, spent
        attempt = NotificationAttempt.objects.get(notification=notice)
        notice.refresh_from_db()
        assert attempt.ok is False and notice.attempts == 1 and notice.status == Notification.Status.PENDING
        assert notice.next_attempt_at > attempt.at and notice.last_error == attempt.error
        if receiver == "hangs":
            assert "timed out" in attempt.error.lower() and attempt.duration_ms >= TIMEOUT * 1000 * 0.9
        elif receiver == "fails":
            assert attempt.status_code == 500 and attempt.error == "HTTP 500" and failing.hits == 1
        else:
            assert "refused" in attempt.error.lower()

        # The beat sweeper queues what is due and returns: it does not wait for the receiver either.
        Notification.objects.filter(pk=notice.pk).update(next_attempt_at=attempt.at)
        started = time.perf_counter()
        assert deliver_due_notifications() == 1
        assert time.perf_counter() - started < TIMEOUT / 2
        assert _queued_deliveries() == [("budgets.tasks.deliver_notification", (notice.pk,))]
        assert NotificationAttempt.objects.filter(notification=notice).count() == 1
    finally:
        if failing is not None:
            failing.close()
