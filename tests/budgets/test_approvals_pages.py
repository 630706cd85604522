"""The approvals page: what it shows, who may approve or reject, and the tenant boundary.

Requests are written the way preflight writes them (budgets/services/preflight.py `_needs_approval`);
tenant b's carry "marker-tenant-b" in their reasons so a leak across the boundary shows in the body.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from budgets.models import ApprovalRequest
from tenants.models import AuditEvent, Membership
from tests.factories import MembershipFactory, UserFactory, WorkflowFactory

pytestmark = pytest.mark.django_db
MARKER_B = "marker-tenant-b"


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def get(client, url, status=200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.content.decode()


def request_for(tenant, *, status=ApprovalRequest.Status.PENDING, model=None, reason="", **extra) -> ApprovalRequest:
    now = timezone.now()
    fields = {
        "tenant": tenant,
        "workflow": WorkflowFactory(slug="contract-review", name="Contract review"),
        "model": model,
        "environment": "prod",
        "estimated_cost_nanos": 3_120_000_000,
        "reasons": [reason or "Approval required above $2.00: Budget 'Acme monthly' at 96% of its $500.00 hard limit"],
        "status": status,
        "created_at": now - timedelta(minutes=10),
        "expires_at": now + timedelta(hours=24),
        **extra,
    }
    return ApprovalRequest.objects.create(**fields)


@pytest.fixture
def approver_a(tenant_a):
    user = UserFactory(username="approver-a")
    return MembershipFactory(tenant=tenant_a, role=Membership.Role.APPROVER, user=user).user


@pytest.fixture
def admin_b(tenant_b):
    return MembershipFactory(tenant=tenant_b, role=Membership.Role.ADMIN, user=UserFactory(username="admin-b")).user


def test_page_lists_pending_first_then_decided_with_who_and_comment(approver_a, tenant_a, tenant_b, catalog):
    pending = request_for(tenant_a, model=catalog["o3"])
    decided = request_for(
        tenant_a,
        status=ApprovalRequest.Status.REJECTED,
        decided_by=approver_a,
        decided_at=timezone.now() - timedelta(minutes=2),
        comment="Run it on the nightly batch instead",
        reason="Hard limit: 'Acme monthly' has $1.20 left for this period, the call needs $3.12.",
    )
    request_for(tenant_b, reason=f"Globex reason {MARKER_B}")

    body = get(client_for(approver_a), "/approvals/")
    assert (
        body.index(f'data-approval="{pending.pk}"')
        < body.index("Decided")
        < body.index(f'data-approval="{decided.pk}"')
    )
    # the pending request: what would run, what it costs, why preflight held it, until when
    for text in (
        "Contract review",
        "Acme Corp (marker-tenant-a)",
        "o3",
        "prod",
        "$3.12",
        "Approval required above $2.00",
    ):
        assert text in body, text
    assert pending.expires_at.strftime("%Y-%m-%d %H:%M") in body
    assert f'action="/approvals/{pending.pk}/approve/"' in body
    assert f'formaction="/approvals/{pending.pk}/reject/"' in body
    # the decided one: its status, who decided and what they said, and no buttons
    assert '<span class="badge badge--danger">rejected</span>' in body
    assert "by approver-a" in body and "Run it on the nightly batch instead" in body
    assert f"/approvals/{decided.pk}/approve/" not in body and f"/approvals/{decided.pk}/reject/" not in body
    # the menu counts the one request still waiting; tenant b's never shows
    assert 'title="1 approval request waiting">1</span>' in body
    assert MARKER_B not in body


def test_an_expired_request_is_listed_as_expired_without_buttons(approver_a, tenant_a):
    stale = request_for(tenant_a, expires_at=timezone.now() - timedelta(minutes=1))
    body = get(client_for(approver_a), "/approvals/")
    assert "Nothing waiting: every request has been decided." in body
    assert '<span class="badge badge--muted">expired</span>' in body
    assert f"/approvals/{stale.pk}/approve/" not in body
    assert "nav-approvals-count" not in body


def test_empty_state(viewer_a, tenant_b):
    body = get(client_for(viewer_a), "/approvals/")
    assert "No approval requests" in body
    assert "Preflight opens one when a run needs a person's go-ahead" in body
    assert "nav-approvals-count" not in body


def test_approver_approves_and_it_is_audited(approver_a, tenant_a, tenant_b):
    approval = request_for(tenant_a)
    client = client_for(approver_a)
    response = client.post(f"/approvals/{approval.pk}/approve/", {"comment": "  Go ahead  "})
    assert response.status_code == 302 and response["Location"] == "/approvals/"
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.APPROVED
    assert approval.decided_by == approver_a and approval.decided_at is not None
    assert approval.comment == "Go ahead"
    event = AuditEvent.objects.get(action="approval.approved")
    assert event.actor_user == approver_a and event.tenant == tenant_a and event.target_id == str(approval.pk)

    body = get(client, "/approvals/")
    assert f"Approved the run of contract-review for {tenant_a.name}" in body
    assert f"the service&#x27;s next preflight with approval_id {approval.pk} will run" in body
    assert '<span class="badge badge--ok">approved</span>' in body and "Go ahead" in body


def test_approver_rejects_without_a_comment_and_it_is_audited(approver_a, tenant_a):
    approval = request_for(tenant_a)
    client = client_for(approver_a)
    response = client.post(f"/approvals/{approval.pk}/reject/")
    assert response.status_code == 302
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.REJECTED and approval.comment == ""
    assert AuditEvent.objects.filter(action="approval.rejected", actor_user=approver_a).count() == 1
    assert not AuditEvent.objects.filter(action="approval.approved").exists()
    body = get(client, "/approvals/")
    assert "Rejected the run of contract-review" in body


def test_operator_decides_any_tenants_request_and_keeps_the_tenant_selection(operator, tenant_a, tenant_b):
    approval = request_for(tenant_b)
    response = client_for(operator).post(f"/approvals/{approval.pk}/approve/?tenant=globex")
    assert response.status_code == 302 and response["Location"] == "/approvals/?tenant=globex"
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.APPROVED and approval.decided_by == operator


def test_deciding_twice_says_the_request_is_no_longer_pending(approver_a, tenant_a):
    approval = request_for(tenant_a)
    client = client_for(approver_a)
    client.post(f"/approvals/{approval.pk}/approve/")
    response = client.post(f"/approvals/{approval.pk}/reject/", follow=True)
    assert response.status_code == 200
    body = response.content.decode()
    assert "Nothing changed: the request for the run of contract-review" in body
    assert "is no longer pending (already approved by approver-a)" in body
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.APPROVED
    assert AuditEvent.objects.filter(action__startswith="approval.").count() == 1


def test_an_expired_request_cannot_be_approved(approver_a, tenant_a):
    approval = request_for(tenant_a, expires_at=timezone.now() - timedelta(seconds=1))
    response = client_for(approver_a).post(f"/approvals/{approval.pk}/approve/", follow=True)
    assert "is no longer pending (it expired;" in response.content.decode()
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.PENDING and approval.decided_by is None


def test_viewer_sees_the_list_without_buttons_and_gets_403(viewer_a, tenant_a):
    approval = request_for(tenant_a)
    client = client_for(viewer_a)
    body = get(client, "/approvals/")
    assert f'data-approval="{approval.pk}"' in body
    assert "/approve/" not in body and "/reject/" not in body
    assert "an approver of Acme Corp (marker-tenant-a) decides" in body
    for verb in ("approve", "reject"):
        assert client.post(f"/approvals/{approval.pk}/{verb}/").status_code == 403
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.PENDING
    assert not AuditEvent.objects.filter(action__startswith="approval.").exists()


def test_another_tenants_request_is_not_listed_and_answers_404(approver_a, admin_b, tenant_a, tenant_b):
    approval_b = request_for(tenant_b, reason=f"Globex run {MARKER_B}")
    client = client_for(approver_a)
    body = get(client, "/approvals/")
    assert MARKER_B not in body and str(approval_b.pk) not in body
    assert "No approval requests" in body
    get(client, "/approvals/?tenant=globex", status=404)
    for verb in ("approve", "reject"):
        response = client.post(f"/approvals/{approval_b.pk}/{verb}/")
        assert response.status_code == 404
        assert MARKER_B not in response.content.decode()
    missing = "00000000-0000-0000-0000-000000000000"
    assert client.post(f"/approvals/{missing}/approve/").status_code == 404
    approval_b.refresh_from_db()
    assert approval_b.status == ApprovalRequest.Status.PENDING
    # tenant b's own admin sees and may decide it
    assert f'action="/approvals/{approval_b.pk}/approve/"' in get(client_for(admin_b), "/approvals/")


def test_deciding_needs_a_post_and_a_sign_in(approver_a, tenant_a):
    approval = request_for(tenant_a)
    assert client_for(approver_a).get(f"/approvals/{approval.pk}/approve/").status_code == 405
    response = Client().post(f"/approvals/{approval.pk}/approve/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.PENDING


def test_navigation_links_approvals_between_alerts_and_models(operator, tenant_a, tenant_b):
    body = get(client_for(operator), "/approvals/?tenant=acme")
    assert 'href="/approvals/?tenant=acme" aria-current="page"' in body
    assert body.index('href="/alerts/?tenant=acme"') < body.index('href="/approvals/?tenant=acme"')
    assert body.index('href="/approvals/?tenant=acme"') < body.index('href="/models/?tenant=acme"')
