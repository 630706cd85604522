"""Reconciliation racing the writers, against PostgreSQL for real.

Reconciliation sums a window's records, which at millions of records takes minutes; it used to hold the
window row (SELECT ... FOR UPDATE) all that time, so every ingest and preflight touching the window
waited behind it and, past the statement timeout, answered 503 (bench/load.py at 5M records). These
tests hold a reconciliation in the middle of its sums and attack the window meanwhile: ingest, preflight
and settles must go through at once, and the window must end exact, its drift corrected once, with
nothing that committed meanwhile lost or counted twice, also when two reconciliations run at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections
from django.db.models import F, Sum
from rest_framework.test import APIClient

from budgets.models import BudgetWindow, Reservation, ReservationHold
from budgets.services import reconcile
from finops.models import UsageRecord
from tenants.services import api_key_create

from .factories import BudgetFactory
from .test_reservation_races import postgres_only  # noqa: F401  (fixture)

CALL = {"model": "gpt-4o", "input_tokens": 1000, "max_output_tokens": 500}
DRIFT = 7_000_000  # nano-USD added to the window by hand: what reconciliation must take away, once
WAIT = 20  # seconds: far beyond what any of these requests takes when nothing holds the window


def _client(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def _usage(i: int, reservation_id: str | None = None) -> dict:
    record = {"request_id": f"race-{i}", "model": "gpt-4o", "input_tokens": 900 + i, "output_tokens": 300}
    if reservation_id:
        record["reservation_id"] = reservation_id
    return record


class _PausedSums:
    """Replaces window_spent: sums for real (inside reconciliation's snapshot), then waits to be let go."""

    def __init__(self, monkeypatch):
        self.summed = threading.Event()
        self.go = threading.Event()
        real = reconcile.window_spent

        def paused(*args, **kwargs):
            total = real(*args, **kwargs)
            if not self.summed.is_set():  # only the first reconciliation pauses
                self.summed.set()
                assert self.go.wait(WAIT * 2), "the test never let the reconciliation go on"
            return total

        monkeypatch.setattr(reconcile, "window_spent", paused)


def _in_thread(pool: ThreadPoolExecutor, job):
    def run():
        try:
            return job()
        finally:
            connections.close_all()  # this thread's own connection

    return pool.submit(run)


@pytest.fixture
def drifted(postgres_only, catalog, tenant_a, monkeypatch):  # noqa: F811
    """A hard-limited window with records, one held reservation and DRIFT too much spent; its tenant's
    raw key; and the reconciliation's sums paused (every database connection closed for the threads)."""
    BudgetFactory(tenant=tenant_a, hard_limit=10**12)
    _key, raw = api_key_create(tenant=tenant_a, name="race", scopes="preflight,ingest")
    client = _client(raw)
    assert client.post("/api/v1/usage", {"records": [_usage(i) for i in range(5)]}, format="json").status_code == 200
    assert client.post("/api/v1/preflight", CALL, format="json").json()["decision"] == "allow"
    window = BudgetWindow.objects.get(budget__tenant=tenant_a)
    BudgetWindow.objects.filter(pk=window.pk).update(spent=F("spent") + DRIFT)
    paused = _PausedSums(monkeypatch)
    connections.close_all()
    return window, raw, paused


def _assert_exact(window: BudgetWindow) -> None:
    window.refresh_from_db()
    priced = UsageRecord.objects.filter(tenant_id=window.budget.tenant_id).aggregate(t=Sum("cost_nanos"))["t"]
    held = ReservationHold.objects.filter(window=window, reservation__status=Reservation.Status.HELD).aggregate(
        t=Sum("amount")
    )["t"]
    assert window.spent == priced, (window.spent, priced)
    assert window.reserved == (held or 0), (window.reserved, held)


@pytest.mark.django_db(transaction=True)
def test_ingest_preflight_and_settles_go_through_while_a_reconciliation_sums(drifted, tenant_a):
    window, raw, paused = drifted

    def writers() -> list[int]:
        client = _client(raw)
        batch = {"records": [_usage(i) for i in range(5, 25)]}
        codes = [client.post("/api/v1/usage", batch, format="json").status_code]
        for i in range(25, 31):  # preflight, then its usage settles the reservation
            answer = client.post("/api/v1/preflight", CALL, format="json").json()
            codes.append(200 if answer["decision"] == "allow" else 0)
            codes.append(client.post("/api/v1/usage", _usage(i, answer["reservation_id"]), format="json").status_code)
        codes.append(client.post("/api/v1/preflight", CALL, format="json").status_code)  # stays held
        return codes

    with ThreadPoolExecutor(2) as pool:
        reconciling = _in_thread(pool, lambda: reconcile.window_reconcile(window_id=window.pk))
        try:
            assert paused.summed.wait(WAIT), "the reconciliation never reached its sums"
            # The reconciliation has summed and is still running: the window must not be held by it.
            codes = _in_thread(pool, writers).result(timeout=WAIT)
        finally:
            paused.go.set()
        correction = reconciling.result(timeout=WAIT)

    assert codes == [200] * len(codes), codes
    # The drift was measured in the snapshot: exactly the amount added by hand, nothing of the writers'.
    assert correction["spent_drift"] == DRIFT and correction["reserved_drift"] == 0, correction
    assert UsageRecord.objects.filter(tenant=tenant_a).count() == 31
    _assert_exact(window)
    assert window.reserved > 0  # the two held reservations (the first and the last) are still counted


@pytest.mark.django_db(transaction=True)
def test_two_reconciliations_at_once_take_the_drift_away_once(drifted):
    window, raw, paused = drifted

    with ThreadPoolExecutor(2) as pool:
        first = _in_thread(pool, lambda: reconcile.window_reconcile(window_id=window.pk))
        try:
            assert paused.summed.wait(WAIT)
            second = _in_thread(pool, lambda: reconcile.window_reconcile(window_id=window.pk))
            # The second waits for the first's turn (an advisory lock of this database) before it measures.
            _wait_for_advisory_waiter()
            more = _client(raw).post("/api/v1/usage", _usage(99), format="json")  # and ingest still goes on
            assert more.status_code == 200
        finally:
            paused.go.set()
        results = [first.result(timeout=WAIT), second.result(timeout=WAIT)]

    assert results[0]["spent_drift"] == DRIFT
    assert results[1] is None  # measured after the first corrected it: in step
    _assert_exact(window)


def _wait_for_advisory_waiter() -> None:
    for _ in range(WAIT * 20):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
            )
            if cursor.fetchone()[0]:
                return
        threading.Event().wait(0.05)
    pytest.fail("the second reconciliation did not wait for the first")
