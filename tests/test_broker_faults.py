"""The Celery broker unreachable: ingest and preflight queue nothing, so they keep answering at full speed;
alert notifications are rows in the database, delivered by the sweeper once the broker is back."""

from __future__ import annotations

import socket
import time

import pytest

from finops.celery import app


@pytest.fixture
def broker_down(monkeypatch):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    # Celery reads CELERY_BROKER_URL from the environment before its own setting (CI sets it).
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{port}/0")
    saved = {k: app.conf[k] for k in ("broker_url", "task_always_eager", "broker_connection_timeout")}
    app.conf.update(broker_url=f"redis://127.0.0.1:{port}/0", task_always_eager=False, broker_connection_timeout=1)
    app.close()  # drops the connection pool, so the next connection reads broker_url again
    try:
        yield
    finally:
        app.conf.update(saved)
        app.close()  # drops the connection pool, so the next connection reads broker_url again


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


def test_the_broker_really_is_down_in_this_test(broker_down):
    """Guards the test above: with this fixture the app's broker does not answer."""
    from kombu.exceptions import OperationalError

    with pytest.raises(OperationalError), app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=1)
