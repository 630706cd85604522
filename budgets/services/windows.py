"""Budget windows: which budgets a call counts against, their current windows, and charging them.

Hot paths (ingest, preflight) read budgets from an in-process snapshot rebuilt when a one-row
fingerprint query changes, like the catalog, so a request costs one small query, not a scan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection
from django.db.models import F

from budgets.models import Budget, BudgetWindow, Metric, Reservation, ReservationHold
from budgets.periods import period_bounds
from finops.hooks import Charge
from finops.snapshots import FingerprintSnapshot


@dataclass(frozen=True, slots=True)
class BudgetEntry:
    id: int
    name: str
    tenant_id: int | None
    workflow_id: int | None
    environment: str
    tier_id: int | None
    metric: str
    period: str
    time_zone: str
    soft_limit: int | None
    hard_limit: int | None
    hard_action: str

    def matches(self, tenant_id: int, workflow_id: int | None, environment: str, tier_id: int | None) -> bool:
        return (
            (self.tenant_id is None or self.tenant_id == tenant_id)
            and (self.workflow_id is None or self.workflow_id == workflow_id)
            and (not self.environment or self.environment == environment)
            and (self.tier_id is None or self.tier_id == tier_id)
        )

    def amount(self, cost_nanos: int | None, tokens: int) -> int:
        """What a call counts in this budget's unit (an unpriced call costs nothing until priced)."""
        return tokens if self.metric == Metric.TOKENS else (cost_nanos or 0)

    def bounds(self, at: datetime) -> tuple[datetime, datetime]:
        return period_bounds(self.period, self.time_zone, at)


@dataclass
class BudgetSnapshot:
    fingerprint: tuple = ()
    entries: list[BudgetEntry] = field(default_factory=list)
    # (budget id, window start) -> window id. Windows are never re-created under another id while the
    # budget exists, and deleting a budget changes the fingerprint, which starts a new snapshot.
    window_ids: dict[tuple[int, datetime], int] = field(default_factory=dict)

    def matching(
        self, tenant_id: int, workflow_id: int | None, environment: str, tier_id: int | None
    ) -> list[BudgetEntry]:
        return [b for b in self.entries if b.matches(tenant_id, workflow_id, environment, tier_id)]


FINGERPRINT_SELECT = (
    f"(SELECT COUNT(*) FROM {Budget._meta.db_table}), (SELECT MAX(updated_at) FROM {Budget._meta.db_table})"
)
FINGERPRINT_COLUMNS = 2
_FINGERPRINT_SQL = "SELECT " + FINGERPRINT_SELECT


def _build(fingerprint: tuple) -> BudgetSnapshot:
    return BudgetSnapshot(
        fingerprint=fingerprint,
        entries=[
            BudgetEntry(
                id=b.pk,
                name=b.name,
                tenant_id=b.tenant_id,
                workflow_id=b.workflow_id,
                environment=b.environment,
                tier_id=b.tier_id,
                metric=b.metric,
                period=b.period,
                time_zone=b.time_zone,
                soft_limit=b.soft_limit,
                hard_limit=b.hard_limit,
                hard_action=b.hard_action,
            )
            for b in Budget.objects.filter(is_active=True).order_by("id")
        ],
    )


_snapshot = FingerprintSnapshot(_FINGERPRINT_SQL, _build)


def get_budgets(*, fingerprint: tuple | None = None) -> BudgetSnapshot:
    """Active budgets; costs one fingerprint query and rebuilds only after a budget changed.

    A caller that read FINGERPRINT_SELECT as part of its own query passes the values instead.
    """
    return _snapshot.get(fingerprint)


def windows_open(
    keys: Iterable[tuple[BudgetEntry | Budget, datetime, datetime]],
) -> dict[tuple[int, datetime], BudgetWindow]:
    """The windows for (budget, start, end) keys, creating missing ones; keyed by (budget id, start).
    A budget is a snapshot entry or a Budget row: both carry the id and limits read here.

    Windows open lazily, on the first call or evaluation inside the period, with the budget's limits;
    concurrent openers race harmlessly on the unique (budget, starts_at) constraint.
    """
    wanted = {(b.id, start): (b, start, end) for b, start, end in keys}
    if not wanted:
        return {}
    found = _windows_select(wanted)
    missing = [v for k, v in wanted.items() if k not in found]
    if missing:
        BudgetWindow.objects.bulk_create(
            [
                BudgetWindow(
                    budget_id=b.id, starts_at=start, ends_at=end, soft_limit=b.soft_limit, hard_limit=b.hard_limit
                )
                # In key order, like every write here: two openers of the same windows wait, never deadlock.
                for b, start, end in sorted(missing, key=lambda m: (m[0].id, m[1]))
            ],
            ignore_conflicts=True,
        )
        found = _windows_select(wanted)
    return found


def window_ids_open(
    snapshot: BudgetSnapshot, keys: Iterable[tuple[BudgetEntry, datetime, datetime]]
) -> dict[tuple[int, datetime], int]:
    """Like windows_open, but only ids, remembered in the budget snapshot: no query once known."""
    known = snapshot.window_ids
    keys = list(keys)
    missing = [k for k in keys if (k[0].id, k[1]) not in known]
    if missing:
        for key, window in windows_open(missing).items():
            known[key] = window.pk
    return {(b.id, start): known[(b.id, start)] for b, start, _ in keys}


def _windows_select(wanted: dict) -> dict[tuple[int, datetime], BudgetWindow]:
    budget_ids = {k[0] for k in wanted}
    starts = {k[1] for k in wanted}
    rows = BudgetWindow.objects.filter(budget_id__in=budget_ids, starts_at__in=starts)
    return {(w.budget_id, w.starts_at): w for w in rows if (w.budget_id, w.starts_at) in wanted}


def budgets_charge(charges: list[Charge], *, now: datetime) -> None:
    """Count new usage against every matching budget's window and settle the reservations it carries.

    Registered as finops' usage charger (budgets/apps.py), so it runs inside the ingest transaction:
    one UPDATE per touched window for the whole batch (spent up by the batch's amounts, reserved down
    by the holds it settles), in window-id order so it never deadlocks with preflights, which lock
    windows in the same order. A reservation settles once: only the statement that moves it from
    `held` releases its holds, so a second record naming it (or a record arriving after it expired)
    adds its cost and releases nothing.
    """
    budgets = get_budgets()
    spent: dict[tuple[int, datetime], int] = defaultdict(int)
    # Usage that arrived without a reservation on a hard-limited budget: it bypassed preflight.
    unreserved: dict[tuple[int, datetime], list[int]] = defaultdict(lambda: [0, 0])
    keys: dict[tuple[int, datetime], tuple[BudgetEntry, datetime, datetime]] = {}
    if budgets.entries:
        bounds_cache: dict[int, tuple[datetime, datetime]] = {}
        for c in charges:
            for b in budgets.matching(c.tenant_id, c.workflow_id, c.environment, c.tier_id):
                bounds = bounds_cache.get(b.id)
                if bounds is None or not (bounds[0] <= c.occurred_at < bounds[1]):
                    bounds = bounds_cache[b.id] = b.bounds(c.occurred_at)
                start, end = bounds
                keys[(b.id, start)] = (b, start, end)
                amount = b.amount(c.cost_nanos, c.tokens)
                spent[(b.id, start)] += amount
                if c.reservation_id is None and b.hard_limit is not None:
                    bypassed = unreserved[(b.id, start)]
                    bypassed[0] += amount
                    bypassed[1] += 1

    released = _reservations_settle([c for c in charges if c.reservation_id], now=now)
    if not keys and not released:
        return
    window_ids = window_ids_open(budgets, keys.values())
    deltas: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for key, amount in spent.items():
        deltas[window_ids[key]][0] += amount
    for window_id, amount in released.items():
        deltas[window_id][1] += amount
    for key, (amount, calls) in unreserved.items():
        deltas[window_ids[key]][2] += amount
        deltas[window_ids[key]][3] += calls
    for window_id in sorted(deltas):
        add_spent, release, add_unreserved, unreserved_calls = deltas[window_id]
        if add_spent or release or unreserved_calls:
            changes = {"spent": F("spent") + add_spent, "reserved": F("reserved") - release}
            if unreserved_calls:
                changes["unreserved_spent"] = F("unreserved_spent") + add_unreserved
                changes["unreserved_calls"] = F("unreserved_calls") + unreserved_calls
            BudgetWindow.objects.filter(pk=window_id).update(**changes)


_SETTLE_SQL = (
    f"UPDATE {Reservation._meta.db_table} r SET status = 'settled', closed_at = %s, usage_record_id = v.usage_id, "
    "actual_cost_nanos = v.cost, actual_input_tokens = v.input "
    "FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[]) "
    "AS v(id, usage_id, tenant_id, cost, input) "
    "WHERE r.id = v.id AND r.tenant_id = v.tenant_id AND r.status = 'held' RETURNING r.id"
)


def _reservations_settle(charges: list[Charge], *, now: datetime) -> dict[int, int]:
    """Move the batch's held reservations to settled; returns the amounts to release per window."""
    if not charges:
        return {}
    first: dict[str, Charge] = {}
    for c in charges:
        first.setdefault(str(c.reservation_id), c)
    # A conditional UPDATE is the "once": a replay or a second record finds the reservation no longer
    # held and changes nothing. On PostgreSQL one statement for the whole batch.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _SETTLE_SQL,
                [
                    now,
                    list(first),
                    [c.usage_id for c in first.values()],
                    [c.tenant_id for c in first.values()],
                    [c.cost_nanos for c in first.values()],
                    [c.input_tokens for c in first.values()],
                ],
            )
            settled = [row[0] for row in cursor.fetchall()]
    else:
        settled = [
            reservation_id
            for reservation_id, c in first.items()
            if Reservation.objects.filter(
                pk=reservation_id, tenant_id=c.tenant_id, status=Reservation.Status.HELD
            ).update(
                status=Reservation.Status.SETTLED,
                closed_at=now,
                usage_record_id=c.usage_id,
                actual_cost_nanos=c.cost_nanos,
                actual_input_tokens=c.input_tokens,
            )
        ]
    return holds_by_window(settled)


def holds_by_window(reservation_ids: list) -> dict[int, int]:
    released: dict[int, int] = defaultdict(int)
    if reservation_ids:
        for window_id, amount in ReservationHold.objects.filter(reservation_id__in=reservation_ids).values_list(
            "window_id", "amount"
        ):
            released[window_id] += amount
    return released
