"""Envelopes: tokens-per-call percentiles from the daily rollups' histograms, observed against expected on
the workflow page, and operators accepting or editing the proposal (audited)."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from finops.envelopes import EDGES, percentile
from finops.models import EnvelopeProposal, TenantWorkflowEnvelope, UsageRollup, Workflow
from finops.selectors.envelopes import envelope_observed
from finops.services.envelopes import envelope_proposals_refresh
from finops.services.rollups import rollups_refresh
from tenants.models import AuditEvent, Membership
from tenants.scope import TenantScope
from tests.factories import MembershipFactory, UserFactory, WorkflowFactory


def test_percentiles_from_cumulative_counts():
    values = list(range(100, 1100, 10))  # 100 calls, 100..1090 tokens
    cumulative = [sum(1 for v in values if v < edge) for edge in EDGES]
    assert percentile(cumulative, len(values), 0.5) == pytest.approx(595, rel=0.15)
    assert percentile(cumulative, len(values), 0.95) == pytest.approx(1045, rel=0.15)
    assert percentile(cumulative, 0, 0.5) is None
    assert percentile([0] * len(EDGES), 5, 0.5) == EDGES[-1]  # all beyond the last edge


def _ingest(client, workflow: str, day: datetime, prompt_tokens: list[int], output_tokens: int = 200):
    records = [
        {
            "request_id": f"{workflow}-{day:%Y%m%d}-{i}",
            "workflow": workflow,
            "model": "gpt-4o",
            "input_tokens": n,
            "output_tokens": output_tokens,
            "occurred_at": (day + timedelta(minutes=i)).isoformat(),
        }
        for i, n in enumerate(prompt_tokens)
    ]
    response = client.post("/api/v1/usage", {"records": records}, format="json")
    assert response.status_code == 200, response.content


@pytest.fixture
def used(api_a, api_b, catalog):
    WorkflowFactory(slug="summarize", name="Summarize")
    yesterday = datetime.combine(timezone.now().date() - timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    _ingest(api_a.client, "summarize", yesterday, [1000] * 90 + [4000] * 10)
    _ingest(api_a.client, "summarize", yesterday - timedelta(days=1), [1000] * 50)
    _ingest(api_b.client, "b-only-marker-tenant-b", yesterday, [50] * 10)
    rollups_refresh()
    return Workflow.objects.get(slug="summarize")


def test_daily_rollups_keep_histograms_and_the_observed_envelope_reads_them(tenant_a, used):
    daily = UsageRollup.objects.filter(grain=UsageRollup.Grain.DAY, tenant=tenant_a, workflow=used)
    assert all(len(r.token_hist["in"]) == len(EDGES) for r in daily)
    observed = envelope_observed(scope=TenantScope.for_tenant(tenant_a), workflow=used)
    assert observed.calls == 150 and observed.active_days == 2 and observed.calls_per_day == 75
    assert observed.input_p50 == pytest.approx(1000, rel=0.2)
    assert 2896 <= observed.input_p95 <= 4096  # in the right half-octave bucket
    assert observed.output_p50 == pytest.approx(200, rel=0.2)
    assert observed.cost_per_call_nanos and observed.cost_per_call_nanos > 0


def _person(tenant, role=None, staff=False):
    user = UserFactory(username=f"u-{role}-{staff}", is_staff=staff, is_superuser=staff)
    if role:
        MembershipFactory(tenant=tenant, role=role, user=user)
    client = Client()
    client.force_login(user)
    return client


def test_the_daily_job_proposes_once_and_not_when_the_envelope_fits(tenant_a, used):
    assert envelope_proposals_refresh() == 2  # summarize, and tenant B's own workflow
    assert envelope_proposals_refresh() == 0  # same values: the pending ones are kept
    proposal = EnvelopeProposal.objects.get(status="pending", workflow=used)
    assert proposal.workflow == used and proposal.values["expected_calls_per_day"] == 75
    assert proposal.values["expected_input_tokens_p50"] >= proposal.observed["input_p50"]
    Workflow.objects.filter(pk=used.pk).update(**proposal.values)
    assert envelope_proposals_refresh() == 0
    proposal.refresh_from_db()
    assert proposal.status == "superseded"  # no longer needed


def test_operators_accept_the_proposal_and_it_is_audited(tenant_a, used):
    envelope_proposals_refresh()
    operator = _person(tenant_a, staff=True)
    page = operator.get("/workflows/summarize/").content.decode()
    assert 'data-measure="input_p95"' in page and "Accept the proposal" in page
    response = operator.post("/workflows/summarize/envelope/", {"accept": "1"})
    assert response.status_code == 302
    used.refresh_from_db()
    assert used.expected_input_tokens_p50 and used.expected_input_tokens_p95 >= used.expected_input_tokens_p50
    assert used.expected_calls_per_day == 75
    event = AuditEvent.objects.get(action="workflow.envelope_set")
    assert event.after["source"] == "proposal" and event.before["expected_input_tokens_p50"] is None
    assert EnvelopeProposal.objects.get(workflow=used).status == "accepted"
    assert "Accept the proposal" not in operator.get("/workflows/summarize/").content.decode()


def test_operators_edit_it_and_bad_values_change_nothing(tenant_a, used):
    operator = _person(tenant_a, staff=True)
    fields = {
        "expected_input_tokens_p50": "1200",
        "expected_input_tokens_p95": "900",
        "expected_output_tokens_p50": "",
        "expected_output_tokens_p95": "",
        "expected_calls_per_day": "80",
    }
    operator.post("/workflows/summarize/envelope/", fields)
    used.refresh_from_db()
    assert used.expected_input_tokens_p50 is None and not AuditEvent.objects.filter(action="workflow.envelope_set")
    operator.post("/workflows/summarize/envelope/", {**fields, "expected_input_tokens_p95": "5000"})
    used.refresh_from_db()
    assert (used.expected_input_tokens_p50, used.expected_input_tokens_p95, used.expected_calls_per_day) == (
        1200,
        5000,
        80,
    )


def test_tenant_members_see_their_observed_envelope_but_cannot_set_it(tenant_a, used):
    envelope_proposals_refresh()
    admin = _person(tenant_a, role=Membership.Role.ADMIN)
    page = admin.get("/workflows/summarize/?tenant=acme").content.decode()
    assert 'data-measure="input_p50"' in page and "Accept the proposal" not in page
    assert admin.post("/workflows/summarize/envelope/?tenant=acme", {"accept": "1"}).status_code == 403
    # another tenant's auto-discovered workflow is not there at all
    assert admin.post("/workflows/b-only-marker-tenant-b/envelope/?tenant=acme", {"accept": "1"}).status_code == 404


def test_a_tenant_admin_keeps_the_tenants_own_envelope_audited(tenant_a, used):
    admin = _person(tenant_a, role=Membership.Role.ADMIN)
    fields = {
        "level": "tenant",
        "expected_input_tokens_p50": "3000",
        "expected_input_tokens_p95": "9000",
        "expected_output_tokens_p50": "300",
        "expected_output_tokens_p95": "900",
        "expected_calls_per_day": "",
    }
    assert admin.post("/workflows/summarize/envelope/?tenant=acme", fields).status_code == 302
    own = TenantWorkflowEnvelope.objects.get(tenant=tenant_a, workflow=used)
    assert (own.expected_input_tokens_p95, own.expected_calls_per_day) == (9000, None)
    used.refresh_from_db()
    assert used.expected_input_tokens_p95 is None  # the workflow's own is untouched
    event = AuditEvent.objects.get(action="tenant_envelope.set")
    assert event.tenant == tenant_a and event.before is None and event.after["expected_input_tokens_p95"] == 9000
    assert "9,000" in admin.get("/workflows/summarize/?tenant=acme").content.decode()
    # all empty clears it
    empty = {k: "" for k in fields} | {"level": "tenant"}
    admin.post("/workflows/summarize/envelope/?tenant=acme", empty)
    assert not TenantWorkflowEnvelope.objects.exists()
    assert AuditEvent.objects.filter(action="tenant_envelope.clear").count() == 1


def test_viewers_cannot_set_the_tenants_envelope(tenant_a, used):
    viewer = _person(tenant_a, role=Membership.Role.VIEWER)
    response = viewer.post(
        "/workflows/summarize/envelope/?tenant=acme", {"level": "tenant", "expected_calls_per_day": "5"}
    )
    assert response.status_code == 403 and not TenantWorkflowEnvelope.objects.exists()
