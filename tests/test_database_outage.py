"""Clients retrying through a database outage, against PostgreSQL for real.

The app reaches PostgreSQL through a TCP proxy in the test. The proxy is stopped (the connections the app
holds are cut; new ones are refused, or accepted and never answered) while a client sends ingest batches,
preflights and settles with fixed request ids: each answers 503 JSON with Retry-After within a few
seconds. After the outage the client retries everything with the same request ids, including a batch
whose answer it never got, and at the end exactly the right records exist (none lost, none twice) and the
budget window is exact: spent is the priced sum of the records, nothing is still held."""

from __future__ import annotations

import os
import select
import socket
import threading
import time

import pytest
from django.db import close_old_connections, connection
from django.db.models import Sum

from budgets.models import Budget, BudgetWindow, Reservation
from finops.models import UsageRecord

from .test_database_faults import database_at


@pytest.fixture(autouse=True)
def _postgresql():
    if connection.vendor != "postgresql":
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail("REQUIRE_SERVICES=1 needs DATABASE_URL on PostgreSQL")
        pytest.skip("a TCP proxy in front of PostgreSQL (set DATABASE_URL)")


OUTAGE_ANSWER_SECONDS = 3.0  # a client's timeout would be longer; 503 must come well before it


class TcpProxy:
    """Forwards a local port to the database. `cut(mode)`: drops every forwarded connection, then either
    refuses new ones ("refused") or accepts them and never answers ("silent"); `restore()` forwards again."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.mode = "up"
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.silent: list[socket.socket] = []
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.server: socket.socket | None = None
        self.stopped = threading.Event()
        self._listen()
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._pump, daemon=True).start()

    def _listen(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        server.settimeout(0.1)
        self.server = server

    def _accept(self) -> None:
        while not self.stopped.is_set():
            server = self.server
            if server is None:
                time.sleep(0.05)
                continue
            try:
                client = server.accept()[0]
            except OSError:
                continue
            with self.lock:
                if self.mode == "silent":
                    self.silent.append(client)
                    continue
                upstream = socket.create_connection(self.target, timeout=5)
                self.pairs.append((client, upstream))

    def _pump(self) -> None:
        while not self.stopped.is_set():
            with self.lock:
                pairs = list(self.pairs)
            if not pairs:
                time.sleep(0.01)
                continue
            peers = {}
            for a, b in pairs:
                peers[a], peers[b] = b, a
            try:
                readable = select.select(list(peers), [], [], 0.05)[0]
            except (OSError, ValueError):
                continue  # a socket was closed by cut(): take the new list
            for sock in readable:
                try:
                    data = sock.recv(65536)
                    if data:
                        peers[sock].sendall(data)
                        continue
                except OSError:
                    pass
                self._drop(sock, peers[sock])

    def _drop(self, a: socket.socket, b: socket.socket) -> None:
        with self.lock:
            self.pairs = [p for p in self.pairs if a not in p]
        for sock in (a, b):
            try:
                sock.close()
            except OSError:
                pass

    def cut(self, mode: str) -> None:
        with self.lock:
            self.mode = mode
            pairs, self.pairs = self.pairs, []
            if mode == "refused" and self.server is not None:
                self.server.close()
                self.server = None
        for a, b in pairs:
            for sock in (a, b):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass

    def restore(self) -> None:
        with self.lock:
            self.mode = "up"
            silent, self.silent = self.silent, []
            if self.server is None:
                self._listen()
        for sock in silent:
            sock.close()

    def close(self) -> None:
        self.cut("refused")
        self.stopped.set()
        for sock in self.silent:
            sock.close()


def database_through(proxy: TcpProxy):
    """The app's connection goes through the proxy meanwhile (a 1 s connect timeout, as a web process
    would set a short one)."""
    return database_at(proxy.port)


def _post(client, path: str, body: dict):
    """One request as a WSGI server runs it: Django's request_started/finished signals close a connection
    that failed (the test client leaves them out), so the request after an outage connects anew."""
    close_old_connections()
    try:
        return client.post(path, body, format="json")
    finally:
        close_old_connections()


def _batch(first: int, n: int) -> dict:
    return {
        "records": [
            {"request_id": f"batch-{i}", "model": "gpt-4o", "input_tokens": 1000 + i, "output_tokens": 100}
            for i in range(first, first + n)
        ]
    }


def _settle(reservation_id: str, name: str) -> dict:
    return {
        "request_id": name,
        "model": "gpt-4o",
        "input_tokens": 900,
        "output_tokens": 300,
        "reservation_id": reservation_id,
    }


PREFLIGHT = {"model": "gpt-4o", "input_tokens": 1000, "max_output_tokens": 500}


def _answers_503_fast(response, elapsed: float) -> None:
    assert response.status_code == 503, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "database_unavailable"
    assert int(response["Retry-After"]) > 0
    assert elapsed < OUTAGE_ANSWER_SECONDS, elapsed


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["refused", "silent"])
def test_clients_retrying_through_a_database_outage_end_with_exact_records_and_windows(mode, api_a, catalog, tenant_a):
    budget = Budget.objects.create(
        tenant=tenant_a, name="hard", metric="cost", period="month", time_zone="UTC", hard_limit=10**15
    )
    client = api_a.client
    target = (connection.settings_dict["HOST"] or "127.0.0.1", int(connection.settings_dict["PORT"] or 5432))
    proxy = TcpProxy(target)
    try:
        with database_through(proxy):
            # Before the outage: a batch (its answer will be "lost" and the batch sent again), a preflight
            # settled at once, and a preflight whose settle will meet the outage.
            assert _post(client, "/api/v1/usage", _batch(0, 5)).json()["accepted"] == 5
            first = _post(client, "/api/v1/preflight", PREFLIGHT).json()
            assert first["decision"] == "allow"
            settled = _post(client, "/api/v1/usage", _settle(first["reservation_id"], "call-1"))
            assert settled.json()["accepted"] == 1
            second = _post(client, "/api/v1/preflight", PREFLIGHT).json()

            proxy.cut(mode)
            failed = []
            for path, body in [
                ("/api/v1/usage", _batch(5, 5)),
                ("/api/v1/usage", _settle(second["reservation_id"], "call-2")),
                ("/api/v1/preflight", PREFLIGHT),
            ]:
                started = time.perf_counter()
                response = _post(client, path, body)
                _answers_503_fast(response, time.perf_counter() - started)
                failed.append((path, body))

            proxy.restore()
            # The client retries what failed, with the same request ids, and the batch it got no answer for.
            retried = [_post(client, path, body) for path, body in failed]
            assert [r.status_code for r in retried] == [200, 200, 200], [r.content[:200] for r in retried]
            assert retried[0].json()["accepted"] == 5 and retried[1].json()["accepted"] == 1
            third = retried[2].json()
            assert third["decision"] == "allow"
            assert _post(client, "/api/v1/usage", _settle(third["reservation_id"], "call-3")).json()["accepted"] == 1
            again = _post(client, "/api/v1/usage", _batch(0, 5)).json()
            assert (again["accepted"], again["duplicate"]) == (0, 5)
            # A settle sent twice (its answer lost) is one record and one settle.
            twice = _post(client, "/api/v1/usage", _settle(second["reservation_id"], "call-2")).json()
            assert (twice["accepted"], twice["duplicate"]) == (0, 1)
    finally:
        proxy.close()

    ids = sorted(UsageRecord.objects.filter(tenant=tenant_a).values_list("request_id", flat=True))
    assert ids == sorted([f"batch-{i}" for i in range(10)] + ["call-1", "call-2", "call-3"])
    window = BudgetWindow.objects.get(budget=budget)
    priced = UsageRecord.objects.filter(tenant=tenant_a).aggregate(total=Sum("cost_nanos"))["total"]
    assert window.spent == priced > 0, (window.spent, priced)
    assert window.reserved == 0
    statuses = sorted(Reservation.objects.values_list("status", flat=True))
    assert statuses == ["settled", "settled", "settled"]
