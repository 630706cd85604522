"""Concurrent ingest batches mark the same tenant-days dirty: they must queue, never deadlock.

bench/load.py found it: two 1,000-record batches of one tenant, spanning the same four days in different
orders, each locked one mark row the other wanted next; PostgreSQL killed one with "deadlock detected"
and the client got a 503 (a retry stored its records, but a 503 a minute under steady ingest is an
error the API should not produce). Marks are now written in key order."""

from __future__ import annotations

import random
import threading
from datetime import date, timedelta

import pytest
from django.db import connections, transaction

from finops.models import RollupDirtyDay
from finops.services.rollups import rollup_mark_dirty

from ..budgets.test_reservation_races import postgres_only  # noqa: F401  (fixture)

THREADS, ROUNDS, DAYS = 4, 25, 8


@pytest.mark.django_db(transaction=True)
def test_batches_marking_the_same_days_in_any_order_never_deadlock(postgres_only, tenant_a, tenant_b):  # noqa: F811
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(DAYS)]
    pairs = [(t.pk, d) for t in (tenant_a, tenant_b) for d in days]
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def batch(seed: int) -> None:
        rng = random.Random(seed)
        try:
            barrier.wait(timeout=30)
            for _ in range(ROUNDS):
                with transaction.atomic():
                    # As ingest does it: a set built from the batch's records, in whatever order they came.
                    rollup_mark_dirty(pairs=set(rng.sample(pairs, len(pairs))))
                    # Something else in the same transaction after the marks (ingest's window updates).
                    threading.Event().wait(rng.random() / 500)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=batch, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert not errors, errors[:3]
    assert RollupDirtyDay.objects.count() == len(pairs)
