"""One approval request's page (`/approvals/<id>/`) and the queue's filters: what a person reads before
deciding (the estimate, its binding, the budgets, a prompt's diff, the history), who may decide or cancel
from it, the confirmation step, `next`, and the tenant boundary.

Requests are opened through the services, so their audit events (the page's history) are the real ones.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from budgets.models import ApprovalRequest, Metric, Period
from budgets.services.approvals import approval_ask
from budgets.services.budget_increases import budget_increase_ask
from finops.models import PromptVersion, Workflow
from finops.services.prompts import prompt_version_register
from finops.services.rollups import rollups_refresh
from finops.templatetags.money import usd
from tenants.models import AuditEvent, Membership
from tenants.scope import Actor
from tests.factories import MembershipFactory, UserFactory, WorkflowFactory

from .factories import BudgetFactory

pytestmark = pytest.mark.django_db
MARKER_B = "marker-tenant-b"
USD = 10**9  # nano-USD

BASE = "You summarise support tickets in three short lines.\n" * 10
GROWN = BASE + "Quote the customer's own words when they matter, and name the product.\n" * 3


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_of(approval) -> str:
    return f"/approvals/{approval.pk}/"


def get(client, url, status=200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.content.decode()


@pytest.fixture
def people(tenant_a, tenant_b):
    def member(tenant, role, name):
        return MembershipFactory(tenant=tenant, role=role, user=UserFactory(username=name)).user

    return {
        "admin": member(tenant_a, Membership.Role.ADMIN, "admin-a"),
        "approver": member(tenant_a, Membership.Role.APPROVER, "approver-a"),
        "viewer": member(tenant_a, Membership.Role.VIEWER, "viewer-a"),
        "admin_b": member(tenant_b, Membership.Role.ADMIN, "admin-b"),
    }


@pytest.fixture
def review(catalog) -> Workflow:
    return WorkflowFactory(
        slug="contract-review",
        name="Contract review",
        priority=Workflow.Priority.NORMAL,
        expected_input_tokens_p50=12_000,
        expected_output_tokens_p95=2_000,
        approval_threshold_usd=Decimal("2.00"),
    )


def run_request(tenant, workflow, model, person, *, cost=3_120_000_000) -> ApprovalRequest:
    return approval_ask(
        tenant=tenant,
        workflow=workflow,
        model_id=model.pk,
        environment="prod",
        max_cost_nanos=cost,
        max_tokens=None,
        justification="Quarter-close contract sweep (TICKET-812)",
        actor=Actor(user=person),
    )


def decide_form(approval) -> str:
    return f'action="/approvals/{approval.pk}/approve/'


# --- what the page shows, per kind ----------------------------------------------------------------------


def test_a_run_request_shows_its_estimate_binding_envelope_recent_calls_budgets_and_history(
    api_a, api_b, tenant_a, tenant_b, catalog, review, people
):
    # Tenant a's recent calls of the workflow: 2 x (1,000 in + 100 out on gpt-4o) = $0.0035 a call.
    for i in range(2):
        stored = api_a.client.post(
            "/api/v1/usage",
            {"request_id": f"r{i}", "workflow": "contract-review", "model": "gpt-4o", "input_tokens": 1000,
             "output_tokens": 100},
            format="json",
        )  # fmt: skip
        assert stored.status_code == 200, stored.content
    # Tenant b's calls of the same workflow must not count (nor show).
    api_b.client.post(
        "/api/v1/usage",
        {"request_id": "b1", "workflow": "contract-review", "model": "o3", "input_tokens": 900_000},
        format="json",
    )
    rollups_refresh()
    monthly = BudgetFactory(tenant=tenant_a, name="Acme monthly", soft_limit=400 * USD, hard_limit=500 * USD)
    tokens = BudgetFactory(tenant=tenant_a, name="Acme review tokens", metric=Metric.TOKENS, workflow=review,
                           period=Period.DAY, hard_limit=2_000_000)  # fmt: skip
    other_flow = BudgetFactory(tenant=tenant_a, name="Acme chat only", workflow=WorkflowFactory(slug="chat"))
    staging = BudgetFactory(tenant=tenant_a, name="Acme staging", environment="stage", hard_limit=USD)
    BudgetFactory(tenant=tenant_b, name=f"Globex {MARKER_B}", hard_limit=USD)
    approval = run_request(tenant_a, review, catalog["o3"], people["admin"])

    body = get(client_for(people["approver"]), page_of(approval))
    # the header
    assert "Run of Contract review" in body and '<span class="badge badge--warn">waiting</span>' in body
    assert "Acme Corp (marker-tenant-a)" in body and "admin-a" in body
    assert "Quarter-close contract sweep (TICKET-812)" in body and "Asked for ahead of the run." in body
    assert approval.expires_at.strftime("%Y-%m-%d %H:%M") in body and "from now" in body
    # the estimate, how it was computed, and what approving allows
    assert "data-estimate-cost>$3.12<" in body
    assert "$2.00 per 1M input tokens · $8.00 per 1M output tokens" in body  # o3's price in force
    assert "Premium tier" in body
    assert (
        "A preflight presenting this id must stay within: workflow <strong>contract-review</strong>, "
        'environment <strong>prod</strong>, model <strong class="mono">o3</strong> or a cheaper tier, '
        "at most <strong>$3.12</strong>."
    ) in " ".join(body.split())
    # the envelope (unset values said so) and tenant a's recent cost per call, from the rollups
    assert "12,000" in body and "2,000" in body and body.count("not set") == 3
    assert "$2.00 per run" in body
    assert "data-recent-cost-per-call>$0.0035<" in body and "2 calls, $0.0070 in the last 7 days" in body
    assert "891×" in body  # $3.12 / $0.0035
    # the budgets it counts against: the tenant's, the workflow's (in tokens), not another workflow's or env's
    assert f'data-budget="{monthly.pk}"' in body and "$500.00" in body and "$400.00" in body
    assert f'data-budget="{tokens.pk}"' in body and "2M tokens" in body
    assert f'data-budget="{other_flow.pk}"' not in body and f'data-budget="{staging.pk}"' not in body
    # the history, from the audit log
    assert 'data-history="approval.open"' in body and "Opened" in body
    # the decide form: a comment, a required confirmation, and `next` back to this page
    assert decide_form(approval) in body and 'formaction="/approvals/' in body
    assert 'name="confirmed" value="yes" required' in body
    assert f'name="next" value="/approvals/{approval.pk}/"' in body
    assert MARKER_B not in body


def test_a_budget_increase_shows_the_limits_now_and_asked_and_the_current_period(tenant_a, people):
    budget = BudgetFactory(tenant=tenant_a, name="Acme daily", period=Period.DAY, soft_limit=USD // 2, hard_limit=USD)
    approval = budget_increase_ask(
        budget=budget,
        new_soft_limit=None,
        new_hard_limit=3 * USD,
        current_window_only=True,
        justification="Black Friday traffic",
        actor=Actor(user=people["admin"]),
    )
    body = get(client_for(people["approver"]), page_of(approval))
    assert "Budget increase: Acme daily" in body and "Black Friday traffic" in body
    assert "this period only: it ends with the period" in body
    assert "<strong>$3.00</strong>" in body and "+$2.00" in body and "unchanged" in body
    assert "$0.5000" in body  # the soft limit stays
    for card in ("Spent", "Reserved", "Forecast"):
        assert f'<h2 class="card__label">{card}</h2>' in body
    assert f'data-budget="{budget.pk}"' in body  # it counts in the budget state too
    assert "Approving applies the asked limits at once, for this period only." in body


def test_a_prompt_change_shows_the_diff_the_projection_and_links_the_version_page(tenant_a, catalog, people):
    workflow = WorkflowFactory(
        slug="ticket-summary", priority=Workflow.Priority.HIGH, expected_output_tokens_p50=100,
        expected_calls_per_day=100,
    )  # fmt: skip
    admin = Actor(user=people["admin"])
    prompt_version_register(tenant=tenant_a, workflow=workflow, label="v1", text=BASE, model_name="gpt-4o", actor=admin)
    grown = prompt_version_register(tenant=tenant_a, workflow=workflow, label="v2", text=GROWN, actor=admin)
    assert grown.version.status == PromptVersion.Status.UNDER_REVIEW
    approval = ApprovalRequest.objects.get(prompt_version=grown.version)
    v1 = PromptVersion.objects.get(label="v1")

    body = get(client_for(people["approver"]), page_of(approval))
    assert "Prompt change: Ticket Summary" in body
    assert '<span class="diff__line diff__line--add">+Quote the customer&#x27;s own words' in body
    change = grown.version.input_tokens - v1.input_tokens
    assert f"data-token-change>+{change:,}<" in body
    # no calls yet: the workflow's envelope (100 a day) x 30 makes the month
    per_call = grown.version.estimated_cost_per_call_nanos - v1.estimated_cost_per_call_nanos
    assert f"data-monthly-change>+{usd(per_call * 3000)}<" in body
    assert "at 3,000 calls a month (the workflow's envelope)" in body
    assert "/workflows/ticket-summary/prompt-versions/v2/?tenant=acme" in body
    assert "Approving makes version v2 active at once." in body

    # the version's own page shows the same projection
    version_page = get(client_for(people["approver"]), "/workflows/ticket-summary/prompt-versions/v2/")
    assert f"data-monthly-change>+{usd(per_call * 3000)}<" in version_page


# --- who may do what --------------------------------------------------------------------------------------


def test_another_tenants_request_answers_404_on_the_page_and_every_post(tenant_a, tenant_b, catalog, review, people):
    approval_b = run_request(tenant_b, review, catalog["o3"], people["admin_b"])
    ApprovalRequest.objects.filter(pk=approval_b.pk).update(reasons=[f"Globex run {MARKER_B}"])
    for who in ("approver", "admin", "viewer"):
        client = client_for(people[who])
        for url in (page_of(approval_b), page_of(approval_b) + "?tenant=globex"):
            response = client.get(url)
            assert response.status_code == 404 and MARKER_B not in response.content.decode(), (who, url)
        for verb in ("approve", "reject", "cancel"):
            response = client.post(f"/approvals/{approval_b.pk}/{verb}/", {"confirm": "required", "confirmed": "yes"})
            assert response.status_code == 404 and MARKER_B not in response.content.decode(), (who, verb)
    assert get(client_for(people["approver"]), "/approvals/00000000-0000-0000-0000-000000000000/", status=404)
    approval_b.refresh_from_db()
    assert approval_b.status == ApprovalRequest.Status.PENDING
    # b's own admin (its requester here) reads it
    assert MARKER_B in get(client_for(people["admin_b"]), page_of(approval_b))


def test_the_requester_sees_no_decide_buttons_and_a_forged_approve_is_refused(tenant_a, catalog, review, people):
    approval = run_request(tenant_a, review, catalog["o3"], people["admin"])
    client = client_for(people["admin"])  # an admin may decide, but not their own request
    body = get(client, page_of(approval))
    assert decide_form(approval) not in body and "/reject/" not in body
    assert "You asked for this: another approver or admin of Acme Corp (marker-tenant-a) decides it" in body
    assert f'action="/approvals/{approval.pk}/cancel/"' in body

    forged = client.post(
        f"/approvals/{approval.pk}/approve/", {"next": page_of(approval), "confirm": "required", "confirmed": "yes"}
    )
    assert forged.status_code == 302 and forged["Location"] == page_of(approval)
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.PENDING and approval.decided_by is None
    assert not AuditEvent.objects.filter(action="approval.approved").exists()
    message = get(client, page_of(approval))
    assert "another approver of the tenant must decide it (four eyes). Nothing was decided." in message


def test_the_page_shows_the_rules_kept_when_the_request_opened(tenant_a, catalog, review, people):
    approval = run_request(tenant_a, review, catalog["o3"], people["admin"])
    ApprovalRequest.objects.filter(pk=approval.pk).update(requested_by=None)  # the column cleared later
    body = get(client_for(people["admin"]), page_of(approval))
    assert "Rules in force when it opened" in body
    assert "Open for 24 hours, then it expires undecided." in body
    # Four eyes still holds from the rules: no decide buttons for the requester.
    assert decide_form(approval) not in body


def test_a_viewer_reads_the_page_but_cannot_decide(tenant_a, catalog, review, people):
    approval = run_request(tenant_a, review, catalog["o3"], people["admin"])
    client = client_for(people["viewer"])
    body = get(client, page_of(approval))
    assert "you can read it but not decide it" in body
    assert decide_form(approval) not in body and "/cancel/" not in body and 'name="confirmed"' not in body
    for verb in ("approve", "reject"):
        assert client.post(f"/approvals/{approval.pk}/{verb}/", {"confirmed": "yes"}).status_code == 403
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.PENDING


def test_deciding_on_the_page_needs_the_confirmation_then_comes_back_to_it(tenant_a, catalog, review, people):
    approval = run_request(tenant_a, review, catalog["o3"], people["admin"])
    client = client_for(people["approver"])
    form = {"next": page_of(approval), "confirm": "required", "comment": "Go ahead for the close"}

    unconfirmed = client.post(f"/approvals/{approval.pk}/approve/", form)
    assert unconfirmed.status_code == 302 and unconfirmed["Location"] == page_of(approval)
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.PENDING
    assert "to decide; nothing was decided." in get(client, page_of(approval))

    approved = client.post(f"/approvals/{approval.pk}/approve/", {**form, "confirmed": "yes"})
    assert approved.status_code == 302 and approved["Location"] == page_of(approval)
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.APPROVED and approval.decided_by == people["approver"]
    body = get(client, page_of(approval))
    assert "Approved the run of contract-review" in body  # the message
    assert "Approved by <strong>approver-a</strong>" in body and "not used yet" in body
    assert 'data-history="approval.approved"' in body and "Go ahead for the close" in body
    assert decide_form(approval) not in body


def test_next_to_another_host_is_ignored(tenant_a, catalog, review, people):
    client = client_for(people["approver"])
    for target in ("https://evil.example/phish", "//evil.example/phish", "javascript:alert(1)"):
        approval = run_request(tenant_a, review, catalog["o3"], people["admin"])
        response = client.post(f"/approvals/{approval.pk}/reject/", {"next": target})
        assert response.status_code == 302 and response["Location"] == "/approvals/", target
        approval.refresh_from_db()
        assert approval.status == ApprovalRequest.Status.REJECTED


def test_the_requester_cancels_and_nobody_else_may(tenant_a, catalog, review, people):
    approval = run_request(tenant_a, review, catalog["o3"], people["admin"])
    approver = client_for(people["approver"])
    refused = approver.post(f"/approvals/{approval.pk}/cancel/", {"next": page_of(approval)})
    assert refused.status_code == 302 and refused["Location"] == page_of(approval)
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.PENDING
    refusal = get(approver, page_of(approval))
    assert "Only whoever asked for this request can cancel it. Nothing was cancelled." in refusal
    assert client_for(people["viewer"]).post(f"/approvals/{approval.pk}/cancel/").status_code == 302
    approval.refresh_from_db()
    assert (
        approval.status == ApprovalRequest.Status.PENDING
        and not AuditEvent.objects.filter(action="approval.cancel").exists()
    )

    client = client_for(people["admin"])
    cancelled = client.post(f"/approvals/{approval.pk}/cancel/")
    assert cancelled.status_code == 302 and cancelled["Location"] == page_of(approval)
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.CANCELLED
    assert AuditEvent.objects.get(action="approval.cancel").actor_user == people["admin"]
    body = get(client, page_of(approval))
    assert "Cancelled the run of contract-review" in body and "answers needs_approval again" in body
    assert '<span class="badge badge--muted">cancelled</span>' in body and 'data-history="approval.cancel"' in body
    assert f"/approvals/{approval.pk}/cancel/" not in body
    # the queue lists it as cancelled, not expired
    queue = get(client, "/approvals/")
    assert '<span class="badge badge--muted">cancelled</span>' in queue and "withdrawn" in queue
    assert client.get(f"/approvals/{approval.pk}/cancel/").status_code == 405


# --- the queue --------------------------------------------------------------------------------------------


def _queued(tenant, *, workflow=None, kind=ApprovalRequest.Kind.WORKFLOW_RUN, age=timedelta(minutes=5), **fields):
    now = timezone.now()
    return ApprovalRequest.objects.create(
        tenant=tenant,
        kind=kind,
        workflow=workflow,
        reasons=["held"],
        created_at=now - age,
        expires_at=fields.pop("expires_at", now + timedelta(hours=24)),
        **fields,
    )


def _listed(body: str) -> set[str]:
    import re

    return set(re.findall(r'data-approval="([0-9a-f-]{36})"', body))


def test_filters_narrow_the_queue_and_an_empty_result_says_what_they_left_out(
    tenant_a, tenant_b, operator, people, catalog
):
    chat, review = WorkflowFactory(slug="chat", name="Chat"), WorkflowFactory(slug="review", name="Review")
    run_chat = _queued(tenant_a, workflow=chat, age=timedelta(minutes=10))
    run_review_old = _queued(tenant_a, workflow=review, age=timedelta(hours=30))
    increase = _queued(tenant_a, kind=ApprovalRequest.Kind.BUDGET_INCREASE, age=timedelta(hours=2))
    rejected = _queued(tenant_a, workflow=chat, status=ApprovalRequest.Status.REJECTED, age=timedelta(days=8))
    stale = _queued(tenant_a, workflow=review, age=timedelta(days=2), expires_at=timezone.now() - timedelta(days=1))
    theirs = _queued(tenant_b, workflow=WorkflowFactory(slug=f"{MARKER_B}-flow"), age=timedelta(hours=3))
    everything = {str(a.pk) for a in (run_chat, run_review_old, increase, rejected, stale)}

    client = client_for(people["approver"])
    body = get(client, "/approvals/")
    assert _listed(body) == everything and MARKER_B not in body  # b's workflow is not even a filter choice
    assert f'href="/approvals/{run_chat.pk}/"' in body  # each row opens its request
    for query, expected in (
        ("kind=budget_increase", {increase}),
        ("kind=workflow_run&workflow=chat", {run_chat, rejected}),
        ("workflow=review", {run_review_old, stale}),
        ("age=1h", {run_review_old, increase, rejected, stale}),
        ("age=24h", {run_review_old, rejected, stale}),
        ("age=7d", {rejected}),
        ("status=pending", {run_chat, run_review_old, increase}),
        ("status=expired", {stale}),
        ("status=rejected&workflow=chat", {rejected}),
    ):
        body = get(client, f"/approvals/?{query}")
        assert _listed(body) == {str(a.pk) for a in expected}, query
        assert 'href="/approvals/">Clear</a>' in body, query
    # pending first, even when older
    body = get(client, "/approvals/?workflow=chat")
    assert body.index(f'data-approval="{run_chat.pk}"') < body.index(f'data-approval="{rejected.pk}"')

    empty = get(client, "/approvals/?kind=prompt_change&age=7d")
    assert "No request matches these filters" in empty and not _listed(empty)
    assert "The filters (kind: prompt change, older than 7 days) leave out every request of Acme Corp" in empty
    assert "5 requests are listed without them." in empty
    # an unknown value is said and ignored
    bogus = get(client, "/approvals/?kind=bogus")
    assert _listed(bogus) == everything and "This filter is ignored." in bogus

    # operators pick the tenant with the scope's own ?tenant=
    op = client_for(operator)
    assert _listed(get(op, "/approvals/")) == everything | {str(theirs.pk)}
    picked = get(op, "/approvals/?tenant=globex&kind=workflow_run")
    assert _listed(picked) == {str(theirs.pk)} and '<option value="globex" selected>' in picked
    assert get(client, "/approvals/?tenant=globex", status=404)


def test_the_queue_decides_and_comes_back_to_the_filtered_list(tenant_a, people):
    approval = _queued(tenant_a, workflow=WorkflowFactory(slug="chat"))
    client = client_for(people["approver"])
    body = get(client, "/approvals/?kind=workflow_run")
    assert 'name="next" value="/approvals/?kind=workflow_run"' in body
    response = client.post(f"/approvals/{approval.pk}/approve/", {"next": "/approvals/?kind=workflow_run"})
    assert response.status_code == 302 and response["Location"] == "/approvals/?kind=workflow_run"
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.APPROVED
