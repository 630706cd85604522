"""Faults around reservations, against PostgreSQL for real: a release racing the settle of the same
reservation, an expiry racing a settle, and a settle that arrives after its reservation expired. In every
case the window ends exact: `spent` is the priced sum of its records and `reserved` the sum of the holds
still held (none here), never a hold given back twice or a record counted twice."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.db.models import Sum
from django.utils import timezone
from rest_framework.test import APIClient

from budgets.models import BudgetWindow, Reservation
from budgets.services.reservations import reservations_expire
from finops.models import UsageRecord
from tenants.services import api_key_create

from .factories import BudgetFactory

CALL = {"model": "gpt-4o", "input_tokens": 1000, "max_output_tokens": 500}
PAIRS = 12


@pytest.fixture
def postgres_only():
    if connection.vendor != "postgresql":
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail("REQUIRE_SERVICES=1 needs DATABASE_URL on PostgreSQL")
        pytest.skip("row-lock races are tested on PostgreSQL (set DATABASE_URL)")


def _client(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def _reserve(raw: str, n: int) -> list[str]:
    client = _client(raw)
    ids = []
    for _ in range(n):
        answer = client.post("/api/v1/preflight", CALL, format="json").json()
        assert answer["decision"] == "allow", answer
        ids.append(answer["reservation_id"])
    return ids


def _usage(reservation_id: str, i: int) -> dict:
    return {
        "request_id": f"call-{reservation_id}",
        "model": "gpt-4o",
        "input_tokens": 900 + i,
        "output_tokens": 400,
        "reservation_id": reservation_id,
    }


def _assert_window_exact(budget) -> None:
    window = BudgetWindow.objects.get(budget=budget)
    priced = UsageRecord.objects.filter(tenant=budget.tenant).aggregate(total=Sum("cost_nanos"))["total"] or 0
    assert window.spent == priced, (window.spent, priced)
    held = Reservation.objects.filter(status=Reservation.Status.HELD).count()
    assert held == 0 and window.reserved == 0, (held, window.reserved)


def _race(*jobs) -> list:
    barrier = threading.Barrier(len(jobs))

    def run(job):
        try:
            barrier.wait(timeout=30)
            return job()
        finally:
            connections.close_all()  # this thread's own connection

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(run, jobs))


@pytest.mark.django_db(transaction=True)
def test_a_release_racing_the_settle_of_the_same_reservation_leaves_the_window_exact(postgres_only, catalog, tenant_a):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=10**12)
    _key, raw = api_key_create(tenant=tenant_a, name="race", scopes="preflight,ingest")
    ids = _reserve(raw, PAIRS)
    connections.close_all()

    def release(rid):
        return lambda: _client(raw).post(f"/api/v1/reservations/{rid}/release").status_code

    def settle(rid, i):
        return lambda: _client(raw).post("/api/v1/usage", _usage(rid, i), format="json").status_code

    jobs = [job for i, rid in enumerate(ids) for job in (release(rid), settle(rid, i))]
    codes = _race(*jobs)

    assert all(code < 500 for code in codes), codes
    assert UsageRecord.objects.count() == PAIRS  # every call's usage is stored, whoever won
    statuses = dict(Reservation.objects.values_list("pk", "status"))
    assert set(statuses.values()) <= {Reservation.Status.RELEASED, Reservation.Status.SETTLED}
    _assert_window_exact(budget)


@pytest.mark.django_db(transaction=True)
def test_expiry_racing_settles_and_settles_after_expiry_leave_the_window_exact(postgres_only, catalog, tenant_a):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=10**12)
    _key, raw = api_key_create(tenant=tenant_a, name="race", scopes="preflight,ingest")
    ids = _reserve(raw, PAIRS)
    Reservation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    connections.close_all()
    half = PAIRS // 2

    def settle(rid, i):
        return lambda: _client(raw).post("/api/v1/usage", _usage(rid, i), format="json").status_code

    # The expiry job races the first half's settles ...
    codes = _race(lambda: reservations_expire(), *[settle(rid, i) for i, rid in enumerate(ids[:half])])
    assert all(code == 200 for code in codes[1:]), codes
    # ... and the second half's usage arrives after their reservations expired.
    assert Reservation.objects.filter(pk__in=ids[half:], status=Reservation.Status.EXPIRED).count() == PAIRS - half
    client = _client(raw)
    for i, rid in enumerate(ids[half:], start=half):
        assert client.post("/api/v1/usage", _usage(rid, i), format="json").status_code == 200
    # A replay of everything changes nothing.
    replay = client.post("/api/v1/usage", {"records": [_usage(r, i) for i, r in enumerate(ids)]}, format="json")
    assert replay.json()["duplicate"] == PAIRS

    assert UsageRecord.objects.count() == PAIRS
    _assert_window_exact(budget)
    assert BudgetWindow.objects.get(budget=budget).spent > 0
