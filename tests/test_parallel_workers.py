"""`make test` runs the suite in pytest-xdist workers: each worker must have Redis databases of its own
(tests/workers.py), or one worker's `cache.clear()` (FLUSHDB) or queued task lands in another's test."""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from django.core.cache import cache

from finops.celery import app

from .workers import BASE_PREFIX, WORKER, WORKER_INDEX, group_of, redis_urls_for_worker, worker_suffix


def test_worker_zero_keeps_the_urls_it_was_given():
    urls = {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/0", "REDIS_URL": "redis://127.0.0.1:6379/1"}
    assert redis_urls_for_worker(urls, 0) == urls


def test_each_worker_moves_to_a_block_of_databases_of_its_own():
    urls = {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/0", "REDIS_URL": "redis://127.0.0.1:6379/1"}
    taken = [set(redis_urls_for_worker(urls, n).values()) for n in range(4)]
    assert redis_urls_for_worker(urls, 1) == {
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/2",
        "REDIS_URL": "redis://127.0.0.1:6379/3",
    }
    assert len(set().union(*taken)) == 8  # four workers, two databases each, none shared


def test_a_gap_between_the_given_databases_is_kept_free_of_other_workers():
    """Broker 0 and cache 2: worker 1 must not land its broker on the cache's database 2."""
    urls = {"CELERY_BROKER_URL": "redis://:secret@redis.example:6380/0?ssl_cert_reqs=none", "REDIS_URL": "redis://h/2"}
    moved = redis_urls_for_worker(urls, 1)
    assert moved == {
        "CELERY_BROKER_URL": "redis://:secret@redis.example:6380/3?ssl_cert_reqs=none",
        "REDIS_URL": "redis://h/5",
    }


def test_urls_that_are_not_redis_are_left_alone():
    urls = {"CELERY_BROKER_URL": "filesystem://localhost//", "REDIS_URL": "redis://127.0.0.1:6379"}
    assert redis_urls_for_worker(urls, 2) == {
        "CELERY_BROKER_URL": "filesystem://localhost//",
        "REDIS_URL": "redis://127.0.0.1:6379/2",  # no database in the URL is database 0
    }


def test_this_process_uses_its_workers_databases_everywhere():
    """The environment (subprocesses, Celery), the settings, the cache's connection and Celery's broker."""
    given = {
        name: os.environ[BASE_PREFIX + name]
        for name in ("CELERY_BROKER_URL", "REDIS_URL")
        if os.environ.get(BASE_PREFIX + name)
    }
    if not given:
        pytest.skip("no CELERY_BROKER_URL or REDIS_URL was given to this run")
    mine = redis_urls_for_worker(given, WORKER_INDEX)
    for name, url in mine.items():
        assert os.environ[name] == url, name
    if "REDIS_URL" in mine and mine["REDIS_URL"].startswith("redis"):
        assert settings.REDIS_URL == mine["REDIS_URL"]
        client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
        assert client.connection_pool.connection_kwargs["db"] == int(mine["REDIS_URL"].rsplit("/", 1)[1])
    if "CELERY_BROKER_URL" in mine and mine["CELERY_BROKER_URL"].startswith("redis"):
        assert settings.CELERY_BROKER_URL == mine["CELERY_BROKER_URL"]
        with app.connection_for_write() as conn:
            assert conn.as_uri(include_password=True) == mine["CELERY_BROKER_URL"]


def test_names_outside_the_test_database_get_the_workers_suffix():
    assert worker_suffix() == (f"_{WORKER}" if WORKER else "")


def test_the_browser_and_newcomer_tests_are_each_one_scheduling_unit():
    assert group_of("tests/browser/test_auth.py::test_sign_in") == group_of("tests/browser/test_usage.py::t[x]")
    assert group_of("tests/test_newcomer_path.py::a") == group_of("tests/test_newcomer_path.py::b") == "newcomer"
    assert group_of("tests/finops/test_ingest.py::test_x[1]") == "tests/finops/test_ingest.py::test_x[1]"
