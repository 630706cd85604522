"""Two beat processes (a second one started by mistake, or two during a rolling deploy) send every periodic
task twice, and two workers may run both copies at once. Each periodic effect must still happen once:
one control per ladder rung, one alert per level, one notification per channel, one expiry per reservation,
rollups equal to the raw sums. Runs the two copies concurrently against PostgreSQL."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections

from budgets import tasks as budget_tasks
from budgets.models import Alert, BudgetWindow, Control, Notification, NotificationChannel
from finops import tasks as finops_tasks
from finops.models import TenantWorkflowRollup, UsageRecord
from finops.services.ingest import usage_ingest
from tenants.models import AuditEvent

from .factories import BudgetFactory

USD = 10**9


@pytest.fixture
def postgres_only():
    if connection.vendor != "postgresql":
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail("REQUIRE_SERVICES=1 needs DATABASE_URL on PostgreSQL")
        pytest.skip("concurrent task runs are tested on PostgreSQL (set DATABASE_URL)")


def _twice_at_once(task) -> None:
    barrier = threading.Barrier(2)

    def run(_):
        try:
            barrier.wait(timeout=30)
            return task()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(run, range(2)))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_two_beats_evaluating_budgets_at_once_start_each_control_and_alert_once(
    postgres_only, catalog, tenant_a, attempt
):
    budget = BudgetFactory(tenant=tenant_a, soft_limit=1 * USD, hard_limit=2 * USD)
    NotificationChannel.objects.create(tenant=tenant_a, kind="email", target="finops@acme.example")
    usage_ingest(
        records=[{"request_id": "big", "model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 100_000}],
        bound_tenant=tenant_a,
        api_key=None,
    )
    window = BudgetWindow.objects.get(budget=budget)
    assert window.spent > 2 * USD  # past every rung of the default policy
    connections.close_all()

    _twice_at_once(budget_tasks.evaluate_budgets)
    budget_tasks.evaluate_budgets()  # and a third, late copy

    rungs = list(Control.objects.filter(window=window).values_list("rung", flat=True))
    assert rungs and len(rungs) == len(set(rungs)), rungs
    kinds = list(Alert.objects.filter(window=window).values_list("kind", "level"))
    assert kinds and len(kinds) == len(set(kinds)), kinds
    assert Notification.objects.count() == Alert.objects.count()
    assert AuditEvent.objects.filter(action="control.start").count() == len(rungs)


@pytest.mark.django_db(transaction=True)
def test_two_beats_refreshing_rollups_at_once_leave_them_equal_to_the_raw_sums(postgres_only, catalog, tenant_a):
    usage_ingest(
        records=[
            {"request_id": f"r{i}", "workflow": "support-bot", "model": "gpt-4o", "input_tokens": 100 + i}
            for i in range(50)
        ],
        bound_tenant=tenant_a,
        api_key=None,
    )
    connections.close_all()
    _twice_at_once(finops_tasks.refresh_rollups)
    _twice_at_once(finops_tasks.refresh_rollups)
    raw = sum(UsageRecord.objects.values_list("cost_nanos", flat=True))
    rolled = sum(TenantWorkflowRollup.objects.values_list("cost_nanos", flat=True))
    assert raw > 0 and rolled == raw
