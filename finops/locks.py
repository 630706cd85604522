"""Run-once locks for periodic work, on PostgreSQL advisory locks.

Two beat processes (a second one started by mistake, or two during a rolling deploy) send every periodic
task twice, and two workers may run both copies at the same moment. Tasks are idempotent when run one
after the other; `single_run` makes overlapping copies of one task take turns: the second skips, since
the first is doing the work. SQLite (the embedded default) has one worker and one beat: no lock needed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


def _key(name: str) -> int:
    return zlib.crc32(f"tokenspend:{name}".encode())


@contextmanager
def single_run(name: str) -> Iterator[bool]:
    """Yields True when this process holds the lock named `name` (until the block ends), False when
    another process holds it. A process that dies loses its lock with its database session."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_key(name)])
        held = bool(cursor.fetchone()[0])
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_key(name)])


@contextmanager
def taking_turns(name: str) -> Iterator[None]:
    """Waits until no other process holds the lock named `name`, and holds it until the block ends: for
    work that must not overlap a copy of itself but must not be skipped either (reconciling one budget
    window). Nothing else waits for it: it is not a row lock. No-op on SQLite, whose writers take turns."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [_key(name)])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_key(name)])
