"""A Celery worker killed in the middle of a rollup refresh (issue 13, "Faults"): after the task is delivered
again, the rollups equal the raw sums, and no dirty mark was lost on the way.

Real processes against the real services: a `celery worker` on a Redis broker and the PostgreSQL test
database. The kill is not timed by luck: the test holds the advisory lock the refresh takes after it has
rewritten the day's last tenant-day (the all-tenant tables' lock per day, `rollup_recompute_all_tenants_day`),
waits until the worker's database session is seen waiting for it in `pg_locks`, and only then kills it.
At that point earlier tenant-days are committed and the last one is written but not committed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.db import connection, connections

from finops.models import RollupDirtyDay, TenantDayRollup
from finops.services.ingest import usage_ingest
from finops.services.rollups import _ALL_TENANTS_LOCK, rollups_refresh

from .test_rollups import NOW, assert_rollups_match_raw

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def services():
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if connection.vendor != "postgresql" or not broker.startswith("redis://"):
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail("REQUIRE_SERVICES=1 needs DATABASE_URL on PostgreSQL and CELERY_BROKER_URL on Redis")
        pytest.skip("kills a real Celery worker: needs PostgreSQL and a Redis broker (CI sets them)")
    db = connection.settings_dict
    return {
        "database_url": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "conninfo": dict(
            host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"] or None, dbname=db["NAME"]
        ),
    }


class Worker:
    """`celery worker` (prefork, one pool process, as deployed) in its own process group, its output kept."""

    def __init__(self, database_url: str, queue: str, **env: str):
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "finops",
                "worker",
                "--concurrency=1",
                "--loglevel=INFO",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-Q",
                queue,
            ],  # fmt: skip
            env={**os.environ, "CELERY_TASK_ALWAYS_EAGER": "false", "DATABASE_URL": database_url, **env},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def pool_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._reader.join(timeout=5)


def wait_until(what: str, predicate, timeout: float, worker: Worker | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(
        f"{what}: not within {timeout:.0f} s" + (f"; worker output:\n{worker.output}" if worker else "")
    )


def session_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone() is not None


def records(prefix: str, n: int) -> list[dict]:
    # Two UTC days, so the refresh commits a day's work before it reaches the last tenant-day.
    return [
        {
            "request_id": f"{prefix}-{i}",
            "workflow": ["chat", "summary"][i % 2],
            "model": ["gpt-4o", "mystery-model"][i % 3 == 0],
            "occurred_at": (NOW - timedelta(days=i % 2, minutes=i)).isoformat(),
            "input_tokens": 100 + i,
            "output_tokens": 20 + i,
            "tags": {"region": ["eu", "us"][i % 2]},
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("killed", ["the whole worker", "its pool process"])
def test_a_worker_killed_mid_rollup_leaves_the_task_to_be_delivered_again_and_rollups_equal_raw_sums(
    services, catalog, tenant_a, tenant_b, killed
):
    for tenant in (tenant_a, tenant_b):
        usage_ingest(records=records(f"{tenant.slug}-old", 20), bound_tenant=tenant, api_key=None)
    rollups_refresh()  # rollups as they were before the new usage below
    for tenant in (tenant_a, tenant_b):
        usage_ingest(records=records(f"{tenant.slug}-new", 30), bound_tenant=tenant, api_key=None)
    marks = list(RollupDirtyDay.objects.order_by("day", "tenant_id").values_list("tenant_id", "day"))
    assert len(marks) == 4, marks
    last_tenant, last_day = marks[-1]
    stale = TenantDayRollup.objects.get(tenant_id=last_tenant, bucket_start__date=last_day).calls
    connections.close_all()

    queue = f"rollup-faults-{uuid.uuid4().hex[:8]}"
    # The first worker never hands the task out again itself (an hour); the second one, started after the
    # kill, takes back what has been unacknowledged for 3 s, as a restarted worker does after the default hour.
    first = Worker(services["database_url"], queue)
    second: Worker | None = None
    holder = psycopg.connect(**services["conninfo"], autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", [_ALL_TENANTS_LOCK, last_day.toordinal()])
        from finops.celery import app

        task_id = app.send_task("finops.tasks.refresh_rollups", queue=queue).id
        waiting_pid = wait_until(
            "the worker waiting for the day's all-tenant lock",
            lambda: holder.execute(
                # This database only: advisory locks are per database, and in a parallel run another worker's
                # copy of this test waits on the same key in its own test database.
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = %s AND objid = %s"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                [_ALL_TENANTS_LOCK, last_day.toordinal()],
            ).fetchone(),
            timeout=90,
            worker=first,
        )[0]
        # Mid-rollup: three tenant-days committed with their marks cleared, the last one written, not committed.
        assert list(RollupDirtyDay.objects.values_list("tenant_id", "day")) == [(last_tenant, last_day)]

        if killed == "the whole worker":
            first.kill()
        else:
            (pool,) = first.pool_pids()
            os.kill(pool, signal.SIGKILL)
        holder.close()  # the lock goes; the dead worker's session gets it, cannot answer, and rolls back
        wait_until("the dead worker's database session gone", lambda: not session_alive(waiting_pid), timeout=30)
        if killed == "the whole worker":
            # Nothing of the dead transaction is visible, and the mark it was to clear is still there.
            assert TenantDayRollup.objects.get(tenant_id=last_tenant, bucket_start__date=last_day).calls == stale
            assert RollupDirtyDay.objects.filter(tenant_id=last_tenant, day=last_day).exists()
            time.sleep(3)
            second = Worker(services["database_url"], queue, CELERY_VISIBILITY_TIMEOUT="3")
        survivor = second or first
        wait_until(
            "the task delivered again and finished",
            lambda: f"refresh_rollups[{task_id}] succeeded" in survivor.output,
            timeout=90,
            worker=survivor,
        )
    finally:
        holder.close()
        first.stop() if first.process.poll() is None else first._reader.join(timeout=5)
        if second is not None:
            second.stop()
        connections.close_all()

    assert f"refresh_rollups[{task_id}] received" in survivor.output
    if killed == "its pool process":  # the same worker took it back from the queue
        assert first.output.count(f"refresh_rollups[{task_id}] received") == 2, first.output
    assert TenantDayRollup.objects.get(tenant_id=last_tenant, bucket_start__date=last_day).calls == 25
    assert_rollups_match_raw()  # every table, every key and day, no mark left
    if second is not None:
        assert "Traceback" not in second.output, second.output
