"""The leaks an attack on a running instance found before the one tenant scope, each attacked again.

- another tenant's auto-discovered workflow in the budget form and in `POST /api/v1/budgets`;
- the operators' platform-wide channels (targets, delivery errors) on a tenant's alerts page;
- a platform-wide budget's spend in a tenant's preflight answer and reasons;
- a viewer writing through a session (ingest, preflight, release).
"""

from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from budgets.models import Alert, Budget, Notification, NotificationChannel, Reservation
from budgets.services.budgets import budget_create
from budgets.services.ladder import budgets_evaluate
from finops.models import UsageRecord
from finops.services.rollups import rollups_refresh
from tenants.models import Membership

from ..factories import MembershipFactory, UserFactory

USD = 10**9
B_FLOW = "globex-secret-flow"


def _session(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def admin_a(tenant_a):
    return MembershipFactory(tenant=tenant_a, role=Membership.Role.ADMIN, user=UserFactory(username="admin-a")).user


@pytest.fixture
def b_used_a_workflow(api_b, catalog):
    response = api_b.client.post(
        "/api/v1/usage",
        {"request_id": "b-1", "workflow": B_FLOW, "model": "gpt-4o", "input_tokens": 10, "output_tokens": 1},
        format="json",
    )
    assert response.status_code == 200
    rollups_refresh()


def test_another_tenants_workflow_answers_like_a_missing_one(api_a, admin_a, b_used_a_workflow):
    body = {"name": "probe", "hard_limit": "10.00"}
    theirs = api_a.client.post("/api/v1/budgets", {**body, "workflow": B_FLOW}, format="json")
    missing = api_a.client.post("/api/v1/budgets", {**body, "workflow": "no-such-flow"}, format="json")
    assert theirs.status_code == missing.status_code == 400
    assert theirs.json()["error"]["details"] == {"workflow": [f"No workflow '{B_FLOW}'."]}
    assert not Budget.objects.exists()
    form = _session(admin_a).get("/budgets/add/").content.decode()
    assert B_FLOW not in form


def test_the_tenant_that_used_a_workflow_sees_it(api_b, tenant_b, b_used_a_workflow):
    created = api_b.client.post(
        "/api/v1/budgets", {"name": "flow", "hard_limit": "10.00", "workflow": B_FLOW}, format="json"
    )
    assert created.status_code == 201 and created.json()["workflow"] == B_FLOW


def test_tenants_never_see_the_operators_channels(viewer_a, operator, tenant_a):
    alert = Alert.objects.create(
        kind=Alert.Kind.SOFT_LIMIT, level=85, tenant=tenant_a, subject="Acme 85%", created_at=timezone.now()
    )
    ops = NotificationChannel.objects.create(tenant=None, kind="webhook", target="https://pager.ops.internal/hook")
    own = NotificationChannel.objects.create(tenant=tenant_a, kind="email", target="finance@acme.example")
    for channel, error in ((ops, "connection refused by pager.ops.internal"), (own, "")):
        Notification.objects.create(
            alert=alert, channel=channel, status=Notification.Status.FAILED, next_attempt_at=alert.created_at,
            last_error=error,
        )
    tenant_page = _session(viewer_a).get("/alerts/").content.decode()
    assert "finance@acme.example" in tenant_page
    assert "pager.ops.internal" not in tenant_page
    operator_page = _session(operator).get("/alerts/").content.decode()
    assert "pager.ops.internal" in operator_page


def test_preflight_shows_a_tenant_that_a_platform_budget_applied_not_its_spend(
    api_a, api_b, api_platform, tenant_a, tenant_b, catalog
):
    budget_create(
        name="Platform daily", tenant=None, period="day", soft_limit=1 * USD, hard_limit=1000 * USD, time_zone="UTC"
    )
    # Tenant b spends $2.50 (over the platform budget's soft limit, so its ladder starts a control).
    for i in range(5):
        api_b.client.post(
            "/api/v1/usage",
            {"request_id": f"b-{i}", "model": "gpt-4o", "input_tokens": 200_000, "output_tokens": 0},
            format="json",
        )
    budgets_evaluate()
    answer = api_a.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 100}, format="json").json()
    (platform,) = [b for b in answer["budgets"] if b["name"] == "Platform daily"]
    assert platform["platform_wide"] is True
    assert platform["spent"] is platform["reserved"] is platform["hard_limit"] is platform["soft_limit"] is None
    assert Decimal(platform["remaining"]) > 0
    text = str(answer)
    assert "2.50" not in text and "$1.00" not in text and "1,000.00" not in text, text
    # Operators' keys still see the platform budget's totals.
    seen = api_platform.client.post(
        "/api/v1/preflight", {"tenant": "acme", "model": "gpt-4o", "input_tokens": 100}, format="json"
    ).json()
    (full,) = [b for b in seen["budgets"] if b["name"] == "Platform daily"]
    assert Decimal(full["spent"]) >= Decimal("2.5")


def test_a_viewer_cannot_write_through_a_session(viewer_a, api_a, tenant_a, catalog):
    held = api_a.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 10}, format="json").json()
    viewer = _session(viewer_a)
    ingest = viewer.post(
        "/api/v1/usage", {"request_id": "v-1", "model": "gpt-4o", "input_tokens": 1}, format="json"
    )
    preflight = viewer.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 10}, format="json")
    release = viewer.post(f"/api/v1/reservations/{held['reservation_id']}/release", format="json")
    assert (ingest.status_code, preflight.status_code, release.status_code) == (403, 403, 403)
    assert not UsageRecord.objects.exists()
    assert Reservation.objects.get().status == Reservation.Status.HELD
    assert Reservation.objects.count() == 1
