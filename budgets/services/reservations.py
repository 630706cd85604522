"""Reservations: holding an estimate on hard-limited windows, atomically, and releasing it.

A hold is one conditional UPDATE per window (`reserved += amount` only where spent + reserved +
amount stays within the hard limit), taken in window-id order inside one transaction (on PostgreSQL
one statement locks the rows in that order and one statement updates them all). The row lock
the UPDATE takes queues concurrent preflights on the same window, and the condition is evaluated on
the latest committed row, so no interleaving can take spent + reserved over a hard limit. There is
no read-then-write anywhere on this path.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from budgets.models import BudgetWindow, Reservation, ReservationHold

from .windows import holds_by_window


class WindowFull(Exception):
    """A hard-limited window has no room for the amount; everything held so far is rolled back."""

    def __init__(self, window_id: int):
        super().__init__(window_id)
        self.window_id = window_id


def windows_hold(amounts: dict[int, int], *, unchecked: frozenset[int] = frozenset()) -> None:
    """Add each amount to its window's `reserved` if it fits under the hard limit; raise WindowFull
    otherwise. Call inside a transaction (the caller rolls back on WindowFull). Windows in
    `unchecked` take the hold without the limit check (an approved run over a require-approval limit).
    """
    if not amounts:
        return
    if connection.vendor == "postgresql":
        _windows_hold_pg(amounts, unchecked)
        return
    for window_id in sorted(amounts):
        amount = amounts[window_id]
        rows = BudgetWindow.objects.filter(pk=window_id)
        if window_id not in unchecked:
            rows = rows.filter(hard_limit__gte=F("spent") + F("reserved") + amount)
        if not rows.update(reserved=F("reserved") + amount):
            raise WindowFull(window_id)


_TABLE = BudgetWindow._meta.db_table

# Two statements instead of one per window: the hot window rows stay locked from the first
# statement to the commit, so every round trip inside that span costs throughput under contention.
# 1. Lock the rows in id order (the order ingest and every other preflight use: no deadlocks) and,
#    when PREFLIGHT_ASYNC_COMMIT is on, let this transaction commit without waiting for the WAL
#    flush, which shortens how long the locks are held (see docs/budgets.md for the trade-off).
_LOCK_SQL = (
    f"SELECT w.id FROM {_TABLE} w, set_config('synchronous_commit', %s, true) "
    "WHERE w.id = ANY(%s) ORDER BY w.id FOR UPDATE OF w"
)
# 2. The conditional update itself: a window takes the hold only if it still fits.
_HOLD_SQL = (
    f"UPDATE {_TABLE} w SET reserved = w.reserved + v.amount "
    "FROM unnest(%s::bigint[], %s::bigint[], %s::boolean[]) AS v(id, amount, checked) "
    "WHERE w.id = v.id AND (NOT v.checked OR w.hard_limit >= w.spent + w.reserved + v.amount) "
    "RETURNING w.id"
)


def _windows_hold_pg(amounts: dict[int, int], unchecked: frozenset[int]) -> None:
    ids = sorted(amounts)
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_SQL, ["off" if settings.PREFLIGHT_ASYNC_COMMIT else "on", ids])
        cursor.execute(_HOLD_SQL, [ids, [amounts[i] for i in ids], [i not in unchecked for i in ids]])
        held = {row[0] for row in cursor.fetchall()}
    if len(held) != len(ids):
        raise WindowFull(next(i for i in ids if i not in held))


def reservation_create(*, amounts: dict[int, int], ttl_seconds: int, now: datetime, **fields) -> Reservation:
    reservation = Reservation.objects.create(
        created_at=now, expires_at=now + timezone.timedelta(seconds=ttl_seconds), **fields
    )
    if amounts:
        ReservationHold.objects.bulk_create(
            [ReservationHold(reservation=reservation, window_id=w, amount=a) for w, a in sorted(amounts.items())]
        )
    return reservation


def _release(reservation_ids: list) -> None:
    released = holds_by_window(reservation_ids)
    for window_id in sorted(released):
        BudgetWindow.objects.filter(pk=window_id).update(reserved=F("reserved") - released[window_id])


def reservation_release(*, reservation: Reservation, now: datetime | None = None) -> bool:
    """Give back a held reservation the caller will not use; True if it was still held."""
    now = now or timezone.now()
    with transaction.atomic():
        if not Reservation.objects.filter(pk=reservation.pk, status=Reservation.Status.HELD).update(
            status=Reservation.Status.RELEASED, closed_at=now
        ):
            return False
        _release([reservation.pk])
    return True


def reservations_expire(*, now: datetime | None = None, batch: int = 500) -> int:
    """Release every held reservation past its expiry; returns how many expired."""
    now = now or timezone.now()
    total = 0
    while True:
        with transaction.atomic():
            ids = list(
                Reservation.objects.filter(status=Reservation.Status.HELD, expires_at__lte=now).values_list(
                    "pk", flat=True
                )[:batch]
            )
            if not ids:
                return total
            # The status condition again: a record may have settled one of them since the select.
            expired = [
                pk
                for pk in ids
                if Reservation.objects.filter(pk=pk, status=Reservation.Status.HELD).update(
                    status=Reservation.Status.EXPIRED, closed_at=now
                )
            ]
            _release(expired)
            total += len(expired)
        if len(ids) < batch:
            return total
