"""finops reaches budgets only through hooks budgets registers (DESIGN.md section 3; the import check is
tests/test_architecture.py), and works without them."""

from datetime import UTC, datetime

import pytest

from budgets.models import Budget, BudgetWindow
from budgets.services.demo import budgets_demo_seed
from budgets.services.windows import budgets_charge
from finops import hooks
from finops.models import UsageRecord
from finops.services import seed

from ..budgets.factories import BudgetFactory

NOW = datetime(2026, 3, 4, 15, 37, 12, tzinfo=UTC)


def _record(request_id, **fields):
    return {"request_id": request_id, "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 200, **fields}


def test_budgets_registers_its_charger_and_demo_seeder():
    assert hooks.usage_charger is budgets_charge
    assert budgets_demo_seed in hooks.demo_seeders


def test_one_usage_charger_at_a_time(monkeypatch):
    monkeypatch.setattr(hooks, "usage_charger", None)
    hooks.usage_charger_register(budgets_charge)
    hooks.usage_charger_register(budgets_charge)  # ready() running twice changes nothing

    with pytest.raises(RuntimeError, match="already registered"):
        hooks.usage_charger_register(lambda charges, *, now: None)
    assert hooks.usage_charger is budgets_charge


def test_ingest_charges_budget_windows_through_the_registered_charger(api_a, catalog, tenant_a, monkeypatch):
    budget = BudgetFactory(tenant=tenant_a, soft_limit=10**12)
    seen = []

    def charger(charges, *, now):
        seen.extend(charges)
        budgets_charge(charges, now=now)

    monkeypatch.setattr(hooks, "usage_charger", charger)
    response = api_a.client.post("/api/v1/usage", {"records": [_record("r1"), _record("r2")]}, format="json")

    assert response.status_code == 200, response.content
    stored = dict(UsageRecord.objects.filter(tenant=tenant_a).values_list("request_id", "id"))
    assert sorted((c.usage_id, c.cost_nanos, c.tokens) for c in seen) == sorted(
        (pk, 4_500_000, 1200) for pk in stored.values()
    )
    assert BudgetWindow.objects.get(budget=budget).spent == 2 * 4_500_000


def test_ingest_without_a_usage_charger_stores_and_prices_records(api_a, catalog, tenant_a, monkeypatch):
    budget = BudgetFactory(tenant=tenant_a, soft_limit=10**12)
    monkeypatch.setattr(hooks, "usage_charger", None)

    response = api_a.client.post("/api/v1/usage", {"records": [_record("r1")]}, format="json")

    assert response.status_code == 200, response.content
    item = response.json()["items"][0]
    assert (item["status"], item["cost_usd"], item["priced"]) == ("accepted", "0.004500000", True)
    assert UsageRecord.objects.get(tenant=tenant_a, request_id="r1").cost_nanos == 4_500_000
    assert not BudgetWindow.objects.filter(budget=budget).exists()


def test_demo_seed_runs_the_registered_seeders_once_its_usage_is_stored(db, monkeypatch):
    seed.catalog_seed()
    calls = []

    def seeder(*, now):
        calls.append((now, UsageRecord.objects.filter(request_id__startswith=seed.DEMO_REQUEST_PREFIX).count()))

    monkeypatch.setattr(hooks, "demo_seeders", [seeder])
    summary = seed.demo_seed(days=1, now=NOW)

    assert calls == [(NOW, summary.records_total)] and summary.records_total > 0
    assert not Budget.objects.exists()  # budgets' own seeder was not registered in this run
