"""The per-key rate limit (tenants.authentication.ApiKeyRateThrottle) under concurrency and when its cache
fails. Runs against the real Redis on 127.0.0.1:6379 (REDIS_URL overrides it)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.test import override_settings

from tenants import authentication
from tenants.authentication import ApiKeyRateThrottle
from tests.net import unused_port

from ..workers import WORKER_INDEX

# REDIS_URL is already this xdist worker's own database (tests/conftest.py); without it, db 15 counting down
# by worker, so that two workers' cache.clear() never empty each other's counters.
REDIS_URL = os.environ.get("REDIS_URL") or f"redis://127.0.0.1:6379/{15 - WORKER_INDEX}"
REDIS_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"test-rate-{os.getpid()}",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}


def _redis_or_fail() -> None:
    """Tests that need a service fail, not skip, when it is missing (DESIGN.md 11)."""
    host, port = REDIS_URL.split("//")[1].split("/")[0].split(":")
    socket.create_connection((host, int(port)), timeout=1).close()


@pytest.fixture
def redis_cache():
    _redis_or_fail()
    authentication._breaker.open_until = 0.0
    with override_settings(CACHES=REDIS_CACHE):
        cache.clear()
        yield cache
        cache.clear()


@pytest.fixture
def rate(monkeypatch):
    def set_rate(value: str) -> None:
        monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": value})

    return set_rate


def _request(key_id: int):
    auth = authentication.ApiKey(id=key_id)
    return SimpleNamespace(auth=auth, user=None, META={"REMOTE_ADDR": "127.0.0.1"})


def test_a_concurrent_burst_of_twice_the_limit_lets_at_most_the_limit_through(redis_cache, rate):
    rate("500/min")
    if time.time() % 60 > 50:  # the burst must fall in one window; wait for the next one
        time.sleep(61 - time.time() % 60)
    request = _request(42)
    start = threading.Barrier(16)

    def burst(_: int) -> list[bool]:
        start.wait()
        return [ApiKeyRateThrottle().allow_request(request, None) for _ in range(1000 // 16 + 1)]

    with ThreadPoolExecutor(16) as pool:
        results = [allowed for chunk in pool.map(burst, range(16)) for allowed in chunk]
    assert len(results) >= 1000
    assert sum(results) == 500  # exactly the limit: no lost update lets more through, none is wrongly refused


def test_over_the_limit_the_api_answers_429_with_retry_after_from_redis(redis_cache, rate, api_a, catalog):
    rate("3/min")
    codes = [
        api_a.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 1}, format="json").status_code
        for _ in range(5)
    ]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    last = api_a.client.post("/api/v1/usage", {"request_id": "r", "model": "gpt-4o", "input_tokens": 1}, format="json")
    assert last.status_code == 429 and last.json()["error"]["code"] == "throttled"
    assert 1 <= int(last["Retry-After"]) <= 60


def test_a_request_costs_one_round_trip_to_redis_and_the_counter_expires(redis_cache, rate, monkeypatch):
    """INCR and EXPIRE go in one pipeline: one send to Redis per request (add-then-incr was two), and the
    window's counter carries an expiry just past the window, so counters do not pile up in Redis."""
    from redis.connection import Connection

    rate("100/min")
    sends = []
    original = Connection.send_packed_command
    monkeypatch.setattr(
        Connection, "send_packed_command", lambda self, *a, **kw: sends.append(1) or original(self, *a, **kw)
    )
    request = _request(43)
    assert all(ApiKeyRateThrottle().allow_request(request, None) for _ in range(5))
    assert len(sends) == 5
    monkeypatch.setattr(Connection, "send_packed_command", original)
    key = f"throttle:api_key:key:43:{int(time.time() // 60)}"
    assert cache.get(key) in (5, None)  # None: the window turned over meanwhile
    client = cache._cache.get_client(cache.make_and_validate_key(key))
    assert 0 < client.ttl(cache.make_and_validate_key(key)) <= 61 or cache.get(key) is None


def test_keys_are_counted_apart(redis_cache, rate, api_a, api_b, catalog):
    rate("2/min")
    for client in (api_a.client, api_b.client):
        codes = [client.get("/api/v1/budgets").status_code for _ in range(3)]
        assert codes == [200, 200, 429]


# --- the cache unreachable or silent -------------------------------------------------------------------------


def _unreachable_cache(location: str) -> dict:
    return {
        "default": {
            **REDIS_CACHE["default"],
            "LOCATION": location,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_ingest_and_preflight_keep_working_when_the_cache_fails(kind, api_a, catalog, caplog, request):
    port = unused_port() if kind == "refused" else request.getfixturevalue("silent_server")
    authentication._breaker.open_until = 0.0
    caplog.set_level(logging.WARNING, logger="tenants.throttle")
    with override_settings(CACHES=_unreachable_cache(f"redis://127.0.0.1:{port}/0")):
        started = time.perf_counter()
        timings = []
        for i in range(5):
            began = time.perf_counter()
            ingest = api_a.client.post(
                "/api/v1/usage", {"request_id": f"r{i}", "model": "gpt-4o", "input_tokens": 1}, format="json"
            )
            preflight = api_a.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 1}, format="json")
            timings.append(time.perf_counter() - began)
            assert ingest.status_code == 200, ingest.content
            assert preflight.status_code == 200, preflight.content
            assert preflight.json()["decision"] == "allow"
        total = time.perf_counter() - started
    authentication._breaker.open_until = 0.0
    # The first request pays the cache's timeout once; the rest skip the cache for CACHE_RETRY_SECONDS.
    assert timings[0] < 2.5 and max(timings[1:]) < 0.5, timings
    assert total < 4.0
    assert any("rate limit not enforced" in r.getMessage() for r in caplog.records)
