"""Transactional outbox: background work that must not be lost when the Celery broker is down.

`enqueue_durably(task, **kwargs)` writes a `PendingJob` row in the caller's transaction and sends it to
the broker on commit. The change and the intent to follow it up commit together, or neither does. If
the broker cannot be reached, the send failure is logged (the request that made the change still
succeeds) and the beat sweeper sends the row again once it is older than `RETRY_AFTER`. The worker
claims the row with a conditional UPDATE before running the task and marks it done afterwards, so a
row sent twice (on commit and by the sweeper, or by two sweepers) runs once.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from celery import Task
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from finops.models import PendingJob

logger = logging.getLogger(__name__)

# A row not done this long after it was written is sent again by the sweeper.
RETRY_AFTER = timedelta(minutes=2)
# A claim this old belongs to a worker that died mid-run; the row may be claimed again.
CLAIM_LEASE = timedelta(minutes=15)
# A job that failed this many times stays in the table for an operator (last_error says why).
MAX_ATTEMPTS = 10
# Done rows are kept this long for inspection, then deleted by the sweeper.
KEEP_DONE = timedelta(days=7)
SWEEP_BATCH = 500

# What a broker that is down or unreachable raises from apply_async (kombu wraps most socket errors).
_SEND_ERRORS = (BrokerError, ConnectionError, TimeoutError, OSError)
# After a failed send, requests in this process skip the broker for a while: each attempt costs kombu's
# connection retries (about two seconds), and a price import saves hundreds of prices.
BROKER_BACKOFF_SECONDS = 10.0
_broker_down_until = 0.0


def enqueue_durably(task: Task, /, **kwargs) -> PendingJob:
    """Record `task(**kwargs)` in the current transaction and send it to the broker after commit.
    `kwargs` must be JSON-serialisable; the task must be safe to run again (it may run after a crash)."""
    job = PendingJob.objects.create(task=task.name, kwargs=kwargs, created_at=timezone.now())
    transaction.on_commit(lambda: pending_job_send(job_id=job.pk))
    return job


def task_send(task: Task, *args, what: str, force: bool = False) -> bool:
    """Send `task(*args)` whose work is already recorded in a row that a sweeper picks up (`what` names
    it for the log). False, logged and not raised, when the broker is unreachable or failed moments ago
    in this process (unless `force`, as sweepers do: no person waits on them)."""
    global _broker_down_until
    if not force and time.monotonic() < _broker_down_until:
        logger.warning("broker failed moments ago, %s is left for the sweeper", what)
        return False
    try:
        task.apply_async(args, retry=False)
    except _SEND_ERRORS as error:
        _broker_down_until = time.monotonic() + BROKER_BACKOFF_SECONDS
        logger.warning("broker unreachable, %s is left for the sweeper: %s", what, error)
        return False
    _broker_down_until = 0.0
    return True


def pending_job_send(*, job_id: int, force: bool = False) -> bool:
    """Hand a recorded job to the broker; False (logged) when the broker is unreachable."""
    from finops.tasks import run_pending_job

    return task_send(run_pending_job, job_id, what=f"pending job {job_id}", force=force)


def pending_job_run(*, job_id: int, now: datetime | None = None) -> bool:
    """Claim, run and mark done one pending job. False when it is done, gone or claimed by another
    worker. A failure releases the claim, records the error and is raised (the sweeper retries)."""
    now = now or timezone.now()
    claimable = Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_LEASE)
    claimed = PendingJob.objects.filter(claimable, pk=job_id, done_at__isnull=True).update(
        claimed_at=now, attempts=F("attempts") + 1
    )
    if not claimed:
        return False
    from finops.celery import app  # the project's app (current_app may be a default one outside a worker)

    job = PendingJob.objects.get(pk=job_id)
    try:
        app.tasks[job.task](**job.kwargs)  # runs in this worker, not queued again
    except Exception as error:
        PendingJob.objects.filter(pk=job_id, claimed_at=now).update(
            claimed_at=None, last_error=f"{type(error).__name__}: {error}"[:2000]
        )
        raise
    PendingJob.objects.filter(pk=job_id).update(done_at=timezone.now(), last_error="")
    return True


def pending_jobs_sweep(*, now: datetime | None = None) -> int:
    """Send again the jobs not done `RETRY_AFTER` after they were recorded; returns how many."""
    now = now or timezone.now()
    PendingJob.objects.filter(done_at__lt=now - KEEP_DONE).delete()
    due = list(
        PendingJob.objects.filter(done_at__isnull=True, created_at__lt=now - RETRY_AFTER, attempts__lt=MAX_ATTEMPTS)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_LEASE))
        .order_by("created_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    sent = 0
    for job_id in due:
        if not pending_job_send(job_id=job_id, force=True):
            break  # the broker is still down: the next sweep tries again
        sent += 1
    given_up = PendingJob.objects.filter(done_at__isnull=True, attempts__gte=MAX_ATTEMPTS).count()
    if given_up:
        logger.error(
            "%s pending jobs failed %s times and are no longer retried (see last_error)", given_up, MAX_ATTEMPTS
        )
    return sent
