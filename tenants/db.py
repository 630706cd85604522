"""Prepared statements for the few statements every API request runs (the API-key lookup, preflight's
reservation), on PostgreSQL.

Django sends every query with client-side binding (psycopg's ClientCursor quotes each parameter into
the SQL text) and without prepared statements, which keeps connection poolers working. For the two
statements on the hot path that costs the client a quoting pass over every parameter and the server a
parse and plan of a new text each time. `prepared_cursor()` sends them with server-side binding and
prepared (once per connection, then only the parameters travel), still through Django's cursor wrapper:
the same error mapping (a database fault is still django.db.OperationalError, answered 503), query
logging and thread checks. DB_PREPARED_STATEMENTS=false turns it off, e.g. behind PgBouncer in
transaction mode older than 1.21 (docs/scaling.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from django.conf import settings
from django.db import connection


@cache
def _prepared_cursor_class():
    from django.db.backends.postgresql.base import ServerBindingCursor

    class PreparedCursor(ServerBindingCursor):
        def execute(self, query, params=None, *, prepare=None, binary=None):
            prepare = True if prepare is None else prepare
            return super().execute(query, params, prepare=prepare, binary=binary)  # type: ignore[misc]

        def _send_query_prepared(self, name, pgq, *, binary=None):
            # psycopg records the query it sent only when it sends the text; Django's query log (and
            # CaptureQueriesContext) read it from there, so a prepared execution would log None.
            self._query = pgq
            return super()._send_query_prepared(name, pgq, binary=binary)  # type: ignore[misc]

    return PreparedCursor


@contextmanager
def prepared_cursor() -> Iterator:
    """A cursor whose statements are prepared on PostgreSQL; Django's usual cursor elsewhere or when off."""
    if connection.vendor != "postgresql" or not settings.DB_PREPARED_STATEMENTS:
        with connection.cursor() as cursor:
            yield cursor
        return
    # As django's BaseDatabaseWrapper._cursor, with this cursor class instead of the connection's factory.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        cursor = connection._prepare_cursor(_prepared_cursor_class()(connection.connection))  # type: ignore[attr-defined]
    with cursor:
        yield cursor
