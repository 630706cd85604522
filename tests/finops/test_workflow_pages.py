"""Registering, editing and confirming workflows on the workflow pages: operators only (workflows are
shared product data), audited; tenants see the list of what their scope sees, without the controls."""

from __future__ import annotations

import pytest
from django.test import Client

from finops.models import Workflow
from finops.services.rollups import rollups_refresh
from tenants.models import AuditEvent, Membership

from ..factories import MembershipFactory, UserFactory, WorkflowFactory

pytestmark = pytest.mark.django_db


def _signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _form(**values) -> dict:
    return {
        "name": "Ticket summary",
        "slug": "ticket-summary",
        "owner": "support-platform",
        "priority": "high",
        "default_tier": "",
        "approval_threshold_usd": "0.25",
        **values,
    }


def test_operator_registers_a_workflow(operator, catalog):
    client = _signed_in(operator)
    assert client.get("/workflows/new/").status_code == 200
    response = client.post("/workflows/new/", _form(default_tier=str(catalog["gpt-4o"].tier_id)))
    assert response.status_code == 302 and response["Location"] == "/workflows/ticket-summary/"
    workflow = Workflow.objects.get(slug="ticket-summary")
    assert workflow.status == "registered" and workflow.priority == "high" and workflow.owner == "support-platform"
    assert str(workflow.approval_threshold_usd) == "0.2500" and workflow.default_tier == catalog["gpt-4o"].tier
    event = AuditEvent.objects.get(action="workflow.create")
    assert event.actor_user == operator and event.after["slug"] == "ticket-summary"
    page = client.get("/workflows/").content.decode()
    assert 'data-workflow="ticket-summary"' in page and "$0.25" in page


def test_bad_values_are_refused_with_reasons(operator):
    WorkflowFactory(slug="ticket-summary")
    client = _signed_in(operator)
    response = client.post("/workflows/new/", _form(approval_threshold_usd="-1"))
    body = response.content.decode()
    assert response.status_code == 400
    assert "A workflow with this slug exists." in body and "zero or more USD" in body
    assert not AuditEvent.objects.filter(action="workflow.create").exists()


def test_operator_confirms_an_auto_discovered_workflow(operator, api_a, catalog):
    response = api_a.client.post(
        "/api/v1/usage",
        {"request_id": "r1", "workflow": "new-feature", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 1},
        format="json",
    )
    assert response.status_code == 200
    rollups_refresh()
    client = _signed_in(operator)
    page = client.get("/workflows/").content.decode()
    assert "Auto-discovered" in page and "Confirm…" in page and 'data-workflow="new-feature"' in page
    edit = client.get("/workflows/new-feature/edit/").content.decode()
    assert "First seen in reported usage" in edit
    response = client.post("/workflows/new-feature/edit/", _form(slug="new-feature", name="New feature"))
    assert response.status_code == 302
    workflow = Workflow.objects.get(slug="new-feature")
    assert workflow.status == "registered" and workflow.name == "New feature"
    event = AuditEvent.objects.get(action="workflow.confirm")
    assert event.before["status"] == "auto_discovered" and event.after["status"] == "registered"


def test_tenant_people_see_the_list_without_controls_and_cannot_write(tenant_a, api_b, catalog):
    admin = MembershipFactory(tenant=tenant_a, role=Membership.Role.ADMIN, user=UserFactory(username="adm")).user
    WorkflowFactory(slug="shared-flow", name="Shared flow")
    # Tenant B's service names a workflow: A never sees it.
    api_b.client.post(
        "/api/v1/usage",
        {"request_id": "b1", "workflow": "marker-b-flow", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 1},
        format="json",
    )
    rollups_refresh()
    client = _signed_in(admin)
    page = client.get("/workflows/").content.decode()
    assert "Shared flow" in page and "marker-b-flow" not in page
    assert "/workflows/new/" not in page and "/edit/" not in page
    assert "/edit/" not in client.get("/workflows/shared-flow/").content.decode()
    assert client.get("/workflows/new/").status_code == 403
    assert client.post("/workflows/new/", _form()).status_code == 403
    assert client.post("/workflows/shared-flow/edit/", _form(slug="shared-flow")).status_code == 403
    assert not Workflow.objects.filter(slug="ticket-summary").exists()
    assert Workflow.objects.get(slug="shared-flow").name == "Shared flow"
