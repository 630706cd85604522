"""The Celery broker unreachable: ingest and preflight queue nothing, so they keep answering at full speed;
alert notifications are rows in the database, delivered by the sweeper once the broker is back; re-pricing
after a price change is a PendingJob row (finops/services/outbox.py), sent again by its sweeper."""

from __future__ import annotations

import os
import socket
import time
from decimal import Decimal

import pytest

# Imported while the app is registered: app.close() in the fixture also deregisters it from shared_task,
# so a task module imported for the first time afterwards would be unknown to it.
import budgets.tasks  # noqa: F401
import finops.tasks  # noqa: F401
from finops.celery import app
from finops.services import outbox


def _drop_connections() -> None:
    """Forget every broker connection the app holds, so the next send connects to `broker_url` as it is now.

    `app.close()` alone drops the connection pool but not the producer pool (`app.amqp._producer_pool`),
    which keeps the connections of the first send of the process, made with the broker URL of that moment.
    In a full run an earlier test had already sent a task to the real Redis (the real-worker rollup test,
    any send with the broker up), so with only `app.close()` every later send still went to the real Redis
    whatever `broker_url` said: that is why the outbox's send "queued to the real Redis" in CI's full run
    while the same tests held alone."""
    app.close()
    app.amqp._producer_pool = None


def _real_broker_depth(url: str | None) -> int | None:
    """Messages waiting on the real broker's default queue (when it is Redis), read with a fresh connection."""
    if not url or not url.startswith("redis://"):
        return None
    import redis

    return redis.Redis.from_url(url, socket_timeout=2).llen(app.conf.task_default_queue)


@pytest.fixture
def broker_down(monkeypatch):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    # Celery reads CELERY_BROKER_URL from the environment before its own setting (CI sets it).
    real_url = os.environ.get("CELERY_BROKER_URL")
    real_depth = _real_broker_depth(real_url)
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{port}/0")
    saved = {k: app.conf[k] for k in ("broker_url", "task_always_eager", "broker_connection_timeout")}
    app.conf.update(broker_url=f"redis://127.0.0.1:{port}/0", task_always_eager=False, broker_connection_timeout=1)
    _drop_connections()
    try:
        yield {"real_url": real_url, "real_depth": real_depth}
    finally:
        app.conf.update(saved)
        _drop_connections()  # the next test's sends connect to the real broker again
        outbox._broker_down_until = 0.0  # the next test starts with a broker not known to be down


def assert_sends_fail_and_reach_nothing(state: dict) -> None:
    """A send made the way the app makes them (a shared_task's apply_async, resolved through Celery's current
    app) fails as kombu fails with the broker down, and nothing reached the real broker."""
    from kombu.exceptions import OperationalError

    from finops.tasks import run_pending_job

    started = time.perf_counter()
    with pytest.raises(OperationalError):
        run_pending_job.apply_async((0,), retry=False)
    assert time.perf_counter() - started < 3.0
    assert _real_broker_depth(state["real_url"]) == state["real_depth"], "a message reached the real broker"


def test_ingest_and_preflight_keep_answering_with_the_broker_down(broker_down, api_a, catalog):
    started = time.perf_counter()
    for i in range(5):
        ingest = api_a.client.post(
            "/api/v1/usage", {"request_id": f"r{i}", "model": "gpt-4o", "input_tokens": 10}, format="json"
        )
        assert ingest.status_code == 200, ingest.content
        preflight = api_a.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 10}, format="json")
        assert preflight.status_code == 200 and preflight.json()["decision"] == "allow"
    assert time.perf_counter() - started < 3.0
    assert_sends_fail_and_reach_nothing(broker_down)  # the broker really was down meanwhile


def test_the_broker_really_is_down_in_this_test(broker_down):
    """Guards the fixture: a fresh connection and the producer pool an earlier send left both fail."""
    from kombu.exceptions import OperationalError

    with pytest.raises(OperationalError), app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=1)
    assert_sends_fail_and_reach_nothing(broker_down)


def test_a_producer_pool_made_before_the_fixture_is_not_used_under_it(request):
    """The bug the full suite hit: the producer pool an earlier send left (bound to the broker URL of then)
    was still used after `app.close()`. The fixture drops it, and drops the broken one when it ends."""
    earlier = app.amqp.producer_pool  # what any send before the fixture leaves behind
    request.getfixturevalue("broker_down")
    assert app.amqp.producer_pool is not earlier
    connection = app.amqp.producer_pool.connections.connection
    assert (connection.hostname, connection.port) == ("127.0.0.1", int(app.conf.broker_url.rsplit(":", 1)[1][:-2]))


# --- the transactional outbox: a price correction with the broker down ------------------------------------


def _correct_o3_price(operator, input_price: str):
    from django.test import Client

    from finops.models import ModelPrice

    price = ModelPrice.objects.get(model__name="o3")
    client = Client()
    client.force_login(operator)
    data = {
        "effective_from": "2024-01-01T00:00:00",
        "input": input_price,
        "cached_input": "0.5",
        "cache_write": "0",
        "output": "8",
        "reasoning": "",
        "source": "https://openai.com/api/pricing/",
        "price_taken_on": "2024-01-01",
    }
    return client.post(f"/models/o3/prices/{price.pk}/edit/", data)


def _o3_record(api_a):
    from finops.models import UsageRecord

    response = api_a.client.post(
        "/api/v1/usage",
        {"request_id": "o3-1", "model": "o3", "input_tokens": 1_000_000},
        format="json",
    )
    assert response.status_code == 200, response.content
    return UsageRecord.objects.get(pk=response.json()["items"][0]["id"])


def test_a_price_correction_with_the_broker_down_succeeds_and_the_sweeper_reprices_later(
    broker_down, operator, api_a, catalog, django_capture_on_commit_callbacks, monkeypatch
):
    from datetime import timedelta

    from celery.app.task import Task
    from django.utils import timezone

    from finops.models import ModelPrice, PendingJob
    from finops.services.outbox import RETRY_AFTER, pending_jobs_sweep

    record = _o3_record(api_a)
    assert record.cost_nanos == 2_000_000_000
    # Read the log lines off the logger itself: other tests may have reconfigured logging's propagation.
    warnings: list[str] = []
    monkeypatch.setattr(outbox.logger, "warning", lambda msg, *args: warnings.append(msg % args))
    # With the broker down every send fails for real (the fixture drops the producer pool too); once the
    # broker is back, a send runs the task here, as an eager app would.
    sends_fail = {"now": True}
    real_apply_async = Task.apply_async

    def apply_async(task, args=None, kwargs=None, **options):
        if sends_fail["now"]:
            return real_apply_async(task, args, kwargs, **options)
        return task.apply(args=args, kwargs=kwargs)

    monkeypatch.setattr(Task, "apply_async", apply_async)
    started = time.perf_counter()
    with django_capture_on_commit_callbacks(execute=True):
        response = _correct_o3_price(operator, "1.75")
    assert time.perf_counter() - started < 3.0
    assert response.status_code == 302 and response["Location"] == "/models/o3/"
    assert ModelPrice.objects.get(model__name="o3").input == Decimal("1.75")  # the change is saved ...
    record.refresh_from_db()
    assert record.cost_nanos == 2_000_000_000  # ... the re-pricing could not be queued ...
    jobs = PendingJob.objects.order_by("id")
    assert [(j.task, j.done_at, j.attempts) for j in jobs] == [
        ("finops.tasks.reprice_model_usage", None, 0),
        ("finops.tasks.reprice_unpriced_usage", None, 0),
    ]  # ... but it is recorded
    assert jobs[0].kwargs == {"model_id": catalog["o3"].pk, "since": "2024-01-01T00:00:00+00:00"}
    assert len(warnings) == 2 and "pending job" in warnings[0] and "left for the sweeper" in warnings[0]

    later = timezone.now() + RETRY_AFTER + timedelta(seconds=1)
    assert pending_jobs_sweep(now=later) == 0  # broker still down: nothing sent, nothing lost
    assert PendingJob.objects.filter(done_at__isnull=True).count() == 2
    assert_sends_fail_and_reach_nothing(broker_down)

    # The broker is back: the sweeper sends both, they run and are marked done.
    sends_fail["now"] = False
    assert pending_jobs_sweep(now=later) == 2
    record.refresh_from_db()
    assert record.cost_nanos == 1_750_000_000
    assert all(j.done_at is not None and j.attempts == 1 for j in PendingJob.objects.all())
    assert pending_jobs_sweep(now=later + RETRY_AFTER) == 0  # done jobs are not sent again


def test_a_job_sent_on_commit_and_by_the_sweeper_runs_once(
    api_a, catalog, django_capture_on_commit_callbacks, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    from finops.models import ModelPrice, PendingJob
    from finops.services import repricing
    from finops.services.outbox import RETRY_AFTER, pending_job_run, pending_jobs_sweep
    from finops.services.repricing import model_price_save

    _o3_record(api_a)
    runs = []
    real = repricing.usage_reprice_model
    monkeypatch.setattr("finops.tasks.usage_reprice_model", lambda **kw: runs.append(kw) or real(**kw))
    price = ModelPrice.objects.get(model=catalog["o3"])
    price.input = Decimal("1.75")
    with django_capture_on_commit_callbacks(execute=True):
        model_price_save(price=price)  # queued on commit and run (eagerly)
    job = PendingJob.objects.get(task="finops.tasks.reprice_model_usage")
    assert job.done_at is not None and len(runs) == 1

    # Both copies of a delivered job: the sweeper's and a redelivery of the commit's.
    assert pending_jobs_sweep(now=timezone.now() + RETRY_AFTER + timedelta(seconds=1)) == 0
    assert pending_job_run(job_id=job.pk) is False
    assert len(runs) == 1


def test_a_claimed_job_is_left_to_its_worker_until_the_claim_expires(db):
    from datetime import timedelta

    from django.utils import timezone

    from finops.models import PendingJob
    from finops.services.outbox import CLAIM_LEASE, RETRY_AFTER, pending_job_run, pending_jobs_sweep

    now = timezone.now()
    job = PendingJob.objects.create(
        task="finops.tasks.reprice_unpriced_usage", kwargs={}, created_at=now - RETRY_AFTER * 2, claimed_at=now
    )
    assert pending_jobs_sweep(now=now) == 0 and pending_job_run(job_id=job.pk, now=now) is False
    # The worker died: after the lease another worker claims and finishes it.
    assert pending_job_run(job_id=job.pk, now=now + CLAIM_LEASE + timedelta(seconds=1)) is True
    job.refresh_from_db()
    assert job.done_at is not None and job.claimed_at is not None


def test_a_failing_job_records_its_error_releases_its_claim_and_is_retried(db, monkeypatch):
    from django.utils import timezone

    from finops.models import PendingJob
    from finops.services.outbox import pending_job_run

    def broken():
        raise RuntimeError("database went away")

    monkeypatch.setattr("finops.tasks.usage_reprice_unpriced", broken)
    job = PendingJob.objects.create(task="finops.tasks.reprice_unpriced_usage", kwargs={}, created_at=timezone.now())
    with pytest.raises(RuntimeError):
        pending_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert (job.done_at, job.claimed_at, job.attempts) == (None, None, 1)
    assert job.last_error == "RuntimeError: database went away"
    monkeypatch.undo()
    assert pending_job_run(job_id=job.pk) is True
    job.refresh_from_db()
    assert job.done_at is not None and job.attempts == 2 and job.last_error == ""


def test_a_preflight_that_opens_an_approval_answers_with_the_broker_down_and_its_notice_waits(
    broker_down, api_a, catalog, tenant_a, django_capture_on_commit_callbacks
):
    """Notifications are rows of their own, sent after commit: a broker that is down must not turn the
    preflight that opened the approval into an error after its commit; the sweeper delivers later."""
    from budgets.models import Notification, NotificationChannel
    from finops.models import Workflow

    Workflow.objects.create(slug="batch-summary", name="Batch summary", approval_threshold_usd=Decimal("0.10"))
    NotificationChannel.objects.create(tenant=tenant_a, kind="email", target="finops@acme.example")
    body = {"workflow": "batch-summary", "model": "gpt-4o", "input_tokens": 100_000, "max_output_tokens": 1000}
    with django_capture_on_commit_callbacks(execute=True):
        response = api_a.client.post("/api/v1/preflight", body, format="json")
    assert response.status_code == 200 and response.json()["decision"] == "needs_approval"
    notice = Notification.objects.get()
    assert notice.status == Notification.Status.PENDING and notice.attempts == 0
