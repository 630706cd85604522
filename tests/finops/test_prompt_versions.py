"""Prompt-change reviews: versions registered through the API and the workflow page, growth reviewed on
high-cost workflows (four eyes deciding it), preflight and usage naming versions, the tenant boundary,
and the review page's diff and projection."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from budgets.models import ApprovalRequest
from budgets.services.prompt_reviews import PROMPT_REVIEWER
from finops import hooks
from finops.models import PromptVersion, UsageRecord, Workflow
from finops.services.rollups import rollups_refresh
from finops.tokens import input_cost_estimate
from tenants.models import AuditEvent, Membership

from ..factories import MembershipFactory, UserFactory, WorkflowFactory

BASE = "You summarise support tickets in three short lines.\n" * 10
GROWN = BASE + "Quote the customer's own words when they matter, and name the product.\n" * 3  # about +30%
NUDGED = BASE + "Be brief.\n"  # a few percent
MARKER = "marker-tenant-b"


def _tokens(text: str) -> int:
    return input_cost_estimate(model_name="gpt-4o", text=text).count.tokens


def _url(slug: str) -> str:
    return f"/api/v1/workflows/{slug}/prompt-versions"


def _register(client, slug, label, text, *, status=201, **extra):
    response = client.post(_url(slug), {"label": label, "text": text, **extra}, format="json")
    assert response.status_code == status, response.content
    return response.json()


def _member(tenant, role, name):
    return MembershipFactory(tenant=tenant, role=role, user=UserFactory(username=name)).user


def _session(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def _usage(client, request_id, workflow, *, input_tokens=1000, output_tokens=100, **extra):
    record = {
        "request_id": request_id,
        "workflow": workflow,
        "model": "gpt-4o",
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        **extra,
    }
    response = client.post("/api/v1/usage", record, format="json")
    assert response.status_code in (200, 207), response.content  # 207: not every item stored
    return response.json()


@pytest.fixture
def critical(catalog, tenant_a, tenant_b) -> Workflow:
    return WorkflowFactory(slug="ticket-summary", priority=Workflow.Priority.HIGH, expected_output_tokens_p50=100)


@pytest.fixture
def normal(catalog, tenant_a, tenant_b) -> Workflow:
    return WorkflowFactory(slug="faq-bot", priority=Workflow.Priority.NORMAL)


@pytest.fixture
def people(tenant_a):
    return {
        "admin": _member(tenant_a, Membership.Role.ADMIN, "admin-a"),
        "approver": _member(tenant_a, Membership.Role.APPROVER, "approver-a"),
        "viewer": _member(tenant_a, Membership.Role.VIEWER, "viewer-a"),
    }


# --- registering --------------------------------------------------------------------------------------


def test_the_api_registers_a_version_counted_and_priced_and_lists_it(api_a, critical, tenant_a):
    body = _register(api_a.client, "ticket-summary", "v1", BASE, model="gpt-4o", git_commit="9f2c1ab")

    n = _tokens(BASE)
    assert n > 50
    # gpt-4o today: $2.50 / 1M input, $10 / 1M output; the workflow expects 100 output tokens (p50).
    per_call = n * 2500 + 100 * 10_000  # nano-USD
    assert body["status"] == "active" and body["created"] is True and body["baseline"] is None
    assert body["input_tokens"] == n and body["encoding"] == "o200k_base" and body["tokens_estimated"] is False
    assert body["estimated_cost_per_call_usd"] == f"0.{per_call:09d}"
    assert body["created_by_key"] == api_a.key.prefix and body["git_commit"] == "9f2c1ab"
    assert body["approval_id"] is None and body["reasons"] == []
    assert body["review_url"] == "/workflows/ticket-summary/prompt-versions/v1/?tenant=acme"
    version = PromptVersion.objects.get(tenant=tenant_a, label="v1")
    assert version.created_by_key == api_a.key and version.estimated_cost_per_call_nanos == per_call
    assert AuditEvent.objects.filter(action="prompt_version.register", target_id=str(version.pk)).exists()

    listed = api_a.client.get(_url("ticket-summary")).json()["results"]
    assert [(v["label"], v["status"], v["input_tokens"]) for v in listed] == [("v1", "active", n)]

    # A retried CI job: the same label and prompt answer 200 with the stored version; another prompt is 409.
    again = _register(api_a.client, "ticket-summary", "v1", BASE, status=200)
    assert again["created"] is False and PromptVersion.objects.filter(tenant=tenant_a).count() == 1
    clash = api_a.client.post(_url("ticket-summary"), {"label": "v1", "text": NUDGED}, format="json")
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "prompt_version_exists"


def test_messages_count_as_chat_and_the_model_defaults_to_the_active_versions(api_a, critical):
    missing = api_a.client.post(_url("ticket-summary"), {"label": "v1", "text": BASE}, format="json")
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "model_required"

    _register(api_a.client, "ticket-summary", "v1", BASE, model="claude-sonnet-4-5")
    messages = [{"role": "system", "content": BASE}, {"role": "user", "content": "{ticket}"}]
    response = api_a.client.post(_url("ticket-summary"), {"label": "v2", "messages": messages}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["model"] == "claude-sonnet-4-5" and body["tokens_estimated"] is True  # not OpenAI: an estimate
    assert body["input_tokens"] == input_cost_estimate(model_name="claude-sonnet-4-5", messages=messages).count.tokens

    both = api_a.client.post(_url("ticket-summary"), {"label": "v3", "text": "x", "messages": messages}, format="json")
    assert both.status_code == 400
    bad_label = api_a.client.post(_url("ticket-summary"), {"label": "v 3/x", "text": "x"}, format="json")
    assert bad_label.status_code == 400 and "label" in bad_label.json()["error"]["details"]


def test_only_manage_keys_and_admins_register(make_key, tenant_a, critical, people):
    reader = make_key(tenant_a, scopes="read,ingest,preflight")
    assert reader.client.get(_url("ticket-summary")).status_code == 200
    refused = reader.client.post(
        _url("ticket-summary"), {"label": "v1", "text": BASE, "model": "gpt-4o"}, format="json"
    )
    assert refused.status_code == 403
    viewer = _session(people["viewer"])
    assert (
        viewer.post(_url("ticket-summary"), {"label": "v1", "text": BASE, "model": "gpt-4o"}, format="json").status_code
        == 403
    )
    admin = _session(people["admin"])
    assert (
        admin.post(_url("ticket-summary"), {"label": "v1", "text": BASE, "model": "gpt-4o"}, format="json").status_code
        == 201
    )
    assert PromptVersion.objects.get().created_by == people["admin"]


def test_the_workflow_page_registers_a_version(client, critical, people, tenant_a):
    client.force_login(people["admin"])
    page = client.get("/workflows/ticket-summary/")
    assert page.status_code == 200 and "Register a prompt version" in page.content.decode()

    response = client.post(
        "/workflows/ticket-summary/prompt-versions/", {"label": "v1", "model": "gpt-4o", "text": BASE, "git_commit": ""}
    )
    assert response.status_code == 302
    assert response["Location"] == "/workflows/ticket-summary/prompt-versions/v1/?tenant=acme"
    version = PromptVersion.objects.get(tenant=tenant_a, label="v1")
    assert version.created_by == people["admin"] and version.status == "active" and version.text == BASE

    # Another prompt under a taken label: the form comes back with the reason, nothing is stored.
    clash = client.post("/workflows/ticket-summary/prompt-versions/", {"label": "v1", "text": NUDGED})
    assert clash.status_code == 200 and "already registered" in clash.content.decode()
    assert PromptVersion.objects.count() == 1

    client.force_login(people["viewer"])
    assert "Register a prompt version" not in client.get("/workflows/ticket-summary/").content.decode()
    assert client.post("/workflows/ticket-summary/prompt-versions/", {"label": "v2", "text": BASE}).status_code == 403


# --- when a version is reviewed -------------------------------------------------------------------------


def test_growth_above_the_threshold_on_a_high_priority_workflow_waits_for_review(api_a, critical, tenant_a):
    _register(api_a.client, "ticket-summary", "v1", BASE, model="gpt-4o")
    for i in range(3):  # the current call volume: 3 calls in the last 30 days
        _usage(api_a.client, f"r{i}", "ticket-summary", prompt_version="v1")
    rollups_refresh()

    body = _register(api_a.client, "ticket-summary", "v2", GROWN)

    old, new = _tokens(BASE), _tokens(GROWN)
    assert (new - old) * 100 > 10 * old
    assert body["status"] == "under_review" and body["baseline"] == "v1"
    assert body["input_tokens_change"] == new - old
    assert body["input_tokens_change_pct"] == f"{Decimal(new - old) * 100 / old:.1f}"
    assert body["calls_per_month"] == 3
    # (new - old) tokens at $2.50 / 1M on each of 3 calls a month
    monthly = (new - old) * 2500 * 3
    assert body["projected_monthly_cost_change_usd"] == f"0.{monthly:09d}"
    approval = ApprovalRequest.objects.get(pk=body["approval_id"])
    assert approval.kind == ApprovalRequest.Kind.PROMPT_CHANGE and approval.status == "pending"
    assert approval.prompt_version.label == "v2" and approval.tenant == tenant_a
    assert approval.workflow == critical and approval.estimated_tokens == new
    assert any(f"from {old:,} to {new:,} tokens" in r for r in approval.reasons)
    assert any("Projected monthly cost change at the current call volume (3 calls" in r for r in approval.reasons)
    assert any("high priority" in r for r in approval.reasons)
    assert body["reasons"] == approval.reasons


def test_growth_within_the_threshold_is_active_at_once(api_a, critical):
    _register(api_a.client, "ticket-summary", "v1", BASE, model="gpt-4o")
    old, new = _tokens(BASE), _tokens(NUDGED)
    assert old < new and (new - old) * 100 <= 10 * old
    body = _register(api_a.client, "ticket-summary", "v2", NUDGED)
    assert body["status"] == "active" and body["approval_id"] is None
    assert not ApprovalRequest.objects.exists()
    # v2 is now the version the next one is compared with.
    assert _register(api_a.client, "ticket-summary", "v3", BASE)["baseline"] == "v2"


def test_a_normal_workflow_is_reviewed_only_above_its_spend_share(api_a, normal, tenant_a):
    WorkflowFactory(slug="bulk")
    _register(api_a.client, "faq-bot", "v1", BASE, model="gpt-4o")
    _usage(api_a.client, "bulk-1", "bulk", input_tokens=1_000_000)  # $2.50 + $0.001
    _usage(api_a.client, "faq-1", "faq-bot", input_tokens=10_000)  # $0.025 + $0.001: about 1%
    body = _register(api_a.client, "faq-bot", "v2", GROWN)
    assert body["status"] == "active" and not ApprovalRequest.objects.exists()

    _usage(api_a.client, "faq-2", "faq-bot", input_tokens=1_000_000)  # now about half the spend
    body = _register(api_a.client, "faq-bot", "v3", GROWN + GROWN)
    assert body["status"] == "under_review"
    reasons = ApprovalRequest.objects.get(prompt_version__label="v3").reasons
    assert any("of the tenant's spend over the last 30 days (reviewed above 10%)" in r for r in reasons)


def test_without_a_registered_reviewer_finops_keeps_the_version_active(api_a, critical, monkeypatch):
    assert hooks.prompt_reviewer is PROMPT_REVIEWER
    monkeypatch.setattr(hooks, "prompt_reviewer", None)
    _register(api_a.client, "ticket-summary", "v1", BASE, model="gpt-4o")
    assert _register(api_a.client, "ticket-summary", "v2", GROWN)["status"] == "active"
    with pytest.raises(RuntimeError, match="already registered"):
        monkeypatch.setattr(hooks, "prompt_reviewer", PROMPT_REVIEWER)
        hooks.prompt_reviewer_register(object())  # type: ignore[arg-type]


def test_deciding_the_review_activates_or_rejects_the_version_with_four_eyes(critical, people, tenant_a):
    admin, approver = _session(people["admin"]), _session(people["approver"])
    _register(admin, "ticket-summary", "v1", BASE, model="gpt-4o")
    grown = _register(admin, "ticket-summary", "v2", GROWN)
    assert grown["status"] == "under_review"

    own = admin.post(f"/api/v1/approvals/{grown['approval_id']}/approve", {}, format="json")
    assert own.status_code == 403 and own.json()["error"]["code"] == "approval_own_request"
    assert PromptVersion.objects.get(label="v2").status == "under_review"

    assert approver.post(f"/api/v1/approvals/{grown['approval_id']}/approve", {}, format="json").status_code == 200
    v2 = PromptVersion.objects.get(label="v2")
    assert v2.status == "active"
    assert AuditEvent.objects.filter(action="prompt_version.activate", target_id=str(v2.pk)).count() == 1

    again = _register(admin, "ticket-summary", "v3", GROWN + GROWN)
    assert again["baseline"] == "v2" and again["status"] == "under_review"
    response = approver.post(f"/api/v1/approvals/{again['approval_id']}/reject", {"comment": "too long"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    v3 = PromptVersion.objects.get(label="v3")
    assert v3.status == "rejected"
    assert AuditEvent.objects.filter(action="prompt_version.reject", target_id=str(v3.pk)).count() == 1


# --- preflight and usage naming a version -------------------------------------------------------------


def test_preflight_answers_for_the_version_it_names(api_a, critical, people):
    _register(api_a.client, "ticket-summary", "v1", BASE, model="gpt-4o")
    grown = _register(api_a.client, "ticket-summary", "v2", GROWN)
    ask = {"workflow": "ticket-summary", "model": "gpt-4o", "input_tokens": 500}

    held = api_a.client.post("/api/v1/preflight", {**ask, "prompt_version": "v2"}, format="json").json()
    assert held["decision"] == "needs_approval" and held["approval_id"] == grown["approval_id"]
    assert held["approval_status"] == "pending" and held["reservation_id"] is None
    assert any("under review" in r for r in held["reasons"])
    assert ApprovalRequest.objects.count() == 1  # no run request opened besides the review

    assert (
        api_a.client.post("/api/v1/preflight", {**ask, "prompt_version": "v1"}, format="json").json()["decision"]
        == "allow"
    )
    unknown = api_a.client.post("/api/v1/preflight", {**ask, "prompt_version": "v9"}, format="json").json()
    assert unknown["decision"] == "allow" and any("not registered" in r for r in unknown["reasons"])
    no_workflow = api_a.client.post(
        "/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 5, "prompt_version": "v1"}, format="json"
    )
    assert no_workflow.status_code == 400

    approver = _session(people["approver"])
    assert approver.post(f"/api/v1/approvals/{grown['approval_id']}/reject", {}, format="json").status_code == 200
    denied = api_a.client.post("/api/v1/preflight", {**ask, "prompt_version": "v2"}, format="json").json()
    assert denied["decision"] == "deny" and any("rejected in review" in r for r in denied["reasons"])


def test_usage_records_carry_the_prompt_version(api_a, critical, tenant_a):
    body = _usage(api_a.client, "r1", "ticket-summary", prompt_version="v1")
    record = UsageRecord.objects.get(tenant=tenant_a, request_id="r1")
    assert record.prompt_version == "v1"
    assert api_a.client.get(f"/api/v1/usage/{record.pk}").json()["prompt_version"] == "v1"
    assert _usage(api_a.client, "r0", "ticket-summary")["items"][0]["status"] == "accepted"
    assert UsageRecord.objects.get(request_id="r0").prompt_version == ""

    # The same call again is a duplicate; the same request id naming another version is a conflict.
    assert _usage(api_a.client, "r1", "ticket-summary", prompt_version="v1")["items"][0]["status"] == "duplicate"
    assert _usage(api_a.client, "r1", "ticket-summary", prompt_version="v2")["items"][0]["status"] == "conflict"
    assert body["items"][0]["status"] == "accepted"
    for bad in ("x" * 101, 7, "v\x001"):
        response = api_a.client.post(
            "/api/v1/usage",
            {"request_id": "bad", "model": "gpt-4o", "input_tokens": 1, "prompt_version": bad},
            format="json",
        )
        item = response.json()["items"][0] if "items" in response.json() else response.json()
        assert item.get("status") == "rejected" and "prompt_version" in item["errors"], response.content


# --- the tenant boundary ----------------------------------------------------------------------------------


def test_tenant_a_neither_sees_nor_registers_under_tenant_bs_versions(api_a, api_b, critical, people, tenant_b):
    _register(api_b.client, "ticket-summary", "v1", f"You answer for {MARKER}.", model="gpt-4o")
    _register(api_b.client, "ticket-summary", f"{MARKER}-v2", f"You answer for {MARKER} at length.")

    listed = api_a.client.get(_url("ticket-summary"))
    assert listed.status_code == 200 and listed.json()["results"] == [] and MARKER not in listed.content.decode()
    assert api_a.client.get(_url("ticket-summary") + "?tenant=globex").status_code == 404
    stolen = api_a.client.post(
        _url("ticket-summary") + "?tenant=globex", {"label": "v9", "text": "x", "model": "gpt-4o"}, format="json"
    )
    assert stolen.status_code == 404
    # A's own v1 of the same shared workflow: a body naming B is ignored, B's version is untouched.
    mine = _register(api_a.client, "ticket-summary", "v1", BASE, model="gpt-4o", tenant="globex")
    assert mine["tenant"] == "acme" and mine["baseline"] is None
    assert PromptVersion.objects.get(tenant=tenant_b, label="v1").text == f"You answer for {MARKER}."

    client = _session(people["admin"])
    for url in (
        f"/workflows/ticket-summary/prompt-versions/{MARKER}-v2/",
        f"/workflows/ticket-summary/prompt-versions/{MARKER}-v2/?tenant=globex",
        "/workflows/ticket-summary/prompt-versions/v1/?tenant=globex",
    ):
        response = client.get(url)
        assert response.status_code == 404 and MARKER not in response.content.decode(), url
    own = client.get("/workflows/ticket-summary/prompt-versions/v1/")
    assert own.status_code == 200 and MARKER not in own.content.decode()
    page = client.get("/workflows/ticket-summary/")
    assert page.status_code == 200 and MARKER not in page.content.decode()


# --- the pages -----------------------------------------------------------------------------------------


def test_the_review_page_shows_the_diff_and_the_projection(api_a, critical, people):
    old_text = BASE + "Never <script>alert(1)</script> anything.\n"
    new_text = GROWN + "Sign off as <b>Support</b>.\n"
    _register(api_a.client, "ticket-summary", "v1", old_text, model="gpt-4o")
    for i in range(4):
        _usage(api_a.client, f"r{i}", "ticket-summary", input_tokens=2000, prompt_version="v1")
    rollups_refresh()
    grown = _register(api_a.client, "ticket-summary", "v2", new_text)
    client = _session(people["approver"])

    page = client.get("/workflows/ticket-summary/prompt-versions/v2/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<span class="diff__line diff__line--del">-Never &lt;script&gt;' in html
    assert '<span class="diff__line diff__line--add">+Sign off as &lt;b&gt;Support&lt;/b&gt;.</span>' in html
    assert '<span class="diff__line diff__line--add">+Quote the customer' in html
    old, new = _tokens(old_text), _tokens(new_text)
    assert f"+{new - old:,}" in html  # the token change, absolute
    assert f"{Decimal(new - old) * 100 / old:.1f}%" in html  # ... and in percent
    assert "at 4 calls in the last 30 days" in html
    assert grown["approval_id"] in html and "under review" in html

    # The workflow page lists both versions with the actual cost per call of v1's 4 calls.
    workflow_page = client.get("/workflows/ticket-summary/").content.decode()
    assert 'data-prompt-version="v1"' in workflow_page and 'data-prompt-version="v2"' in workflow_page
    assert "/workflows/ticket-summary/prompt-versions/v2/?tenant=acme" in workflow_page
    assert "$0.0060" in workflow_page  # 2,000 in + 100 out on gpt-4o: $0.005 + $0.001 per call

    # The approvals list links a prompt_change request to its review page.
    approvals = client.get("/approvals/").content.decode()
    assert "/workflows/ticket-summary/prompt-versions/v2/?tenant=acme" in approvals
