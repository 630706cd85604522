"""POST /api/v1/preflight: decisions, reservations, settle-once and expiry, through the API."""

from datetime import timedelta

import pytest
from django.utils import timezone

from budgets.models import BudgetWindow, Reservation
from budgets.services.reservations import reservations_expire
from finops.pricing import NANOS_PER_USD

from .factories import BudgetFactory

URL = "/api/v1/preflight"
USD = NANOS_PER_USD


def _ask(api, **body):
    body.setdefault("model", "gpt-4o")
    body.setdefault("input_tokens", 1000)
    body.setdefault("max_output_tokens", 500)
    response = api.client.post(URL, body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_allow_without_budgets_reserves_nothing_and_estimates_exactly(api_a, catalog):
    out = _ask(api_a, workflow="summary")

    assert out["decision"] == "allow"
    assert out["model"] == "gpt-4o"
    # 1000 input at $2.50/M + 500 output at $10/M = $0.0025 + $0.005
    assert out["estimated_cost_usd"] == "0.007500000"
    assert out["reservation_id"]
    assert out["budgets"] == []


def test_hard_limit_reserves_and_denies_when_full(api_a, catalog, tenant_a):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=int(0.02 * USD))

    first = _ask(api_a)
    second = _ask(api_a)
    third = _ask(api_a)

    assert [first["decision"], second["decision"], third["decision"]] == ["allow", "allow", "deny"]
    window = BudgetWindow.objects.get(budget=budget)
    assert window.reserved == 2 * 7_500_000
    assert third["reservation_id"] is None
    assert "Hard limit" in " ".join(third["reasons"])
    assert first["budgets"][0]["remaining"] == "0.012500000"
