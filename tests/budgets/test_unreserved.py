"""Spend that bypassed preflight (issue 11): usage without a reservation_id on a hard-limited budget is
counted per window, shown on the budget page and in the budgets API, and alerted above the budget's
share, naming the workflows and keys that sent it."""

from datetime import timedelta

import pytest
from django.db.models import Sum
from django.test import Client
from django.utils import timezone

from budgets.models import Alert, BudgetWindow
from budgets.services.ladder import budgets_evaluate
from finops.models import UsageRecord
from finops.pricing import NANOS_PER_USD
from tests.factories import MembershipFactory, UserFactory

from .factories import BudgetFactory

pytestmark = pytest.mark.django_db


def _usage(api, request_id, *, workflow="ticket-bot", reservation_id=None, input_tokens=100_000):
    record = {
        "request_id": request_id,
        "model": "gpt-4o",
        "workflow": workflow,
        "input_tokens": input_tokens,
        "output_tokens": 1000,
        "occurred_at": (timezone.now() - timedelta(minutes=5)).isoformat(),
    }
    if reservation_id:
        record["reservation_id"] = reservation_id
    response = api.client.post("/api/v1/usage", record, format="json")
    assert response.status_code == 200, response.content


def _preflight(api):
    body = {"model": "gpt-4o", "workflow": "guarded", "input_tokens": 100_000, "max_output_tokens": 1000}
    out = api.client.post("/api/v1/preflight", body, format="json").json()
    assert out["decision"] == "allow"
    return out["reservation_id"]


@pytest.fixture
def hard(tenant_a):
    return BudgetFactory(tenant=tenant_a, name="Acme hard", hard_limit=100 * NANOS_PER_USD, unreserved_alert_pct=20)


def test_usage_without_a_reservation_is_counted_on_hard_limited_windows(api_a, tenant_a, catalog, hard):
    soft_only = BudgetFactory(tenant=tenant_a, name="Acme soft", soft_limit=100 * NANOS_PER_USD)
    _usage(api_a, "u1")
    _usage(api_a, "u2", workflow="nightly-reindex", input_tokens=300_000)
    _usage(api_a, "g1", workflow="guarded", reservation_id=_preflight(api_a))

    window = BudgetWindow.objects.get(budget=hard)
    raw = UsageRecord.objects.filter(tenant=tenant_a, reservation_id__isnull=True).aggregate(s=Sum("cost_nanos"))["s"]
    total = UsageRecord.objects.filter(tenant=tenant_a).aggregate(s=Sum("cost_nanos"))["s"]
    assert (window.unreserved_spent, window.unreserved_calls, window.spent) == (raw, 2, total)
    assert raw == 260_000_000 + 760_000_000  # (100k x 2.50 + 1k x 10) and (300k x 2.50 + 1k x 10), nano-USD
    soft_window = BudgetWindow.objects.get(budget=soft_only)
    assert (soft_window.unreserved_spent, soft_window.unreserved_calls) == (0, 0)


def test_budgets_api_shows_unreserved_spend_and_takes_the_tenants_share(api_a, tenant_a, catalog, hard):
    _usage(api_a, "u1")
    _usage(api_a, "g1", workflow="guarded", reservation_id=_preflight(api_a))
    body = api_a.client.get(f"/api/v1/budgets/{hard.pk}").json()
    assert body["window"]["unreserved_spent"] == "0.260000000"
    assert body["window"]["unreserved_calls"] == 1
    assert body["window"]["unreserved_share_pct"] == "50.00"  # 0.26 of 0.52
    assert body["unreserved_alert_pct"] == "20.00"
    changed = api_a.client.patch(f"/api/v1/budgets/{hard.pk}", {"unreserved_alert_pct": "60"}, format="json")
    assert changed.status_code == 200 and changed.json()["unreserved_alert_pct"] == "60.00"
    bad = api_a.client.patch(f"/api/v1/budgets/{hard.pk}", {"unreserved_alert_pct": "120"}, format="json")
    assert bad.status_code == 400


def test_unreserved_share_above_the_budgets_raises_one_alert_naming_workflows_and_keys(api_a, tenant_a, catalog, hard):
    _usage(api_a, "g1", workflow="guarded", reservation_id=_preflight(api_a))
    budgets_evaluate()
    assert not Alert.objects.filter(kind=Alert.Kind.UNRESERVED).exists()  # nothing bypassed yet

    _usage(api_a, "u1")
    _usage(api_a, "u2", workflow="nightly-reindex", input_tokens=300_000)
    budgets_evaluate()
    budgets_evaluate()  # once per window
    alert = Alert.objects.get(kind=Alert.Kind.UNRESERVED)
    assert alert.budget == hard and alert.level == 20 and alert.tenant == tenant_a
    assert "79.69% of spend bypassed preflight" in alert.subject  # 1.02 of 1.28
    assert "nightly-reindex $0.76 in 1 calls, ticket-bot $0.26 in 1 calls" in alert.message
    assert f"{api_a.key.name} ({api_a.key.prefix}…) $1.02 in 2 calls" in alert.message


def test_a_budget_below_its_share_or_without_an_alert_share_stays_quiet(api_a, tenant_a, catalog, hard):
    hard.unreserved_alert_pct = None
    hard.save()
    _usage(api_a, "u1")
    budgets_evaluate()
    assert not Alert.objects.filter(kind=Alert.Kind.UNRESERVED).exists()


def test_budget_page_shows_the_bypassed_spend_and_its_sources(api_a, tenant_a, catalog, hard):
    _usage(api_a, "u1")
    _usage(api_a, "g1", workflow="guarded", reservation_id=_preflight(api_a))
    user = UserFactory()
    MembershipFactory(user=user, tenant=tenant_a, role="viewer")
    client = Client()
    client.force_login(user)
    html = client.get(f"/budgets/{hard.pk}/").content.decode()
    assert "Spend that bypassed preflight" in html
    assert "$0.26" in html and "50.0%" in html and "ticket-bot" in html and api_a.key.name in html


def test_reconciliation_counts_unreserved_usage_that_did_not_come_through_ingest(api_a, tenant_a, catalog, hard):
    from budgets.services.reconcile import windows_reconcile

    _usage(api_a, "u1")  # opens the window, counted at ingest
    now = timezone.now()
    UsageRecord.objects.create(  # e.g. seeded, or stored before the budget existed
        tenant=tenant_a,
        model=catalog["gpt-4o"],
        model_name="gpt-4o",
        input_tokens=1_000_000,
        cost_nanos=2_500_000_000,
        priced=True,
        occurred_at=now - timedelta(minutes=1),
        received_at=now,
        request_id="direct",
        content_hash="0" * 32,
    )
    windows_reconcile()
    window = BudgetWindow.objects.get(budget=hard)
    assert (window.unreserved_spent, window.unreserved_calls) == (260_000_000 + 2_500_000_000, 2)
    assert window.spent == 260_000_000 + 2_500_000_000


def test_the_alert_is_listed_as_bypassed_preflight(api_a, tenant_a, catalog, hard, viewer_a):
    _usage(api_a, "u1")
    budgets_evaluate()
    client = Client()
    client.force_login(viewer_a)
    html = client.get("/alerts/").content.decode()
    assert "bypassed preflight" in html and "100.00% of spend bypassed preflight" in html
