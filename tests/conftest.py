"""Shared fixtures. The test database always holds two tenants (a and b) with their own keys and
members, and a small priced catalog, so every endpoint can be tested across the tenant boundary."""

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test import TransactionTestCase
from rest_framework.test import APIClient

from finops.models import LlmModel
from tenants.models import ApiKey, Membership, Tenant
from tenants.services import api_key_create

from .factories import (
    LlmModelFactory,
    MembershipFactory,
    ModelPriceFactory,
    ModelTierFactory,
    TenantFactory,
    UserFactory,
)

ALL_SCOPES = "ingest,preflight,read,manage"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "faults: kills or cuts real processes and services (a Celery worker, PostgreSQL, Redis) mid-work"
    )


@dataclass
class KeyedClient:
    key: ApiKey
    raw: str
    client: APIClient


def _keyed(tenant: Tenant | None, scopes: str = ALL_SCOPES, name: str = "test key") -> KeyedClient:
    key, raw = api_key_create(tenant=tenant, name=name, scopes=scopes)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return KeyedClient(key=key, raw=raw, client=client)


@pytest.fixture
def tenant_a(db) -> Tenant:
    return TenantFactory(slug="acme", name="Acme Corp (marker-tenant-a)")


@pytest.fixture
def tenant_b(db) -> Tenant:
    return TenantFactory(slug="globex", name="Globex Inc (marker-tenant-b)")


@pytest.fixture
def api_a(tenant_a, tenant_b) -> KeyedClient:
    """A client holding a tenant key of tenant a (tenant b exists too)."""
    return _keyed(tenant_a)


@pytest.fixture
def api_b(tenant_a, tenant_b) -> KeyedClient:
    return _keyed(tenant_b)


@pytest.fixture
def api_platform(tenant_a, tenant_b) -> KeyedClient:
    return _keyed(None, name="platform key")


@pytest.fixture
def make_key():
    return _keyed


@pytest.fixture
def viewer_a(tenant_a):
    return MembershipFactory(tenant=tenant_a, role=Membership.Role.VIEWER, user=UserFactory(username="viewer-a")).user


@pytest.fixture
def viewer_b(tenant_b):
    return MembershipFactory(tenant=tenant_b, role=Membership.Role.VIEWER, user=UserFactory(username="viewer-b")).user


@pytest.fixture
def operator(db):
    return UserFactory(username="operator", is_staff=True, is_superuser=True)


@pytest.fixture
def catalog(db) -> dict[str, LlmModel]:
    """Three providers, three tiers, prices in force since 2024-01-01 (gpt-4o also has an older price)."""
    economy = ModelTierFactory(slug="economy", rank=1)
    standard = ModelTierFactory(slug="standard", rank=2)
    premium = ModelTierFactory(slug="premium", rank=3)
    since = datetime(2024, 1, 1, tzinfo=UTC)
    gpt4o = LlmModelFactory(
        name="gpt-4o",
        provider="openai",
        tier=standard,
        aliases=["my-azure-gpt4o"],
        match_pattern=r"gpt-4o-\d{4}-\d{2}-\d{2}",
        encoding=LlmModel.Encoding.O200K,
        max_output_tokens=16384,
    )
    ModelPriceFactory(
        model=gpt4o,
        effective_from=datetime(2023, 6, 1, tzinfo=UTC),
        input=Decimal("5.00"),
        cached_input=Decimal("5.00"),
        output=Decimal("15.00"),
    )
    ModelPriceFactory(
        model=gpt4o, effective_from=since, input=Decimal("2.50"), cached_input=Decimal("1.25"), output=Decimal("10.00")
    )
    # o3's catalog substitute is gpt-4o (a downgrade control moves it there); the others have none.
    o3 = LlmModelFactory(
        name="o3", provider="openai", tier=premium, encoding=LlmModel.Encoding.O200K, downgrade_to=gpt4o
    )
    ModelPriceFactory(
        model=o3, effective_from=since, input=Decimal("2.00"), cached_input=Decimal("0.50"), output=Decimal("8.00")
    )
    sonnet = LlmModelFactory(
        name="claude-sonnet-4-5",
        provider="anthropic",
        tier=standard,
        encoding="",
        match_pattern=r"claude-sonnet-4-5-\d{8}",
    )
    ModelPriceFactory(
        model=sonnet,
        effective_from=since,
        input=Decimal("3.00"),
        cached_input=Decimal("0.30"),
        cache_write=Decimal("3.75"),
        output=Decimal("15.00"),
    )
    flash = LlmModelFactory(name="gemini-2.5-flash-lite", provider="google", tier=economy, encoding="")
    ModelPriceFactory(
        model=flash,
        effective_from=since,
        input=Decimal("0.10"),
        cached_input=Decimal("0.01875"),
        output=Decimal("0.40"),
    )
    return {"gpt-4o": gpt4o, "o3": o3, "claude-sonnet-4-5": sonnet, "gemini-2.5-flash-lite": flash}


@pytest.fixture(autouse=True)
def _fresh_preflight_state():
    """Each test's database is new: preflight must not reuse the previous test's cached fingerprint."""
    from budgets.estimates import safety_factors_reset
    from budgets.state import state_changed

    state_changed()
    safety_factors_reset()


# --- the append-only audit log and transactional tests ---------------------------------------------

_audit_guard = importlib.import_module("tenants.migrations.0002_audit_append_only")


@contextmanager
def audit_guard_lifted() -> Iterator[None]:
    """The audit table's triggers (tenants migration 0002) out of the way, for the test suite's own
    `flush` only. PostgreSQL: `session_replication_role = replica` skips ordinary triggers for this
    session (superuser only, as the test user is); SQLite: the triggers are dropped and made again."""
    vendor = connection.vendor
    with connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        else:
            for sql in _audit_guard.guard_sql(vendor, "drop"):
                cursor.execute(sql)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if vendor == "postgresql":
                cursor.execute("SET session_replication_role = DEFAULT")
            else:
                for sql in _audit_guard.guard_sql(vendor, "create"):
                    cursor.execute(sql)


@pytest.fixture(scope="session", autouse=True)
def _flush_empties_the_audit_log_too():
    """Transactional tests (live server, `transaction=True`) end with `flush`, which empties every
    table; the audit log's triggers would refuse it. The guard is lifted around that flush only, so
    every test still runs against the append-only table."""
    teardown = TransactionTestCase._fixture_teardown

    def flush_with_the_guard_lifted(self):
        with audit_guard_lifted():
            teardown(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TransactionTestCase, "_fixture_teardown", flush_with_the_guard_lifted)
        yield


@pytest.fixture
def silent_server():
    """A TCP server on a free local port that accepts connections and never sends a byte back: the worst
    kind of database or cache. Yields the port."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()
