"""Budget increases: asked by a tenant admin, decided by someone else, applied in the decision's
transaction; a current-period increase ends with its window; preflight sees the new limit at once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from budgets.models import ApprovalRequest, Budget, BudgetWindow
from budgets.services.budgets import budget_create
from tenants.models import AuditEvent, Membership

from ..factories import MembershipFactory, UserFactory

USD = 10**9
CALL = {"model": "gpt-4o", "input_tokens": 100_000, "max_output_tokens": 1000}  # $0.26


def _session(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def people(tenant_a):
    def member(role, name):
        return MembershipFactory(tenant=tenant_a, role=role, user=UserFactory(username=name)).user

    return {
        "admin": member(Membership.Role.ADMIN, "admin-a"),
        "approver": member(Membership.Role.APPROVER, "approver-a"),
        "viewer": member(Membership.Role.VIEWER, "viewer-a"),
    }


@pytest.fixture
def tight(tenant_a, catalog) -> Budget:
    return budget_create(name="Acme daily", tenant=tenant_a, period="day", hard_limit=USD // 10, time_zone="UTC")


def _ask(client, budget, **body):
    return client.post(f"/api/v1/budgets/{budget.pk}/increase", {"justification": "launch", **body}, format="json")


def test_an_approved_increase_lets_the_next_preflight_through(api_a, tight, people):
    assert api_a.client.post("/api/v1/preflight", CALL, format="json").json()["decision"] == "deny"
    asked = _ask(_session(people["admin"]), tight, hard_limit="1.00")
    assert asked.status_code == 201, asked.content
    body = asked.json()
    assert body["kind"] == "budget_increase" and body["status"] == "pending"
    assert "hard $0.10 -> $1.00" in body["reasons"][0]
    tight.refresh_from_db()
    assert tight.hard_limit == USD // 10, "nothing changes before a decision"
    # Four eyes: the admin who asked cannot approve it.
    own = _session(people["admin"]).post(f"/api/v1/approvals/{body['id']}/approve", format="json")
    assert own.status_code == 403
    approved = _session(people["approver"]).post(f"/api/v1/approvals/{body['id']}/approve", format="json")
    assert approved.status_code == 200
    tight.refresh_from_db()
    assert tight.hard_limit == USD
    assert BudgetWindow.objects.get(budget=tight).hard_limit == USD
    assert api_a.client.post("/api/v1/preflight", CALL, format="json").json()["decision"] == "allow"
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"approval.open", "approval.approved", "budget.update"} <= actions


def test_a_current_period_increase_ends_with_its_window(api_a, tight, people):
    asked = _ask(api_a.client, tight, hard_limit="1.00", current_window_only=True).json()
    _session(people["approver"]).post(f"/api/v1/approvals/{asked['id']}/approve", format="json")
    tight.refresh_from_db()
    window = BudgetWindow.objects.get(budget=tight)
    assert tight.hard_limit == USD // 10 and window.hard_limit == USD
    assert AuditEvent.objects.filter(action="budget_window.increase", target_id=str(window.pk)).exists()
    assert api_a.client.post("/api/v1/preflight", CALL, format="json").json()["decision"] == "allow"
    # The next period opens with the budget's own limit again.
    tomorrow = timezone.now() + timedelta(days=1)
    from budgets.services.windows import windows_open

    start, end = window.ends_at, window.ends_at + timedelta(days=1)
    nxt = windows_open([(tight, start, end)])[(tight.pk, start)]
    assert nxt.hard_limit == USD // 10 and tomorrow > start


def test_an_increase_whose_window_ended_is_not_applied(api_a, tight, people):
    asked = _ask(api_a.client, tight, hard_limit="1.00", current_window_only=True).json()
    BudgetWindow.objects.filter(budget=tight).update(ends_at=timezone.now() - timedelta(seconds=1))
    late = _session(people["approver"]).post(f"/api/v1/approvals/{asked['id']}/approve", format="json")
    assert late.status_code == 409 and late.json()["error"]["code"] == "window_ended"
    assert ApprovalRequest.objects.get(pk=asked["id"]).status == "pending", "the decision was undone with it"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"hard_limit": "0.05"}, "hard_limit"),  # a decrease is not an increase
        ({}, "hard_limit"),
        ({"soft_limit": "5.00"}, "soft_limit"),  # soft above hard
        ({"hard_limit": "1.00", "justification": ""}, "justification"),
        ({"hard_limit": 1.5}, "hard_limit"),  # money as a float
    ],
)
def test_bad_increase_requests_are_refused_and_store_nothing(api_a, tight, body, field):
    response = _ask(api_a.client, tight, **body)
    assert response.status_code == 400 and field in response.json()["error"]["details"], response.content
    assert not ApprovalRequest.objects.exists()


def test_who_may_ask(api_a, api_b, tight, people, tenant_a, make_key):
    assert _ask(_session(people["viewer"]), tight, hard_limit="1.00").status_code == 403
    assert _ask(_session(people["approver"]), tight, hard_limit="1.00").status_code == 403
    assert _ask(api_b.client, tight, hard_limit="1.00").status_code == 404  # another tenant's budget
    read_only = make_key(tenant_a, "read", "dashboard")
    assert _ask(read_only.client, tight, hard_limit="1.00").status_code == 403
    platform_wide = budget_create(name="Platform", tenant=None, hard_limit=USD)
    assert _ask(api_a.client, platform_wide, hard_limit="2.00").status_code == 404
    assert not ApprovalRequest.objects.exists()


def test_the_budget_page_asks_and_the_queue_shows_it(tight, people):
    admin = _session(people["admin"])
    page = admin.get(f"/budgets/{tight.pk}/").content.decode()
    assert "Ask for more room" in page
    assert "Ask for more room" not in _session(people["viewer"]).get(f"/budgets/{tight.pk}/").content.decode()
    response = admin.post(
        f"/budgets/{tight.pk}/increase/", {"hard_limit": "$2.00", "justification": "Black Friday traffic"}
    )
    assert response.status_code == 302 and response["Location"].startswith("/approvals/")
    approval = ApprovalRequest.objects.get()
    assert approval.new_hard_limit == 2 * USD and approval.requested_by_id == people["admin"].pk
    queue = _session(people["approver"]).get("/approvals/").content.decode()
    assert "Budget increase:" in queue and "Acme daily" in queue
    assert f'action="/approvals/{approval.pk}/approve/' in queue
    assert f'action="/approvals/{approval.pk}/approve/' not in admin.get("/approvals/").content.decode()
    refused = admin.post(f"/budgets/{tight.pk}/increase/", {"hard_limit": "0.01", "justification": "x"})
    assert refused.status_code == 302 and ApprovalRequest.objects.count() == 1
