"""Approvals that hold: each way a run request opens, four eyes for every role, the binding, consume
once, concurrent decisions, cancel and expiry, each attacked as a hostile user would."""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.utils import timezone
from rest_framework.test import APIClient

from budgets.models import ApprovalRequest
from budgets.services.approvals import approvals_expire
from finops.models import Workflow
from tenants.models import AuditEvent, Membership
from tenants.scope import Actor
from tenants.services import api_key_create

from ..factories import MembershipFactory, UserFactory, WorkflowFactory

APPROVALS = "/api/v1/approvals"
BIG = {"workflow": "batch-summary", "model": "gpt-4o", "input_tokens": 100_000, "max_output_tokens": 1000}
# gpt-4o at $2.50 / $10 per 1M: 100,000 in + 1,000 out = $0.26


def _session(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def _member(tenant, role, name):
    return MembershipFactory(tenant=tenant, role=role, user=UserFactory(username=name)).user


@pytest.fixture
def gated(catalog, tenant_a):
    """A normal-priority workflow whose runs above $0.10 wait for a person, with no control active."""
    return WorkflowFactory(slug="batch-summary", approval_threshold_usd=Decimal("0.10"))


@pytest.fixture
def people(tenant_a):
    return {
        "admin": _member(tenant_a, Membership.Role.ADMIN, "admin-a"),
        "approver": _member(tenant_a, Membership.Role.APPROVER, "approver-a"),
        "approver2": _member(tenant_a, Membership.Role.APPROVER, "approver2-a"),
    }


def _preflight(client, **fields):
    response = client.post("/api/v1/preflight", {**BIG, **fields}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_the_workflow_threshold_holds_without_any_control(api_a, gated):
    held = _preflight(api_a.client)
    assert held["decision"] == "needs_approval"
    assert any("batch-summary's threshold" in r for r in held["reasons"])
    small = _preflight(api_a.client, input_tokens=1000, max_output_tokens=100)
    assert small["decision"] == "allow"
    approval = ApprovalRequest.objects.get()
    assert approval.kind == "workflow_run" and approval.requested_by_key_id == api_a.key.pk
    assert approval.estimated_cost_nanos == 260_000_000 and approval.estimated_tokens == 101_000
    assert AuditEvent.objects.filter(action="approval.open", target_id=str(approval.pk)).count() == 1
    # A retry of the same call reuses the open request instead of flooding approvers.
    assert _preflight(api_a.client)["approval_id"] == str(approval.pk)
    assert ApprovalRequest.objects.count() == 1


def test_a_run_asked_for_ahead_of_time_and_its_validation(api_a, api_b, gated):
    asked = api_a.client.post(
        APPROVALS,
        {"workflow": "batch-summary", "model": "gpt-4o", "max_cost_usd": "0.30", "justification": "Quarterly re-run"},
        format="json",
    )
    assert asked.status_code == 201, asked.content
    body = asked.json()
    assert body["status"] == "pending" and body["estimated_cost_usd"] == "0.300000000"
    assert body["justification"] == "Quarterly re-run" and body["requested_by_key"] == api_a.key.prefix
    for bad, field in (
        ({"model": "gpt-4o", "max_cost_usd": "1"}, "justification"),
        ({"model": "gpt-4o", "justification": "x"}, "max_cost_usd"),
        ({"model": "no-such-model", "max_cost_usd": "1", "justification": "x"}, "model"),
        ({"model": "gpt-4o", "max_cost_usd": "-1", "justification": "x"}, "max_cost_usd"),
    ):
        response = api_a.client.post(APPROVALS, bad, format="json")
        assert response.status_code == 400 and field in response.json()["error"]["details"], (bad, response.content)
    # The tenant comes from the key, never from the body.
    api_b.client.post(
        APPROVALS, {"tenant": "acme", "model": "gpt-4o", "max_cost_usd": "1", "justification": "x"}, format="json"
    )
    assert set(ApprovalRequest.objects.values_list("tenant__slug", flat=True)) == {"acme", "globex"}
    assert ApprovalRequest.objects.filter(tenant__slug="acme").count() == 1


def test_nobody_decides_their_own_request_whatever_their_role(tenant_a, gated, people, operator):
    # Each person asks through their own session; the operator names the tenant in the body.
    for who in ("admin", "operator"):
        user = operator if who == "operator" else people[who]
        extra = {"tenant": "acme"} if who == "operator" else {}
        held = _preflight(_session(user), **extra)
        assert held["decision"] == "needs_approval"
        approval = ApprovalRequest.objects.get(pk=held["approval_id"])
        assert approval.requested_by_id == user.pk
        own = _session(user).post(f"{APPROVALS}/{approval.pk}/approve", {"comment": "fine by me"}, format="json")
        assert own.status_code == 403 and own.json()["error"]["code"] == "approval_own_request"
        page = _session(user).post(f"/approvals/{approval.pk}/approve/")  # a forged form POST
        assert page.status_code == 302
        approval.refresh_from_db()
        assert approval.status == "pending" and approval.decided_by_id is None
        assert b"another approver" in _session(user).get("/approvals/?tenant=acme").content or who == "operator"
        other = _session(people["approver2"]).post(f"{APPROVALS}/{approval.pk}/approve", format="json")
        assert other.status_code == 200 and other.json()["status"] == "approved"


def test_a_request_made_with_a_key_counts_as_made_by_the_keys_creator(tenant_a, gated, people):
    _key, raw = api_key_create(
        tenant=tenant_a, name="approver's own key", scopes="preflight", actor=Actor(user=people["approver"])
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    held = _preflight(client)
    approval = ApprovalRequest.objects.get(pk=held["approval_id"])
    assert approval.requested_by_id == people["approver"].pk
    refused = _session(people["approver"]).post(f"{APPROVALS}/{approval.pk}/approve", format="json")
    assert refused.status_code == 403
    # ... and the approver sees no decide button on it.
    page = _session(people["approver"]).get("/approvals/").content.decode()
    assert f'action="/approvals/{approval.pk}/approve/' not in page
    assert (
        f'action="/approvals/{approval.pk}/approve/'
        in _session(people["approver2"]).get("/approvals/").content.decode()
    )


def test_the_requester_fixed_when_the_request_opened_still_applies(tenant_a, gated, people):
    key, raw = api_key_create(
        tenant=tenant_a, name="approver's own key", scopes="preflight", actor=Actor(user=people["approver"])
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    held = _preflight(client)
    approval = ApprovalRequest.objects.get(pk=held["approval_id"])
    assert approval.rules["requester_id"] == people["approver"].pk
    assert approval.rules["held_by"] == [{"rule": "workflow_threshold", "above_usd": "0.1000"}]
    # Later changes do not move the rule: the key handed to someone else, the request's column cleared.
    type(key).objects.filter(pk=key.pk).update(created_by=people["admin"])
    ApprovalRequest.objects.filter(pk=approval.pk).update(requested_by=None)
    refused = _session(people["approver"]).post(f"{APPROVALS}/{approval.pk}/approve", format="json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "approval_own_request"
    assert _session(people["admin"]).post(f"{APPROVALS}/{approval.pk}/approve", format="json").status_code == 200


def _approved(client, approver, **fields) -> str:
    held = _preflight(client, **fields)
    approved = _session(approver).post(f"{APPROVALS}/{held['approval_id']}/approve", format="json")
    assert approved.status_code == 200
    return held["approval_id"]


def test_an_approval_covers_only_what_was_approved_and_only_once(api_a, gated, people, catalog):
    WorkflowFactory(slug="other-flow")
    approval_id = _approved(api_a.client, people["approver"])
    attempts = {
        "bigger": {"input_tokens": 200_000},
        "other workflow": {"workflow": "other-flow"},
        "other environment": {"environment": "dev"},
        "dearer tier": {"model": "o3"},
    }
    for name, change in attempts.items():
        answer = _preflight(api_a.client, approval_id=approval_id, **change)
        assert answer["decision"] != "allow" or name == "other workflow" and answer["reservation_id"], (name, answer)
        if answer["decision"] == "allow":  # a run below the other workflow's (absent) threshold needs none
            assert answer["approval_status"] != "consumed"
        assert ApprovalRequest.objects.get(pk=approval_id).status == "approved", name
    # A cheaper-tier model within the amount is covered.
    used = _preflight(api_a.client, approval_id=approval_id, model="gemini-2.5-flash-lite", input_tokens=2_000_000)
    assert used["decision"] == "allow" and used["approval_status"] == "consumed", used
    again = _preflight(api_a.client, approval_id=approval_id)
    assert again["decision"] == "needs_approval" and again["approval_id"] != approval_id
    assert AuditEvent.objects.filter(action="approval.consume", target_id=approval_id).count() == 1


def test_the_approved_call_itself_runs(api_a, gated, people):
    approval_id = _approved(api_a.client, people["approver"])
    smaller = _preflight(api_a.client, approval_id=approval_id, input_tokens=90_000)
    assert smaller["decision"] == "allow" and smaller["approval_status"] == "consumed"


@pytest.mark.django_db(transaction=True)
def test_twenty_people_deciding_at_once_yield_one_decision(tenant_a, catalog):
    if connection.vendor != "postgresql":
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail("REQUIRE_SERVICES=1 needs DATABASE_URL on PostgreSQL")
        pytest.skip("concurrent decisions are raced on PostgreSQL (set DATABASE_URL)")
    now = timezone.now()
    approval = ApprovalRequest.objects.create(
        tenant=tenant_a, created_at=now, expires_at=now + timedelta(hours=1), estimated_cost_nanos=1
    )
    approvers = [_member(tenant_a, Membership.Role.APPROVER, f"racer-{i}") for i in range(20)]
    barrier = threading.Barrier(len(approvers))
    statuses: list[int] = []

    def decide(i, user):
        client = _session(user)
        barrier.wait(timeout=30)
        try:
            verb = "approve" if i % 2 else "reject"
            statuses.append(client.post(f"{APPROVALS}/{approval.pk}/{verb}", format="json").status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=decide, args=(i, u)) for i, u in enumerate(approvers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(statuses) == [200] + [409] * 19
    approval.refresh_from_db()
    assert approval.status in ("approved", "rejected") and approval.decided_by_id is not None
    decided = AuditEvent.objects.filter(
        target_id=str(approval.pk), action__in=["approval.approved", "approval.rejected"]
    )
    assert decided.count() == 1


def test_only_the_requester_cancels(api_a, tenant_a, gated, people, make_key):
    held = _preflight(api_a.client)
    other_key = make_key(tenant_a, "preflight,read", "another service")
    assert other_key.client.post(f"{APPROVALS}/{held['approval_id']}/cancel", format="json").status_code == 403
    assert _session(people["admin"]).post(f"{APPROVALS}/{held['approval_id']}/cancel", format="json").status_code == 403
    cancelled = api_a.client.post(f"{APPROVALS}/{held['approval_id']}/cancel", format="json")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    late = _session(people["approver"]).post(f"{APPROVALS}/{held['approval_id']}/approve", format="json")
    assert late.status_code == 409
    assert api_a.client.post(f"{APPROVALS}/{held['approval_id']}/cancel", format="json").status_code == 409
    assert AuditEvent.objects.filter(action="approval.cancel").count() == 1


def test_expiry_is_audited_per_request_and_an_expired_approval_is_refused(api_a, gated, people):
    approval_id = _approved(api_a.client, people["approver"])
    ApprovalRequest.objects.filter(pk=approval_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert approvals_expire() == 1
    assert AuditEvent.objects.filter(action="approval.expire", target_id=approval_id).count() == 1
    answer = _preflight(api_a.client, approval_id=approval_id)
    assert answer["decision"] == "needs_approval" and answer["approval_id"] != approval_id


def test_a_service_polls_its_request_and_filters_the_list(api_a, tenant_a, gated, make_key):
    held = _preflight(api_a.client)
    ingest_only = make_key(tenant_a, "ingest", "poller")
    polled = ingest_only.client.get(f"{APPROVALS}/{held['approval_id']}")
    assert polled.status_code == 200 and polled.json()["status"] == "pending"
    listed = api_a.client.get(APPROVALS, {"kind": "workflow_run", "workflow": "batch-summary", "status": "pending"})
    assert [a["id"] for a in listed.json()["results"]] == [held["approval_id"]]
    assert api_a.client.get(APPROVALS, {"kind": "nope"}).status_code == 400
    assert Workflow.objects.get(slug="batch-summary").approval_threshold_usd == Decimal("0.10")


def test_approvers_are_told_when_a_request_opens_and_the_requester_when_it_is_decided(
    api_a, tenant_a, tenant_b, gated, people, django_capture_on_commit_callbacks, mailoutbox
):
    from budgets.models import Alert, NotificationChannel

    NotificationChannel.objects.create(tenant=tenant_a, kind="email", target="approvers@acme.example")
    NotificationChannel.objects.create(tenant=tenant_b, kind="email", target="finops@globex.example")
    with django_capture_on_commit_callbacks(execute=True):
        held = _preflight(api_a.client)
    assert [m.to for m in mailoutbox] == [["approvers@acme.example"]]
    opened = mailoutbox[0]
    assert "Run of batch-summary on gpt-4o" in opened.subject and "waits for an approver" in opened.subject
    assert f"http://127.0.0.1:8000/approvals/{held['approval_id']}/?tenant=acme" in opened.body
    assert "batch-summary's threshold" in opened.body
    with django_capture_on_commit_callbacks(execute=True):
        _session(people["approver"]).post(
            f"{APPROVALS}/{held['approval_id']}/approve", {"comment": "go"}, format="json"
        )
    decided = mailoutbox[1]
    assert (
        "was approved" in decided.subject and "Decided by approver-a." in decided.body and "Comment: go" in decided.body
    )
    # Notices are not open alerts: they do not raise the alerts badge.
    assert not Alert.objects.filter(kind="approval", acknowledged_at__isnull=True).exists()
