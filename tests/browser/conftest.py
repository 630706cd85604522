"""Browser tests: Playwright's sync API driving Debian's Chromium against pytest-django's live server.

Chromium comes from the operating system (`apt-get install chromium`, which `.ci/run` does when it is
missing), never from `playwright install`: that download cannot reach its host from these machines.
Without Chromium the tests skip on a developer's machine and fail when CI or REQUIRE_SERVICES asks
for every service.

Every test gets a fresh browser context and page that:
- block any request that does not go to the live server (recorded, and the test fails: no CDN);
- record console errors and uncaught page errors (the test fails if its page logged one);
- save a full-page screenshot, 1400 px wide, under test-artifacts/screenshots/ when asked to (and one
  named after the test when it fails).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from finops.services import seed

from .helpers import VIEWPORT, require_page, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
# The flags the machine documentation lists for headless Chromium on these hosts: without the
# background-networking ones Chromium keeps dialling Google hosts the closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEFAULT_TIMEOUT_MS = 15_000
BROWSER_DIR = Path(__file__).resolve().parent


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def services_required() -> bool:
    """CI (CI=true) and REQUIRE_SERVICES=1 want a missing browser to fail the run, not skip it."""
    return _flag("REQUIRE_SERVICES") or _flag("CI")


def _unavailable(reason: str):
    if services_required():
        pytest.fail(f"{reason} (browser tests are required here: CI or REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(reason)


# --- collection ---------------------------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives the pages in headless Chromium (tests/browser/)")
    config.addinivalue_line(
        "markers", "requires_page(path): skip until the page at `path` exists (for pages still being built)"
    )


def pytest_collection_modifyitems(config, items):
    # In a parallel run one worker runs them all, one after the other (tests/workers.py GROUPS).
    for item in items:
        if BROWSER_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(autouse=True)
def _requires_page(request) -> None:
    """Skip, before any data is loaded, a test of a page that is not built yet."""
    for marker in request.node.iter_markers("requires_page"):
        require_page(*marker.args)


# --- the browser --------------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium for all browser tests, stopped when they are done.

    Package scope rather than session scope on purpose: while Playwright's sync API is started, its
    event loop counts as running in this thread, so Django refuses ORM calls ("async context")
    unless DJANGO_ALLOW_ASYNC_UNSAFE is set. Both are confined to this package, so tests that run
    after it (pytest-django runs transactional tests after the others) see a normal thread again.
    Playwright's launch() gives every browser a new, empty, temporary user-data dir of its own.
    """
    if not CHROMIUM.exists():
        _unavailable(f"Chromium not found at {CHROMIUM}: install it with `apt-get install chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed: `pip install -e '.[dev]'`")

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@dataclass
class PageProblems:
    """What a page did that a finished page must not do: log errors, throw, or reach another host."""

    live_origin: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    blocked_requests: list[str] = field(default_factory=list)
    expected_console: list[re.Pattern] = field(default_factory=list)

    def expect_console_error(self, pattern: str) -> None:
        """Let console errors matching `pattern` pass (e.g. the 404 a test asks for on purpose)."""
        self.expected_console.append(re.compile(pattern))

    def on_console(self, message) -> None:
        if message.type != "error":
            return
        text = message.text
        if any(p.search(text) for p in self.expected_console):
            return
        where = (message.location or {}).get("url", "")
        self.console_errors.append(f"{text} [{where}]" if where else text)

    def summary(self) -> str:
        lines = []
        lines += [f"console error: {e}" for e in self.console_errors]
        lines += [f"page error: {e}" for e in self.page_errors]
        lines += [f"request to another host (blocked): {u}" for u in self.blocked_requests]
        return "\n".join(lines)


def _same_origin(url: str, origin: str) -> bool:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" == origin


def _wait_for_live_server_to_finish(timeout: float = 10.0) -> None:
    """Wait until no other connection to the test database is mid-query or mid-transaction.

    The browser may leave a request in flight when a test ends (a chart fetch, a navigation). The
    test database is flushed right after, and on PostgreSQL a TRUNCATE racing a live-server request
    that holds table locks deadlocks. SQLite has no other connections to wait for.
    """
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')"
            )
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.05)


@pytest.fixture
def page(browser, live_server, transactional_db, request) -> Iterator[Page]:
    """A fresh context and page on the live server: only the live server is reachable."""
    origin = live_server.url.rstrip("/")
    problems = PageProblems(live_origin=origin)
    context = browser.new_context(viewport=VIEWPORT, base_url=origin, accept_downloads=True)
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)

    def block(route) -> None:
        problems.blocked_requests.append(route.request.url)
        route.abort("blockedbyclient")

    # Only requests that leave the live server are intercepted; data: URLs never reach a route.
    context.route(lambda url: url.startswith("http") and not _same_origin(url, origin), block)
    new_page = context.new_page()
    new_page.on("console", problems.on_console)
    new_page.on("pageerror", lambda error: problems.page_errors.append(str(error)))
    request.node.browser_problems = problems
    try:
        yield new_page
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            # A crashed page cannot be photographed; the test's own failure is what gets reported.
            with contextlib.suppress(Exception):
                screenshot(new_page, f"FAILED-{request.node.name}")
    finally:
        with contextlib.suppress(Exception):
            new_page.wait_for_load_state("networkidle", timeout=5000)
        context.close()
        _wait_for_live_server_to_finish()


@pytest.fixture
def page_problems(page, request) -> PageProblems:
    return request.node.browser_problems


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test passes only if its page logged no JavaScript error and reached no other host."""
    try:
        result = yield
    finally:
        problems = getattr(item, "browser_problems", None)
        if problems is not None and problems.summary():
            item.add_report_section("call", "browser", problems.summary())
    if problems is not None and problems.summary():
        pytest.fail(f"the page misbehaved:\n{problems.summary()}", pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report


# --- data ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Demo:
    """The demo data set's people and tenants that the tests lean on (finops/services/seed/demo_specs.py)."""

    operator: str = seed.DEMO_USERNAME
    password: str = seed.DEMO_PASSWORD
    tenant_slug: str = seed.DEMO_TENANT_SLUG
    tenant_name: str = "Northwind Traders"
    viewer: str = "northwind-viewer"  # a viewer of northwind only
    other_slug: str = "initech"
    other_name: str = "Initech"
    # Only Initech sends this model, so it marks Initech's data wherever it shows up.
    other_marker: str = seed.DEMO_UNKNOWN_MODEL


DEMO_DAYS = 2  # a few thousand records: enough for every chart, quick to load before each test


@pytest.fixture
def demo(transactional_db, settings) -> Demo:
    """The demo data set over the last DEMO_DAYS days, committed so the live server sees it.

    Loaded again for every test: live_server tests are transactional, and pytest-django empties the
    tables after each one. A fast password hasher keeps the sign-in form's check cheap; the form,
    the session and the backend are the real ones.
    """
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    seed.catalog_seed()
    seed.demo_seed(days=DEMO_DAYS)
    return Demo()
