"""/healthz and /readyz: what load balancers, Kubernetes and docker-compose healthchecks call."""

from __future__ import annotations

import time

import pytest
from django.test import Client, override_settings

from finops.views import operations

# Non-routable: a connection attempt hangs (or fails at once where the network says so), never answers.
BLACKHOLE = "10.255.255.1"


@pytest.fixture
def probe():
    # A probe calls the container by its address: a Host that DJANGO_ALLOWED_HOSTS does not list.
    return Client(HTTP_HOST="10.1.2.3:8000")


def test_healthz_answers_without_touching_anything(probe):
    # No django_db mark: any database access would raise here.
    response = probe.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_each_dependency(probe):
    response = probe.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "broker"}
    assert all(check["ok"] for check in body["checks"].values())


@pytest.mark.django_db
@pytest.mark.parametrize("host", [BLACKHOLE, "127.0.0.1:1"])
def test_readyz_answers_503_within_two_seconds_when_the_database_is_unreachable(probe, monkeypatch, host):
    real = operations._database_settings()
    address, _, port = host.partition(":")
    monkeypatch.setattr(operations, "_database_settings", lambda: {**real, "HOST": address, "PORT": port or "5432"})
    started = time.monotonic()
    response = probe.get("/readyz")
    assert time.monotonic() - started < 2.0
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] is False and checks["cache"]["ok"] is True
    assert BLACKHOLE not in response.content.decode() and "password" not in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("location", [f"redis://{BLACKHOLE}:6379/1", "redis://127.0.0.1:1/1"])
def test_readyz_answers_503_within_two_seconds_when_the_cache_is_unreachable(probe, location):
    caches = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": location}}
    with override_settings(CACHES=caches):
        started = time.monotonic()
        response = probe.get("/readyz")
        elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["cache"]["ok"] is False and checks["database"]["ok"] is True


@pytest.mark.django_db
def test_readyz_checks_a_redis_broker(probe):
    with override_settings(CELERY_BROKER_URL="redis://127.0.0.1:6379/0"):
        assert probe.get("/readyz").json()["checks"]["broker"]["ok"] is True
    with override_settings(CELERY_BROKER_URL="redis://127.0.0.1:1/0"):
        response = probe.get("/readyz")
    assert response.status_code == 503 and response.json()["checks"]["broker"]["ok"] is False


@pytest.mark.django_db
def test_a_check_that_hangs_is_cut_off_at_the_readiness_timeout(probe, monkeypatch, settings):
    """Whatever the network does with the addresses above, a dependency that never answers is timed out."""
    settings.READINESS_TIMEOUT_SECONDS = 0.5
    monkeypatch.setitem(operations.CHECKS, "database", lambda: time.sleep(5))
    started = time.monotonic()
    response = probe.get("/readyz")
    assert time.monotonic() - started < 1.5
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == {"ok": False, "error": "no answer within 0.5 s"}
