"""What each pytest-xdist worker keeps to itself when `make test` runs the suite in parallel.

pytest-django already gives every worker its own test database (`test_<name>_gw0`, `_gw1`, ...). This
module does the same for what pytest-django does not know about: the Redis databases of the broker
(CELERY_BROKER_URL) and of the cache (REDIS_URL), and the names of scratch databases a test creates.
tests/conftest.py applies `redis_urls_for_this_worker()` to the environment and the settings once per
process, before any test runs, so tests, the Django cache, Celery and the subprocesses they start all see
the worker's own Redis databases. docs/testing.md has the conventions a new test follows.

Outside xdist (`pytest ...` directly, `make test PYTEST_ARGS="-n 0"`) WORKER is "" and nothing changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

# "gw0", "gw1", ... in an xdist worker; "" in a serial run.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
WORKER_INDEX = int(WORKER.removeprefix("gw")) if WORKER.startswith("gw") else 0

REDIS_VARIABLES = ("CELERY_BROKER_URL", "REDIS_URL")
# The URLs as given to the run, before any worker moved them (kept in the environment so that a pytest
# started by a test, e.g. the nested `make test`, moves from the same starting point).
BASE_PREFIX = "PYTEST_BASE_"


# Tests that one worker runs one after the other (`make test`'s --dist loadgroup, see tests/conftest.py's
# pytest_xdist_make_scheduler): node id prefix -> group. Everything else goes test by test to a free worker.
# (pytest-xdist's own xdist_group mark cannot do it under pytest 9: it renames node ids through an
# attribute pytest no longer reads, so the mark is silently ignored.)
GROUPS = {
    # One Chromium for the package; Playwright's event loop never shares a worker's thread with other tests.
    "tests/browser/": "browser",
    # One fresh clone and its `make run` (a module fixture) for all of them.
    "tests/test_newcomer_path.py": "newcomer",
}


def group_of(nodeid: str) -> str:
    """The scheduling unit of a test: its group, or the test itself."""
    for prefix, group in GROUPS.items():
        if nodeid.startswith(prefix):
            return group
    return nodeid


def worker_suffix() -> str:
    """ "_gw1" in worker gw1, "" in a serial run: for names a test creates outside its test database
    (a scratch PostgreSQL database, a queue name), as pytest-django names the test databases."""
    return f"_{WORKER}" if WORKER else ""


def _redis_db(url: str) -> int | None:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return None
    path = parts.path.strip("/")
    return int(path) if path.isdigit() else 0


def redis_urls_for_worker(urls: dict[str, str], index: int) -> dict[str, str]:
    """Each redis:// URL of `urls` moved to the databases of worker number `index`.

    The Redis databases the run was given (e.g. broker 0 and cache 1) form a block; worker n uses the
    block shifted by n times its width (worker 1: 2 and 3), so no two workers share a database, and a
    test that empties its cache (`cache.clear()` is FLUSHDB) or reads a queue only sees its own worker's.
    Worker 0 keeps the URLs as given. Other URLs (filesystem://, "") are left alone.
    """
    dbs = [db for url in urls.values() if (db := _redis_db(url)) is not None]
    if not dbs or index == 0:
        return dict(urls)
    width = max(dbs) - min(dbs) + 1
    moved = {}
    for name, url in urls.items():
        db = _redis_db(url)
        if db is None:
            moved[name] = url
            continue
        parts = urlsplit(url)
        moved[name] = urlunsplit(parts._replace(path=f"/{db + index * width}"))
    return moved


def redis_urls_for_this_worker(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """This process's CELERY_BROKER_URL and REDIS_URL (only those set), from the run's original URLs."""
    base = {}
    for name in REDIS_VARIABLES:
        value = environ.get(BASE_PREFIX + name, environ.get(name, ""))
        if value:
            base[name] = value
    return redis_urls_for_worker(base, WORKER_INDEX)
