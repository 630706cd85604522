"""In-process snapshots of rarely changing tables, rebuilt when a fingerprint query's answer moves.

The hot paths (ingest, preflight) read the catalog, the budgets, the controls and the workflows on
every request. Each is held as a snapshot keyed by a fingerprint (row counts and last change times,
one small query), so every process sees an edit on its next request while a request pays one query
instead of a scan. Callers that read several fingerprints in one query pass the values in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar, cast

from django.db import connection

T = TypeVar("T")


class FingerprintSnapshot(Generic[T]):
    def __init__(self, fingerprint_sql: str | None, build: Callable[[tuple], T]):
        self._sql = fingerprint_sql
        self._build = build
        self._lock = threading.Lock()
        self._fingerprint: tuple | None = None
        self._value: T | None = None

    def get(self, fingerprint: tuple | None = None) -> T:
        if fingerprint is None:
            if self._sql is None:
                raise ValueError("this snapshot has no fingerprint query: the caller passes the fingerprint")
            with connection.cursor() as cursor:
                cursor.execute(self._sql)
                fingerprint = tuple(cursor.fetchone())
        if self._fingerprint != fingerprint:
            with self._lock:
                if self._fingerprint != fingerprint:
                    self._value = self._build(fingerprint)
                    self._fingerprint = fingerprint
        # Set by the first get() (a fingerprint is a tuple, never the initial None); T itself may allow None.
        return cast(T, self._value)
