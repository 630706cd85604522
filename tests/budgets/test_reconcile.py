"""Reconciliation: window spent and reserved recomputed from rollups and raw records, drift corrected,
windows in non-UTC time zones cut at local midnight, dirty days read from raw records."""

import itertools
from datetime import UTC, timedelta

import pytest
from django.db.models import Sum
from django.utils import timezone

from budgets.models import BudgetWindow, Reservation, ReservationHold
from budgets.periods import period_bounds
from budgets.services.reconcile import window_spent, windows_reconcile
from budgets.services.windows import windows_open
from finops.models import Environment, RollupDirtyDay, UsageRecord, UsageRollup
from finops.services.rollups import rollup_mark_dirty, rollups_refresh

from ..factories import WorkflowFactory
from .factories import BudgetFactory

_ids = itertools.count(1)


def _record(tenant, at, *, cost=1_000_000, model=None, workflow=None, env=Environment.PROD, tokens=(100, 10, 0, 50, 5)):
    n = next(_ids)
    inp, cached, write, out, reasoning = tokens
    # Marked dirty like ingest does, in the same breath as the record.
    rollup_mark_dirty(pairs={(tenant.pk, at.astimezone(UTC).date())})
    return UsageRecord.objects.create(
        tenant=tenant,
        workflow=workflow,
        model=model,
        model_name=model.name if model else "unknown-model",
        environment=env,
        input_tokens=inp,
        cached_input_tokens=cached,
        cache_write_tokens=write,
        output_tokens=out,
        reasoning_tokens=reasoning,
        cost_nanos=cost,
        priced=cost is not None,
        occurred_at=at,
        received_at=at,
        request_id=f"req-{n}",
        content_hash=f"{n:032d}",
    )


def _window(budget, now):
    start, end = period_bounds(budget.period, budget.time_zone, now)
    return windows_open([(budget, start, end)])[(budget.pk, start)]


def _raw_cost(budget, window, **extra):
    rows = UsageRecord.objects.filter(occurred_at__gte=window.starts_at, occurred_at__lt=window.ends_at, **extra)
    if budget.tenant_id:
        rows = rows.filter(tenant_id=budget.tenant_id)
    return rows.aggregate(t=Sum("cost_nanos"))["t"] or 0


def _edge_records(tenant, start, end, model):
    """Records just outside, at and just inside both edges, at half hours, and in the middle."""
    moments = [
        start - timedelta(minutes=1),
        start,
        start + timedelta(minutes=10),
        start + timedelta(hours=3, minutes=7),
        start + (end - start) / 2,
        end - timedelta(hours=2),
        end - timedelta(minutes=10),
        end - timedelta(microseconds=1),
        end,
        end + timedelta(minutes=1),
    ]
    for i, at in enumerate(moments):
        _record(tenant, at, cost=1_000 * (i + 1) + 7, model=model)


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "Asia/Kolkata", "America/St_Johns"])
@pytest.mark.parametrize("refreshed", [True, False], ids=["rollups", "dirty-days"])
def test_spent_equals_raw_sum_at_local_midnight_edges(tenant_a, tenant_b, catalog, tz, refreshed):
    budget = BudgetFactory(tenant=tenant_a, period="month", time_zone=tz)
    now = timezone.now()
    window = _window(budget, now)
    _edge_records(tenant_a, window.starts_at, window.ends_at, catalog["gpt-4o"])
    _edge_records(tenant_b, window.starts_at, window.ends_at, catalog["gpt-4o"])  # another tenant: not counted
    if refreshed:
        rollups_refresh()
        assert not RollupDirtyDay.objects.exists()
        assert UsageRollup.objects.filter(grain="hour").exists()

    spent = window_spent(budget, window.starts_at, window.ends_at, now=now)

    expected = _raw_cost(budget, window)
    assert spent == expected
    # Eight of the ten records fall inside [start, end).
    assert expected == sum(1_000 * i + 7 for i in range(2, 9))


def test_all_tenant_budget_with_one_dirty_tenant_day(tenant_a, tenant_b, catalog):
    budget = BudgetFactory(tenant=None, period="day", time_zone="Europe/Berlin")
    now = timezone.now()
    window = _window(budget, now)
    _edge_records(tenant_a, window.starts_at, window.ends_at, catalog["gpt-4o"])
    _edge_records(tenant_b, window.starts_at, window.ends_at, catalog["gpt-4o"])
    rollups_refresh()
    # A late record for tenant b only: its day is dirty, tenant a's rollups still serve.
    _record(tenant_b, window.starts_at + timedelta(hours=5), cost=123_456_789, model=catalog["gpt-4o"])

    assert window_spent(budget, window.starts_at, window.ends_at, now=now) == _raw_cost(budget, window)


def test_drift_introduced_by_hand_is_corrected(tenant_a, catalog):
    budget = BudgetFactory(tenant=tenant_a, name="Acme monthly", hard_limit=10**12)
    now = timezone.now()
    window = _window(budget, now)
    for minutes in (1, 2, 3):
        _record(tenant_a, window.starts_at + timedelta(minutes=minutes), cost=5_000_000, model=catalog["gpt-4o"])
    rollups_refresh()
    held = Reservation.objects.create(
        tenant=tenant_a, environment="prod", created_at=now, expires_at=now + timedelta(minutes=5)
    )
    ReservationHold.objects.create(reservation=held, window=window, amount=700)
    settled = Reservation.objects.create(
        tenant=tenant_a, environment="prod", created_at=now, expires_at=now, status=Reservation.Status.SETTLED
    )
    ReservationHold.objects.create(reservation=settled, window=window, amount=900)
    BudgetWindow.objects.filter(pk=window.pk).update(spent=15_042_000, reserved=5_000)  # 42,000 too much

    result = windows_reconcile(now=now)

    window.refresh_from_db()
    assert window.spent == 15_000_000 and window.reserved == 700
    assert window.reconciled_at == now
    assert result["corrected"] == 1
    correction = result["corrections"][0]
    assert correction["budget"] == "Acme monthly"
    assert correction["spent_drift"] == 15_042_000 - 15_000_000
    assert correction["reserved_drift"] == 5_000 - 700
    # In step now: a second run corrects nothing.
    assert windows_reconcile(now=now)["corrected"] == 0


def test_ingest_and_reconcile_agree(api_a, tenant_a, catalog):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=10**12)
    now = timezone.now()
    records = [
        {
            "request_id": f"r-{i}",
            "model": "gpt-4o",
            "input_tokens": 1000 + i,
            "output_tokens": 200,
            "occurred_at": (now - timedelta(minutes=i)).isoformat(),
        }
        for i in range(5)
    ]
    assert api_a.client.post("/api/v1/usage", {"records": records}, format="json").status_code == 200
    window = BudgetWindow.objects.get(budget=budget, starts_at__lte=now, ends_at__gt=now)
    charged = window.spent
    assert charged > 0

    result = windows_reconcile(now=now)

    window.refresh_from_db()
    assert result["corrected"] == 0 and window.spent == charged == _raw_cost(budget, window)


def test_token_budget_scoped_by_workflow_environment_and_tier(tenant_a, catalog):
    summary = WorkflowFactory(slug="summary")
    standard = catalog["gpt-4o"].tier
    budget = BudgetFactory(
        tenant=tenant_a, metric="tokens", workflow=summary, environment="prod", tier=standard, time_zone="Asia/Kolkata"
    )
    now = timezone.now()
    window = _window(budget, now)
    at = window.starts_at + timedelta(minutes=45)
    _record(tenant_a, at, model=catalog["gpt-4o"], workflow=summary, tokens=(100, 20, 3, 40, 7))  # counts: 170
    _record(tenant_a, at, model=catalog["claude-sonnet-4-5"], workflow=summary, tokens=(1, 1, 1, 1, 1))  # counts: 5
    _record(tenant_a, at, model=catalog["o3"], workflow=summary, tokens=(999, 0, 0, 0, 0))  # premium tier
    _record(tenant_a, at, model=catalog["gpt-4o"], workflow=None, tokens=(999, 0, 0, 0, 0))  # other workflow
    _record(tenant_a, at, model=catalog["gpt-4o"], workflow=summary, env="dev", tokens=(999, 0, 0, 0, 0))
    _record(tenant_a, at, model=None, workflow=summary, cost=None, tokens=(999, 0, 0, 0, 0))  # unknown model

    dirty = window_spent(budget, window.starts_at, window.ends_at, now=now)
    rollups_refresh()
    clean = window_spent(budget, window.starts_at, window.ends_at, now=now)

    assert dirty == clean == 175


def test_unpriced_records_count_zero_in_cost_budgets(tenant_a, catalog):
    budget = BudgetFactory(tenant=tenant_a)
    now = timezone.now()
    window = _window(budget, now)
    _record(tenant_a, window.starts_at + timedelta(hours=1), cost=None)
    _record(tenant_a, window.starts_at + timedelta(hours=1), cost=250, model=catalog["gpt-4o"])
    rollups_refresh()

    assert window_spent(budget, window.starts_at, window.ends_at, now=now) == 250


def test_only_open_and_recently_closed_windows_of_active_budgets(tenant_a, catalog):
    now = timezone.now()
    day = BudgetFactory(tenant=tenant_a, period="day")
    current = _window(day, now)
    yesterday = _window(day, current.starts_at - timedelta(hours=1))
    old = _window(day, current.starts_at - timedelta(days=3))
    inactive = BudgetFactory(tenant=tenant_a, period="day", is_active=False)
    inactive_window = _window(inactive, now)
    BudgetWindow.objects.update(spent=999)

    result = windows_reconcile(now=now)

    assert result["windows"] == 2
    spent = dict(BudgetWindow.objects.values_list("pk", "spent"))
    assert spent[current.pk] == 0 and spent[yesterday.pk] == 0
    assert spent[old.pk] == 999 and spent[inactive_window.pk] == 999
