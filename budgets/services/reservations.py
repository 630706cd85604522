"""Reservations: holding an estimate on hard-limited windows, atomically, and releasing it.

A hold is one conditional UPDATE per window (`reserved += amount` only where spent + reserved +
amount stays within the hard limit), taken in window-id order inside one transaction (on PostgreSQL
one statement locks the rows in that order and one statement updates them all). The row lock
the UPDATE takes queues concurrent preflights on the same window, and the condition is evaluated on
the latest committed row, so no interleaving can take spent + reserved over a hard limit. There is
no read-then-write anywhere on this path.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

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


WindowTotals = tuple  # (spent, reserved, soft_limit, hard_limit)


def windows_hold(
    amounts: dict[int, int], *, read: list[int] = (), unchecked: frozenset[int] = frozenset()
) -> dict[int, WindowTotals]:
    """Add each amount to its window's `reserved` if it fits under the hard limit; raise WindowFull
    otherwise. Call inside a transaction (the caller rolls back on WindowFull). Windows in
    `unchecked` take the hold without the limit check (an approved run over a require-approval limit).

    Returns the totals after the hold of the held windows and of the `read` windows (those without a
    hard limit, read without a lock), for the answer's headroom report.
    """
    if connection.vendor == "postgresql":
        return _windows_hold_pg(amounts, read, unchecked)
    for window_id in sorted(amounts):
        amount = amounts[window_id]
        rows = BudgetWindow.objects.filter(pk=window_id)
        if window_id not in unchecked:
            rows = rows.filter(hard_limit__gte=F("spent") + F("reserved") + amount)
        if not rows.update(reserved=F("reserved") + amount):
            raise WindowFull(window_id)
    wanted = [*amounts, *read]
    return {
        pk: (spent, reserved, soft, hard)
        for pk, spent, reserved, soft, hard in BudgetWindow.objects.filter(pk__in=wanted).values_list(
            "pk", "spent", "reserved", "soft_limit", "hard_limit"
        )
    }


_TABLE = BudgetWindow._meta.db_table

# One statement, however many windows, because the hot window rows stay locked from this statement to
# the commit and every round trip inside that span costs throughput under contention:
# - `locked` takes the row locks in id order (the order ingest and every other preflight use: no
#   deadlocks). NO KEY UPDATE is the lock the UPDATE itself takes; it leaves the key-share locks of
#   other transactions' hold inserts (their foreign-key checks) alone, where FOR UPDATE would wait
#   on them and could deadlock with a preflight that inserted its holds first. With with PREFLIGHT_ASYNC_COMMIT, lets this transaction commit without waiting for the
#   WAL flush, which shortens the span further (docs/budgets.md has the trade-off);
# - `held` is the conditional update: a window takes the hold only if it still fits. Under READ
#   COMMITTED an UPDATE re-checks its condition on the newest committed row version, so it sees
#   whatever the previous lock holder wrote;
# - the windows without a hard limit are read alongside, without a lock, for the headroom report.
_HOLD_SQL = (
    f"WITH locked AS MATERIALIZED (SELECT w.id FROM {_TABLE} w, set_config('synchronous_commit', %s, true) "
    "WHERE w.id = ANY(%s) ORDER BY w.id FOR NO KEY UPDATE OF w), "
    f"held AS (UPDATE {_TABLE} w SET reserved = w.reserved + v.amount "
    "FROM locked JOIN unnest(%s::bigint[], %s::bigint[], %s::boolean[]) AS v(id, amount, checked) "
    "ON v.id = locked.id "
    "WHERE w.id = locked.id AND (NOT v.checked OR w.hard_limit >= w.spent + w.reserved + v.amount) "
    "RETURNING w.id, w.spent, w.reserved, w.soft_limit, w.hard_limit) "
    "SELECT id, spent, reserved, soft_limit, hard_limit, true FROM held "
    f"UNION ALL SELECT id, spent, reserved, soft_limit, hard_limit, false FROM {_TABLE} WHERE id = ANY(%s)"
)


def _windows_hold_pg(amounts: dict[int, int], read, unchecked: frozenset[int]) -> dict[int, WindowTotals]:
    ids = sorted(amounts)
    commit = "off" if settings.PREFLIGHT_ASYNC_COMMIT and ids else "on"
    with connection.cursor() as cursor:
        cursor.execute(
            _HOLD_SQL, [commit, ids, ids, [amounts[i] for i in ids], [i not in unchecked for i in ids], list(read)]
        )
        rows = cursor.fetchall()
    held = {row[0] for row in rows if row[5]}
    if len(held) != len(ids):
        raise WindowFull(next(i for i in ids if i not in held))
    return {row[0]: row[1:5] for row in rows}


@dataclass(frozen=True, slots=True)
class HeldReservation:
    pk: uuid.UUID
    expires_at: datetime


_RESERVATION = Reservation._meta.db_table
_HOLD = ReservationHold._meta.db_table
# The reservation and its holds in one round trip (the window rows are still locked meanwhile).
_INSERT_SQL = (
    f"WITH r AS (INSERT INTO {_RESERVATION} (id, tenant_id, workflow_id, model_id, environment, "
    "estimated_cost_nanos, estimated_tokens, status, created_at, expires_at, api_key_id) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id) "
    f"INSERT INTO {_HOLD} (reservation_id, window_id, amount) "
    "SELECT r.id, h.window_id, h.amount FROM r, unnest(%s::bigint[], %s::bigint[]) AS h(window_id, amount)"
)


def reservation_create(
    *,
    amounts: dict[int, int],
    ttl_seconds: int,
    now: datetime,
    tenant_id: int,
    workflow_id: int | None,
    model_id: int | None,
    environment: str,
    estimated_cost_nanos: int | None,
    estimated_tokens: int,
    api_key_id: int | None,
) -> HeldReservation:
    reservation = HeldReservation(pk=uuid.uuid4(), expires_at=now + timedelta(seconds=ttl_seconds))
    fields = dict(
        tenant_id=tenant_id,
        workflow_id=workflow_id,
        model_id=model_id,
        environment=environment,
        estimated_cost_nanos=estimated_cost_nanos,
        estimated_tokens=estimated_tokens,
        api_key_id=api_key_id,
    )
    window_ids = sorted(amounts)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _INSERT_SQL,
                [
                    reservation.pk,
                    tenant_id,
                    workflow_id,
                    model_id,
                    environment,
                    estimated_cost_nanos,
                    estimated_tokens,
                    Reservation.Status.HELD,
                    now,
                    reservation.expires_at,
                    api_key_id,
                    window_ids,
                    [amounts[w] for w in window_ids],
                ],
            )
        return reservation
    Reservation.objects.create(id=reservation.pk, created_at=now, expires_at=reservation.expires_at, **fields)
    ReservationHold.objects.bulk_create(
        [ReservationHold(reservation_id=reservation.pk, window_id=w, amount=amounts[w]) for w in window_ids]
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
