"""Budgets, controls and approvals APIs: who may do what, and the tenant boundary on every endpoint."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from budgets.models import ApprovalRequest, Budget, BudgetWindow, Control
from tenants.models import AuditEvent, Membership

from ..factories import MembershipFactory, UserFactory
from .factories import BudgetFactory


def _person(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def admin_a(tenant_a):
    return MembershipFactory(tenant=tenant_a, role=Membership.Role.ADMIN, user=UserFactory(username="admin-a")).user


def test_tenant_key_creates_a_budget_for_its_own_tenant(api_a, tenant_a, catalog):
    response = api_a.client.post(
        "/api/v1/budgets",
        {"name": "Acme monthly", "soft_limit": "400.00", "hard_limit": "500.00", "time_zone": "Europe/Berlin"},
        format="json",
    )

    assert response.status_code == 201, response.content
    out = response.json()
    assert out["tenant"] == "acme"
    assert out["hard_limit"] == "500.000000000"
    assert out["window"]["spent"] == "0.000000000"
    budget = Budget.objects.get(pk=out["id"])
    assert budget.hard_limit == 500 * 10**9
    assert AuditEvent.objects.filter(action="budget.create", target_id=str(budget.pk)).exists()


def test_tenant_key_cannot_create_a_budget_for_another_tenant(api_a, tenant_b):
    response = api_a.client.post(
        "/api/v1/budgets", {"name": "sneaky", "tenant": "globex", "hard_limit": "1.00"}, format="json"
    )

    assert response.status_code == 404
    assert not Budget.objects.exists()


def test_budgets_of_another_tenant_are_invisible_and_answer_404(api_a, api_b, tenant_b):
    theirs = BudgetFactory(tenant=tenant_b, hard_limit=10**9)
    platform_wide = BudgetFactory(tenant=None, hard_limit=10**9)

    listed = api_a.client.get("/api/v1/budgets").json()["results"]
    assert listed == []
    for url in (f"/api/v1/budgets/{theirs.pk}", f"/api/v1/budgets/{platform_wide.pk}"):
        assert api_a.client.get(url).status_code == 404
        assert api_a.client.patch(url, {"name": "x"}, format="json").status_code == 404
        assert api_a.client.delete(url).status_code == 404
    assert [b["id"] for b in api_b.client.get("/api/v1/budgets").json()["results"]] == [theirs.pk]


def test_platform_key_sees_all_and_creates_platform_wide_budgets(api_platform, tenant_a, tenant_b):
    BudgetFactory(tenant=tenant_a, hard_limit=1)
    BudgetFactory(tenant=tenant_b, hard_limit=1)

    created = api_platform.client.post(
        "/api/v1/budgets", {"name": "Everything", "metric": "tokens", "hard_limit": 5_000_000}, format="json"
    )

    assert created.status_code == 201, created.content
    assert created.json()["tenant"] is None and created.json()["hard_limit"] == 5_000_000
    assert len(api_platform.client.get("/api/v1/budgets").json()["results"]) == 3
    # One tenant's budgets and the platform-wide one, which applies to it too (the pages' rule).
    assert len(api_platform.client.get("/api/v1/budgets?tenant=acme").json()["results"]) == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x"}, "hard_limit"),
        ({"name": "x", "soft_limit": "9.00", "hard_limit": "5.00"}, "soft_limit"),
        ({"name": "x", "hard_limit": 5.5}, "hard_limit"),
        ({"name": "x", "hard_limit": "-1"}, "hard_limit"),
        ({"name": "x", "hard_limit": "0.0000000001"}, "hard_limit"),
        ({"name": "x", "hard_limit": "5", "time_zone": "Mars/Olympus"}, "time_zone"),
        ({"name": "x", "hard_limit": "5", "workflow": "nope"}, "workflow"),
        ({"name": "x", "hard_limit": "5", "policy": [{"at": "soft", "percent": 50, "kind": "explode"}]}, "policy"),
        ({"name": "x", "metric": "tokens", "hard_limit": "12.5"}, "hard_limit"),
    ],
)
def test_bad_budgets_are_400_naming_the_field(api_a, body, field):
    response = api_a.client.post("/api/v1/budgets", body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["details"]


def test_changing_limits_moves_the_open_window_at_once(api_a, tenant_a, catalog):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=1)
    assert (
        api_a.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 10}, format="json").json()[
            "decision"
        ]
        == "deny"
    )

    response = api_a.client.patch(f"/api/v1/budgets/{budget.pk}", {"hard_limit": "10.00"}, format="json")

    assert response.status_code == 200, response.content
    assert BudgetWindow.objects.get(budget=budget).hard_limit == 10 * 10**9
    assert (
        api_a.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 10}, format="json").json()[
            "decision"
        ]
        == "allow"
    )


def test_retiring_a_budget_keeps_it_and_ends_its_controls(api_a, tenant_a):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=10**9)
    window = BudgetWindow.objects.create(
        budget=budget, starts_at=timezone.now() - timedelta(days=1), ends_at=timezone.now() + timedelta(days=1)
    )
    Control.objects.create(
        tenant=tenant_a,
        kind="deny",
        source="budget",
        budget=budget,
        window=window,
        reason="r",
        starts_at=timezone.now() - timedelta(hours=1),
        ends_at=window.ends_at,
    )

    assert api_a.client.delete(f"/api/v1/budgets/{budget.pk}").status_code == 204

    budget.refresh_from_db()
    assert budget.is_active is False
    assert Control.objects.get(budget=budget).ends_at <= timezone.now()
    assert AuditEvent.objects.filter(action="control.end").count() == 1


def test_people_need_the_admin_role_to_manage_budgets(viewer_a, admin_a, tenant_a):
    as_viewer = _person(viewer_a).post("/api/v1/budgets", {"name": "v", "hard_limit": "5"}, format="json")
    as_admin = _person(admin_a).post("/api/v1/budgets", {"name": "a", "hard_limit": "5"}, format="json")

    assert as_viewer.status_code == 403
    assert as_admin.status_code == 201
    assert _person(viewer_a).get("/api/v1/budgets").status_code == 200


def test_keys_need_the_manage_scope_to_change_budgets(make_key, tenant_a):
    reader = make_key(tenant_a, scopes="read")

    assert reader.client.get("/api/v1/budgets").status_code == 200
    assert reader.client.post("/api/v1/budgets", {"name": "r", "hard_limit": "5"}, format="json").status_code == 403


# Controls


def test_operator_adds_and_ends_a_manual_control_that_preflight_applies(operator, api_a, tenant_a, catalog):
    person = _person(operator)
    created = person.post(
        "/api/v1/controls",
        {"kind": "cap_output_tokens", "tenant": "acme", "params": {"max_output_tokens": 256}, "reason": "INC-42"},
        format="json",
    )
    assert created.status_code == 201, created.content
    capped = api_a.client.post(
        "/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 4000}, format="json"
    ).json()
    assert capped["max_output_tokens"] == 256
    assert capped["controls"][0]["reason"] == "INC-42"

    ended = person.post(f"/api/v1/controls/{created.json()['id']}/end", {"reason": "fixed"}, format="json")

    assert ended.status_code == 200 and ended.json()["active"] is False
    assert (
        person.post(f"/api/v1/controls/{created.json()['id']}/end", {"reason": "again"}, format="json").status_code
        == 409
    )
    free = api_a.client.post(
        "/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 4000}, format="json"
    ).json()
    assert free["max_output_tokens"] == 4000
    assert list(AuditEvent.objects.filter(action__startswith="control.").values_list("action", flat=True)) == [
        "control.end",
        "control.start",
    ]


def test_tenant_callers_see_their_controls_but_cannot_add_or_end_them(api_a, api_b, admin_a, tenant_a, tenant_b):
    mine = Control.objects.create(tenant=tenant_a, kind="deny", source="manual", reason="a", starts_at=timezone.now())
    theirs = Control.objects.create(tenant=tenant_b, kind="deny", source="manual", reason="b", starts_at=timezone.now())

    assert [c["id"] for c in api_a.client.get("/api/v1/controls?active=true").json()["results"]] == [mine.pk]
    assert api_a.client.post(f"/api/v1/controls/{theirs.pk}/end", {"reason": "x"}, format="json").status_code == 404
    assert api_a.client.post(f"/api/v1/controls/{mine.pk}/end", {"reason": "x"}, format="json").status_code == 403
    assert (
        _person(admin_a)
        .post("/api/v1/controls", {"kind": "deny", "tenant": "acme", "reason": "x"}, format="json")
        .status_code
        == 403
    )
    assert [c["id"] for c in api_b.client.get("/api/v1/controls").json()["results"]] == [theirs.pk]


def test_manual_control_input_is_checked(operator):
    person = _person(operator)

    bad_params = person.post(
        "/api/v1/controls",
        {"kind": "cap_output_tokens", "params": {"max_output_tokens": 0}, "reason": "x"},
        format="json",
    )
    past = person.post(
        "/api/v1/controls", {"kind": "deny", "reason": "x", "ends_at": "2020-01-01T00:00:00Z"}, format="json"
    )

    assert bad_params.status_code == 400 and "params" in bad_params.json()["error"]["details"]
    assert past.status_code == 400


# Approvals


def _approval(tenant, **fields):
    now = timezone.now()
    return ApprovalRequest.objects.create(tenant=tenant, created_at=now, expires_at=now + timedelta(hours=1), **fields)


def test_approvals_are_decided_once_by_people_of_the_tenant(api_a, viewer_a, tenant_a, tenant_b):
    approver = MembershipFactory(
        tenant=tenant_a, role=Membership.Role.APPROVER, user=UserFactory(username="approver-a")
    ).user
    mine, theirs = _approval(tenant_a), _approval(tenant_b)

    assert api_a.client.post(f"/api/v1/approvals/{mine.pk}/approve", {}, format="json").status_code == 403
    assert _person(viewer_a).post(f"/api/v1/approvals/{mine.pk}/approve", {}, format="json").status_code == 403
    assert _person(approver).post(f"/api/v1/approvals/{theirs.pk}/approve", {}, format="json").status_code == 404
    rejected = _person(approver).post(f"/api/v1/approvals/{mine.pk}/reject", {"comment": "too big"}, format="json")
    again = _person(approver).post(f"/api/v1/approvals/{mine.pk}/approve", {}, format="json")

    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert again.status_code == 409
    assert AuditEvent.objects.filter(action="approval.rejected").count() == 1
    assert [a["id"] for a in api_a.client.get("/api/v1/approvals").json()["results"]] == [str(mine.pk)]
    assert api_a.client.get(f"/api/v1/approvals/{theirs.pk}").status_code == 404


def test_an_expired_request_cannot_be_approved(operator, tenant_a):
    approval = _approval(tenant_a)
    ApprovalRequest.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = _person(operator).post(f"/api/v1/approvals/{approval.pk}/approve", {}, format="json")

    assert response.status_code == 409
    assert "expired" in response.json()["error"]["message"]


def test_the_expiry_job_expires_stale_approvals_and_reservations(tenant_a):
    from budgets.tasks import expire_reservations

    stale = _approval(tenant_a)
    ApprovalRequest.objects.filter(pk=stale.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    fresh = _approval(tenant_a)

    expire_reservations()

    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert (stale.status, fresh.status) == ("expired", "pending")
