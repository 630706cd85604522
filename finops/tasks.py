"""Thin Celery tasks: ids in, a service call, idempotent (re-pricing recomputes, never adds)."""

from datetime import datetime

from celery import shared_task

from finops.locks import single_run
from finops.services.envelopes import envelope_proposals_refresh
from finops.services.outbox import pending_job_run, pending_jobs_sweep
from finops.services.partitions import usage_partitions_maintain
from finops.services.repricing import usage_reprice_model, usage_reprice_unpriced
from finops.services.rollups import rollups_refresh


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def reprice_unpriced_usage() -> int:
    return usage_reprice_unpriced()


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def reprice_model_usage(model_id: int, since: str | None = None) -> int:
    return usage_reprice_model(model_id=model_id, since=datetime.fromisoformat(since) if since else None)


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def refresh_rollups() -> int:
    """Recompute the tenant-days that ingest and re-pricing marked; safe to overlap or repeat."""
    return rollups_refresh().days


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def propose_envelopes() -> int:
    # Safe twice: a pending proposal with the same values is kept, not duplicated.
    return envelope_proposals_refresh()


# No autoretry: a failure is recorded on the row and the sweeper sends it again; the claim is a
# conditional UPDATE, so a job sent twice (on commit and by the sweeper) runs once.
@shared_task(acks_late=True)
def run_pending_job(job_id: int) -> bool:
    return pending_job_run(job_id=job_id)


@shared_task(acks_late=True)
def sweep_pending_jobs() -> int:
    """Send again the outbox jobs that the broker did not take when they were recorded."""
    return pending_jobs_sweep()


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def maintain_usage_partitions() -> dict:
    """Create the usage table's monthly partitions ahead, empty its default partition into them, and drop
    raw months past retention whose rollups are complete (PostgreSQL; nothing on SQLite)."""
    with single_run("maintain-usage-partitions") as held:
        if not held:
            return {"skipped": True}
        result = usage_partitions_maintain()
    return {"created": result.created, "moved": result.moved_from_default, "dropped": result.dropped}
