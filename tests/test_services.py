"""Which database, cache and broker the suite runs against.

CI sets REQUIRE_SERVICES=1 with PostgreSQL and Redis: then these tests fail, never skip, when a service is
not configured or does not answer, so a green CI always means the suite ran against the real services.
Without it they check the embedded default that `make run` relies on: SQLite and Celery's filesystem
broker when no variable is set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from kombu import Connection

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES", "").lower() in ("1", "true", "yes")
BASE_DIR = Path(settings.BASE_DIR)


def _redis_url_or_skip(name: str, url: str) -> str:
    if url.startswith(("redis://", "rediss://")):
        return url
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 but {name} is {url or 'unset'!r}; set it to a redis:// URL.")
    pytest.skip(f"{name} is not a Redis URL (set REQUIRE_SERVICES=1 to require Redis)")


@pytest.mark.django_db
def test_default_database_is_postgresql_when_services_are_required():
    if not REQUIRE_SERVICES:
        pytest.skip("set REQUIRE_SERVICES=1 to require PostgreSQL")
    assert connection.vendor == "postgresql", (
        f"REQUIRE_SERVICES=1 but the default database is {connection.vendor}; set DATABASE_URL=postgres://..."
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        assert cursor.fetchone()[0].startswith("PostgreSQL")


def test_redis_answers_at_redis_url_and_serves_the_cache():
    url = _redis_url_or_skip("REDIS_URL", settings.REDIS_URL)
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    assert client.ping() is True
    assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    key, value = f"test-services-{uuid.uuid4().hex}", uuid.uuid4().hex
    cache.set(key, value, timeout=30)
    try:
        assert cache.get(key) == value
        assert client.exists(cache.make_key(key)) == 1, "the Django cache is not the Redis at REDIS_URL"
    finally:
        cache.delete(key)


def test_celery_broker_answers_and_delivers_a_message():
    url = _redis_url_or_skip("CELERY_BROKER_URL", settings.CELERY_BROKER_URL)
    queue_name = f"test-services-{uuid.uuid4().hex}"
    with Connection(url, connect_timeout=3) as conn:
        conn.ensure_connection(max_retries=3, interval_start=0.2, interval_step=0.5)
        queue = conn.SimpleQueue(queue_name)
        try:
            queue.put({"marker": queue_name})
            message = queue.get(timeout=5)
            message.ack()
            assert message.payload == {"marker": queue_name}
        finally:
            queue.queue.delete()
            queue.close()


def test_embedded_default_is_sqlite_and_filesystem_broker(tmp_path):
    """With none of the switching variables set, settings need no server at all."""
    if (BASE_DIR / ".env").exists():
        pytest.skip(".env exists and settings read it, so the defaults cannot be observed here")
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    # As `make run` does: debug on, so no secret key is needed; no DATABASE_URL/CELERY_BROKER_URL/REDIS_URL.
    env.update(DJANGO_DEBUG="true", FINOPS_VAR_DIR=str(tmp_path))
    script = (
        "import json; from finops import settings as s; print(json.dumps({"
        "'engine': s.DATABASES['default']['ENGINE'], 'name': str(s.DATABASES['default']['NAME']),"
        "'broker': s.CELERY_BROKER_URL, 'options': s.CELERY_BROKER_TRANSPORT_OPTIONS,"
        "'cache': s.CACHES['default']['BACKEND'], 'redis': s.REDIS_URL, 'eager': s.CELERY_TASK_ALWAYS_EAGER}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["engine"] == "django.db.backends.sqlite3"
    assert values["name"] == str(tmp_path / "finops.sqlite3")
    assert values["broker"].startswith("filesystem://")
    for folder in values["options"].values():
        assert Path(folder).is_relative_to(tmp_path), values["options"]
    assert values["cache"] == "django.core.cache.backends.locmem.LocMemCache"
    assert values["redis"] == ""
    assert values["eager"] is False  # a real worker runs the jobs


def test_embedded_default_keeps_its_files_under_var(tmp_path):
    """Without FINOPS_VAR_DIR, the database and broker queue live in var/ of the checkout (git-ignored)."""
    if (BASE_DIR / ".env").exists():
        pytest.skip(".env exists and settings read it, so the defaults cannot be observed here")
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env.update(DJANGO_DEBUG="true")
    script = "from finops import settings as s; print(s.DATABASES['default']['NAME'])"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(BASE_DIR / "var" / "finops.sqlite3")
