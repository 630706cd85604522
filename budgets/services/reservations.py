"""Reservations: holding an estimate on hard-limited windows, atomically, and releasing it.

A hold is one conditional UPDATE per window (`reserved += amount` only where spent + reserved +
amount stays within the hard limit), taken in window-id order inside one transaction (on PostgreSQL
inside one statement, a database function, together with the reservation's rows). The row lock
the UPDATE takes queues concurrent preflights on the same window, and the condition is evaluated on
the latest committed row, so no interleaving can take spent + reserved over a hard limit. There is
no read-then-write anywhere on this path.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.utils import timezone

from budgets.models import BudgetWindow, Reservation, ReservationHold
from tenants.db import prepared_cursor

from .windows import holds_by_window


class WindowFull(Exception):
    """A hard-limited window has no room for the amount; everything held so far is rolled back."""

    def __init__(self, window_id: int):
        super().__init__(window_id)
        self.window_id = window_id


WindowTotals = tuple  # (spent, reserved, soft_limit, hard_limit)


@dataclass(frozen=True, slots=True)
class HeldReservation:
    pk: uuid.UUID
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ReservationSpec:
    """What a reservation records about the call it is for."""

    tenant_id: int
    workflow_id: int | None
    model_id: int | None
    environment: str
    estimated_cost_nanos: int | None
    estimated_tokens: int
    api_key_id: int | None
    # What the estimate was made of (issue 11): the safety factor's inputs and the estimate at the
    # requested model and output limit when controls changed them (savings).
    input_count_estimated: bool = False
    estimated_input_tokens: int | None = None
    safety_factor: Decimal | None = None
    estimate_family: str = ""
    requested_cost_nanos: int | None = None


def reserve(
    spec: ReservationSpec,
    *,
    amounts: dict[int, int],
    read: Sequence[int] = (),
    unchecked: frozenset[int] = frozenset(),
    ttl_seconds: int,
    now: datetime,
) -> tuple[HeldReservation, dict[int, WindowTotals]]:
    """Hold each amount on its window if it fits under the hard limit, and record the reservation and
    its holds; all or nothing. Raises WindowFull (nothing held) when a window has no room. Windows in
    `unchecked` take the hold without the limit check (an approved run over a require-approval limit).

    Returns the reservation and the windows' totals after the hold (the held windows and `read`, the
    matching windows without a hard limit), for the answer's headroom report.
    """
    reservation = HeldReservation(pk=uuid.uuid4(), expires_at=now + timedelta(seconds=ttl_seconds))
    ids = sorted(amounts)
    if connection.vendor == "postgresql":
        args = [
            reservation.pk,
            spec.tenant_id,
            spec.workflow_id,
            spec.model_id,
            spec.environment,
            spec.estimated_cost_nanos,
            spec.estimated_tokens,
            now,
            reservation.expires_at,
            spec.api_key_id,
            ids,
            [amounts[i] for i in ids],
            [i not in unchecked for i in ids],
            list(read),
            settings.PREFLIGHT_ASYNC_COMMIT and bool(ids),
            spec.input_count_estimated,
            spec.estimated_input_tokens,
            spec.safety_factor,
            spec.estimate_family,
            spec.requested_cost_nanos,
        ]
        try:
            # Outside a transaction this single statement is its own transaction: no BEGIN/COMMIT
            # round trips, and the hot window rows are locked only while it runs and commits.
            with transaction.atomic() if connection.in_atomic_block else nullcontext():
                with prepared_cursor() as cursor:
                    cursor.execute(_RESERVE_SQL, args)
                    rows = cursor.fetchall()
        except DatabaseError as exc:
            message = str(exc)
            if "budget_window_full:" not in message:
                raise
            raise WindowFull(int(message.split("budget_window_full:", 1)[1].split()[0])) from None
        return reservation, {row[0]: tuple(row[1:5]) for row in rows}
    with transaction.atomic():
        for window_id in ids:
            rows = BudgetWindow.objects.filter(pk=window_id)
            if window_id not in unchecked:
                rows = rows.filter(hard_limit__gte=F("spent") + F("reserved") + amounts[window_id])
            if not rows.update(reserved=F("reserved") + amounts[window_id]):
                raise WindowFull(window_id)
        Reservation.objects.create(
            id=reservation.pk,
            created_at=now,
            expires_at=reservation.expires_at,
            tenant_id=spec.tenant_id,
            workflow_id=spec.workflow_id,
            model_id=spec.model_id,
            environment=spec.environment,
            estimated_cost_nanos=spec.estimated_cost_nanos,
            estimated_tokens=spec.estimated_tokens,
            api_key_id=spec.api_key_id,
            input_count_estimated=spec.input_count_estimated,
            estimated_input_tokens=spec.estimated_input_tokens,
            safety_factor=spec.safety_factor,
            estimate_family=spec.estimate_family,
            requested_cost_nanos=spec.requested_cost_nanos,
        )
        ReservationHold.objects.bulk_create(
            [ReservationHold(reservation_id=reservation.pk, window_id=w, amount=amounts[w]) for w in ids]
        )
    totals = BudgetWindow.objects.filter(pk__in=[*ids, *read]).values_list(
        "pk", "spent", "reserved", "soft_limit", "hard_limit"
    )
    return reservation, {pk: (spent, reserved, soft, hard) for pk, spent, reserved, soft, hard in totals}


# budgets_reserve() (migrations 0003 and 0011) does the whole write in one statement: the conditional UPDATE of
# each window in id order (the order ingest uses: no deadlocks), raising `budget_window_full:<id>`
# (which undoes the statement) when one has no room, then the reservation and its holds. With
# PREFLIGHT_ASYNC_COMMIT its commit does not wait for the WAL flush (docs/budgets.md has the trade-off).
# The row locks are held from the first UPDATE to that commit, so nothing else runs inside that span.
_RESERVE_SQL = (
    "SELECT * FROM budgets_reserve(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
    "%s::bigint[], %s::bigint[], %s::boolean[], %s::bigint[], %s, %s, %s, %s::numeric, %s, %s)"
)


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
