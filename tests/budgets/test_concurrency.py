"""Hard limits hold under concurrency: many processes preflight at once against PostgreSQL.

Each worker process has its own database connections and sends its preflights through the API
(the test client in that process), released together by a barrier, so the conditional UPDATEs race
for the same window row for real. The budget has room for exactly N of the calls.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest
from django.db import connection, connections

from budgets.models import BudgetWindow, Reservation
from tenants.services import api_key_create

from .factories import BudgetFactory

PROCESSES, THREADS = 8, 4  # 32 concurrent preflights
ROOM_FOR = 11
CALL_NANOS = 7_500_000  # gpt-4o, 1,000 input + 500 output tokens


def _worker(raw_key: str, barrier, results) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from rest_framework.test import APIClient

    def one(_):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        barrier.wait(timeout=60)
        try:
            response = client.post(
                "/api/v1/preflight",
                {"model": "gpt-4o", "input_tokens": 1000, "max_output_tokens": 500},
                format="json",
            )
            return response.status_code, response.json().get("decision")
        finally:
            connections.close_all()

    with ThreadPoolExecutor(THREADS) as pool:
        for outcome in pool.map(one, range(THREADS)):
            results.put(outcome)


@pytest.mark.django_db(transaction=True)
def test_concurrent_preflights_never_take_a_window_over_its_hard_limit(catalog, tenant_a):
    if connection.vendor != "postgresql":
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail("REQUIRE_SERVICES=1 needs DATABASE_URL on PostgreSQL")
        pytest.skip("row-lock concurrency is tested on PostgreSQL (set DATABASE_URL)")
    budget = BudgetFactory(tenant=tenant_a, hard_limit=ROOM_FOR * CALL_NANOS)
    _key, raw = api_key_create(tenant=tenant_a, name="race", scopes="preflight")
    connections.close_all()  # the forked workers must not share this process's connection

    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(PROCESSES * THREADS)
    results = ctx.Queue()
    over_limit: list[int] = []
    stop = threading.Event()

    def watch():
        # Samples spent + reserved while the race runs: it must never pass the hard limit.
        from django.db import connections as conns

        while not stop.is_set():
            for spent, reserved, hard in BudgetWindow.objects.filter(budget=budget).values_list(
                "spent", "reserved", "hard_limit"
            ):
                if spent + reserved > hard:
                    over_limit.append(spent + reserved)
            time.sleep(0.005)
        conns.close_all()

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [ctx.Process(target=_worker, args=(raw, barrier, results)) for _ in range(PROCESSES)]
    try:
        for p in workers:
            p.start()
        outcomes = [results.get(timeout=120) for _ in range(PROCESSES * THREADS)]
        for p in workers:
            p.join(timeout=30)
    finally:
        stop.set()
        watcher.join()

    assert all(status == 200 for status, _ in outcomes), outcomes
    decisions = [d for _, d in outcomes]
    assert decisions.count("allow") == ROOM_FOR
    assert decisions.count("deny") == PROCESSES * THREADS - ROOM_FOR
    window = BudgetWindow.objects.get(budget=budget)
    assert window.reserved == ROOM_FOR * CALL_NANOS == window.hard_limit
    assert Reservation.objects.filter(status=Reservation.Status.HELD).count() == ROOM_FOR
    assert over_limit == []
