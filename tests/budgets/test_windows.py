"""Windows: calendar periods in a time zone, and ingest counting usage against every matching budget."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from budgets.models import BudgetWindow
from budgets.periods import period_bounds

from ..factories import WorkflowFactory
from .factories import BudgetFactory


def _utc(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "tz", "at", "start", "end"),
    [
        ("day", "UTC", _utc(2026, 3, 5, 13), _utc(2026, 3, 5), _utc(2026, 3, 6)),
        # Berlin midnight is 23:00 UTC in winter; the spring-forward day lasts 23 hours.
        ("day", "Europe/Berlin", _utc(2026, 3, 29, 12), _utc(2026, 3, 28, 23), _utc(2026, 3, 29, 22)),
        ("week", "UTC", _utc(2026, 11, 29, 12), _utc(2026, 11, 23), _utc(2026, 11, 30)),
        ("month", "America/New_York", _utc(2026, 12, 1, 3), _utc(2026, 11, 1, 4), _utc(2026, 12, 1, 5)),
        ("month", "UTC", _utc(2026, 12, 31, 23, 59), _utc(2026, 12, 1), _utc(2027, 1, 1)),
    ],
)
def test_period_bounds_are_local_midnights(period, tz, at, start, end):
    assert period_bounds(period, tz, at) == (start, end)


def test_consecutive_periods_leave_no_gap_across_daylight_saving():
    at = _utc(2026, 10, 20)
    for _ in range(20):
        start, end = period_bounds("day", "Europe/Berlin", at)
        following, _ = period_bounds("day", "Europe/Berlin", end)
        assert following == end
        at = end


def _record(request_id, **fields):
    return {"request_id": request_id, "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 200, **fields}


def test_ingest_counts_each_record_against_every_matching_budget(api_a, catalog, tenant_a, tenant_b):
    WorkflowFactory(slug="summary")
    everyone = BudgetFactory(tenant=None, soft_limit=10**12)
    acme = BudgetFactory(tenant=tenant_a, soft_limit=10**12)
    summary_prod = BudgetFactory(
        tenant=tenant_a, workflow=WorkflowFactory(slug="summary"), environment="prod", soft_limit=1
    )
    tokens = BudgetFactory(tenant=tenant_a, metric="tokens", soft_limit=1)
    premium = BudgetFactory(tier=catalog["o3"].tier, soft_limit=1)
    globex = BudgetFactory(tenant=tenant_b, soft_limit=1)

    records = [
        _record("r1", workflow="summary"),
        _record("r2", workflow="summary", environment="dev"),
        _record("r3", workflow="other"),
    ]
    response = api_a.client.post("/api/v1/usage", {"records": records}, format="json")
    assert response.status_code == 200, response.content
    # A replay changes nothing.
    api_a.client.post("/api/v1/usage", {"records": records}, format="json")

    spent = {w.budget_id: w.spent for w in BudgetWindow.objects.all()}
    per_record = 4_500_000  # 1000 * $2.50/M + 200 * $10/M
    assert spent[everyone.pk] == spent[acme.pk] == 3 * per_record
    assert spent[summary_prod.pk] == per_record
    assert spent[tokens.pk] == 3 * 1200
    assert premium.pk not in spent and globex.pk not in spent


def test_ingest_updates_each_window_once_per_batch(api_a, catalog, tenant_a):
    BudgetFactory(tenant=tenant_a, soft_limit=10**12)
    BudgetFactory(tenant=None, soft_limit=10**12)
    records = [_record(f"r{i}") for i in range(50)]

    with CaptureQueriesContext(connection) as queries:
        api_a.client.post("/api/v1/usage", {"records": records}, format="json")

    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('UPDATE "budgets_budgetwindow"')]
    assert len(updates) == 2


def test_a_late_record_counts_in_the_window_of_its_own_period(api_a, catalog, tenant_a):
    budget = BudgetFactory(tenant=tenant_a, period="day", soft_limit=10**12)
    yesterday = timezone.now() - timedelta(days=1)

    api_a.client.post(
        "/api/v1/usage",
        {"records": [_record("late", occurred_at=yesterday.isoformat()), _record("now")]},
        format="json",
    )

    windows = list(BudgetWindow.objects.filter(budget=budget).order_by("starts_at"))
    assert [w.spent for w in windows] == [4_500_000, 4_500_000]
    assert windows[0].ends_at == windows[1].starts_at


def test_unpriced_usage_counts_tokens_but_no_cost_until_priced(api_a, catalog, tenant_a):
    cost = BudgetFactory(tenant=tenant_a, soft_limit=10**12)
    tokens = BudgetFactory(tenant=tenant_a, metric="tokens", soft_limit=10**12)

    api_a.client.post("/api/v1/usage", _record("u1", model="mystery-model"), format="json")

    spent = {w.budget_id: w.spent for w in BudgetWindow.objects.all()}
    assert spent[cost.pk] == 0
    assert spent[tokens.pk] == 1200
