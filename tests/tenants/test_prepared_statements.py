"""The API-key lookup and preflight's reservation run as prepared statements on PostgreSQL (tenants/db.py),
through Django's cursor wrapper; DB_PREPARED_STATEMENTS=false sends them as every other query."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from budgets.models import Reservation
from tenants.db import prepared_cursor
from tests.budgets.factories import BudgetFactory

pytestmark = pytest.mark.django_db

if connection.vendor != "postgresql":
    pytest.skip("prepared statements are a PostgreSQL matter", allow_module_level=True)


def _prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(statement, name) FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def _preflights(api, n: int) -> None:
    for _ in range(n):
        response = api.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 10}, format="json")
        assert response.status_code == 200 and response.json()["decision"] == "allow", response.content


def _sent(api) -> list[str]:
    """The key lookup and the reservation as sent: `$1` placeholders when server-side bound."""
    with CaptureQueriesContext(connection) as queries:
        _preflights(api, 3)
    return [q["sql"] for q in queries.captured_queries if "k.prefix" in q["sql"] or "budgets_reserve(" in q["sql"]]


def test_the_key_lookup_and_the_reservation_are_prepared(api_a, tenant_a, catalog):
    BudgetFactory(tenant=tenant_a, hard_limit=10**12)
    sent = _sent(api_a)
    assert len(sent) == 6 and all("$1" in sql for sql in sent), sent
    statements = _prepared()
    assert any("budgets_reserve(" in s for s in statements), statements
    assert any("WHERE k.prefix = $1" in s for s in statements), statements
    assert Reservation.objects.filter(tenant=tenant_a, status="held").count() == 3


def test_off_they_are_sent_as_every_other_query(api_a, tenant_a, catalog, settings):
    settings.DB_PREPARED_STATEMENTS = False
    BudgetFactory(tenant=tenant_a, hard_limit=10**12)
    sent = _sent(api_a)
    assert len(sent) == 6 and not any("$1" in sql for sql in sent), sent
    assert any(f"k.prefix = '{api_a.key.prefix}'" in sql for sql in sent), sent


def test_a_full_window_and_a_database_error_keep_their_meaning(api_a, tenant_a, catalog):
    BudgetFactory(tenant=tenant_a, hard_limit=1)  # far below any call: the reservation's RAISE
    response = api_a.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 10}, format="json")
    assert response.status_code == 200 and response.json()["decision"] == "deny"
    with pytest.raises(OperationalError), prepared_cursor() as cursor:  # Django's exception, not psycopg's
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    connection.close()


def test_a_preflight_in_the_steady_state_is_two_statements(api_a, tenant_a, catalog, settings):
    """The key lookup and the reservation: the catalog, budgets, controls, workflows and safety factors
    come from the process's state (its fingerprint checked at most once per PREFLIGHT_STATE_TTL_SECONDS),
    the key's last use is written once per API_KEY_LAST_USED_RESOLUTION_SECONDS, the throttle is in the
    cache."""
    settings.PREFLIGHT_STATE_TTL_SECONDS = 60
    BudgetFactory(tenant=tenant_a, hard_limit=10**12)
    _preflights(api_a, 2)
    with CaptureQueriesContext(connection) as queries:
        _preflights(api_a, 3)
    # The test runs in a transaction, so the reservation takes a savepoint; under gunicorn it runs alone.
    sql = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]
    assert len(sql) == 6, sql
    assert sum("k.prefix" in q for q in sql) == 3 and sum("budgets_reserve(" in q for q in sql) == 3
