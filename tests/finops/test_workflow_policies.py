"""A tenant's own approval threshold per workflow: only ever stricter than the workflow's, applied by the
next preflight of that tenant only, recorded on the request it opens, audited, and tenant-bound."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from budgets.models import ApprovalRequest
from finops.models import TenantWorkflowPolicy
from tenants.models import AuditEvent, Membership

from ..factories import MembershipFactory, UserFactory, WorkflowFactory

POLICY = "/api/v1/workflows/batch-summary/policy"
# gpt-4o at $2.50 / $10 per 1M: 40,000 in + 1,000 out = $0.11
RUN = {"workflow": "batch-summary", "model": "gpt-4o", "input_tokens": 40_000, "max_output_tokens": 1000}


@pytest.fixture
def workflow(catalog):
    return WorkflowFactory(slug="batch-summary", name="Batch summary", approval_threshold_usd=Decimal("0.50"))


def _preflight(client, **fields) -> dict:
    response = client.post("/api/v1/preflight", {**RUN, **fields}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_tenant_threshold_holds_its_runs_only(api_a, api_b, workflow):
    assert _preflight(api_a.client)["decision"] == "allow"  # $0.11 is under the workflow's $0.50
    response = api_a.client.put(POLICY, {"approval_threshold_usd": "0.10"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "workflow": "batch-summary",
        "tenant": "acme",
        "workflow_threshold_usd": "0.5000",
        "tenant_threshold_usd": "0.1000",
        "effective_threshold_usd": "0.1000",
    }
    held = _preflight(api_a.client)
    assert held["decision"] == "needs_approval"
    assert any("threshold for workflow batch-summary" in r for r in held["reasons"])
    assert _preflight(api_b.client)["decision"] == "allow"  # tenant b keeps the workflow's threshold
    # The request records the rule that held it and the binding, as they were when it opened.
    approval = ApprovalRequest.objects.get(pk=held["approval_id"])
    assert approval.rules["held_by"] == [{"rule": "tenant_threshold", "above_usd": "0.1000"}]
    assert approval.rules["binding"]["max_cost_nanos"] == approval.estimated_cost_nanos == 110_000_000
    event = AuditEvent.objects.get(action="workflow_policy.set")
    assert event.tenant_id == api_a.key.tenant_id and event.actor_key_id == api_a.key.pk
    assert event.before is None and event.after["approval_threshold_usd"] == "0.1000"
    # Cleared: the workflow's threshold alone applies again.
    cleared = api_a.client.put(POLICY, {"approval_threshold_usd": None}, format="json")
    assert cleared.json()["tenant_threshold_usd"] is None
    assert _preflight(api_a.client)["decision"] == "allow"
    assert AuditEvent.objects.filter(action="workflow_policy.clear", tenant_id=api_a.key.tenant_id).count() == 1
    assert not TenantWorkflowPolicy.objects.exists()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("0.50", "can only be lower"),  # equal to the workflow's: changes nothing
        ("7", "can only be lower"),  # a tenant may not loosen the platform's rule
        ("-1", "zero or more"),
        ("NaN", "zero or more"),
        ("1E+999999", "at most"),
        ("0.00001", "4 decimals"),
        ("abc", "not an amount"),
        (0.25, "as a string"),  # money is never a float
        (True, "as a string"),
        ({"usd": 1}, "as a string"),
    ],
)
def test_bad_thresholds_are_refused_with_a_reason(api_a, workflow, value, fragment):
    response = api_a.client.put(POLICY, {"approval_threshold_usd": value}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert fragment in str(body), body
    assert not TenantWorkflowPolicy.objects.exists()


def test_the_field_is_required(api_a, workflow):
    response = api_a.client.put(POLICY, {}, format="json")
    assert response.status_code == 400 and "approval_threshold_usd" in str(response.json())


def test_another_tenant_cannot_read_or_set_through_its_ids(api_a, api_b, tenant_a, workflow):
    api_a.client.put(POLICY, {"approval_threshold_usd": "0.10"}, format="json")
    # B's key never names the tenant: ?tenant=acme is refused or ignored, never acme's row.
    forged = api_b.client.put(f"{POLICY}?tenant=acme", {"approval_threshold_usd": "0.01"}, format="json")
    assert forged.status_code in (403, 404) or forged.json()["tenant"] == "globex"
    assert TenantWorkflowPolicy.objects.get(tenant=tenant_a).approval_threshold_usd == Decimal("0.1000")
    read = api_b.client.get(POLICY)
    assert read.status_code == 200 and read.json()["tenant_threshold_usd"] is None
    # An auto-discovered workflow of tenant a answers 404 to tenant b, like a missing one.
    WorkflowFactory(slug="a-secret", status="auto_discovered")
    assert api_b.client.get("/api/v1/workflows/a-secret/policy").status_code == 404
    assert api_b.client.get("/api/v1/workflows/nope/policy").status_code == 404


def test_keys_without_manage_and_viewers_cannot_set_it(make_key, tenant_a, viewer_a, workflow):
    reader = make_key(tenant_a, scopes="read,preflight")
    assert reader.client.get(POLICY).status_code == 200
    assert reader.client.put(POLICY, {"approval_threshold_usd": "0.10"}, format="json").status_code == 403
    session = APIClient()
    session.force_login(viewer_a)
    assert session.put(POLICY, {"approval_threshold_usd": "0.10"}, format="json").status_code == 403
    assert not TenantWorkflowPolicy.objects.exists()


def test_platform_keys_name_the_tenant(api_platform, tenant_b, workflow):
    assert api_platform.client.put(POLICY, {"approval_threshold_usd": "0.10"}, format="json").status_code == 400
    response = api_platform.client.put(f"{POLICY}?tenant=globex", {"approval_threshold_usd": "0.10"}, format="json")
    assert response.status_code == 200 and response.json()["tenant"] == "globex"
    assert TenantWorkflowPolicy.objects.get().tenant == tenant_b


def test_the_workflow_page_shows_and_sets_it(client, tenant_a, tenant_b, workflow):
    admin = MembershipFactory(tenant=tenant_a, role=Membership.Role.ADMIN, user=UserFactory(username="adm")).user
    client.force_login(admin)
    page = client.get("/workflows/batch-summary/")
    assert page.status_code == 200
    assert b"Approval threshold" in page.content and b"$0.50" in page.content
    response = client.post("/workflows/batch-summary/threshold/", {"approval_threshold_usd": "0.2"}, follow=True)
    assert b"estimated above $0.20 now wait for approval" in response.content
    assert TenantWorkflowPolicy.objects.get(tenant=tenant_a).approval_threshold_usd == Decimal("0.2")
    refused = client.post("/workflows/batch-summary/threshold/", {"approval_threshold_usd": "9"}, follow=True)
    assert b"can only be lower" in refused.content and b"Nothing changed" in refused.content
    client.post("/workflows/batch-summary/threshold/", {"clear": "1"})
    assert not TenantWorkflowPolicy.objects.exists()
    assert AuditEvent.objects.filter(action__startswith="workflow_policy.", actor_user=admin).count() == 2


def test_a_viewer_sees_it_but_cannot_change_it(client, viewer_a, workflow):
    client.force_login(viewer_a)
    page = client.get("/workflows/batch-summary/")
    assert b"Approval threshold" in page.content and b'name="approval_threshold_usd"' not in page.content
    assert client.post("/workflows/batch-summary/threshold/", {"approval_threshold_usd": "0.1"}).status_code == 403
    assert not TenantWorkflowPolicy.objects.exists()
