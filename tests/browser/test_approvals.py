"""The approvals page in the browser, on the demo data set: the spiking tenant's held chat-assistant run,
approved by one of its approvers, moves from waiting to decided, and the service's next preflight with
its id runs; whoever asked for a request sees no decide buttons on it."""

from __future__ import annotations

import json
import urllib.request

from budgets.models import Budget
from budgets.services.budgets import budget_update
from budgets.services.demo import APPROVAL_MODEL, APPROVAL_WORKFLOW
from finops.services.seed import DEMO_API_KEY

from .helpers import screenshot, sign_in


def _preflight(base_url: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{base_url}/api/v1/preflight",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {DEMO_API_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_approver_approves_the_demo_request_and_the_next_preflight_runs(page, demo, live_server):
    sign_in(page, "northwind-approver", demo.password, next="/approvals/")
    screenshot(page, "approvals")
    waiting = page.locator("section:has(#pending-approvals) tbody tr")
    pending = waiting.count()
    assert pending >= 2, "the demo has a held run and a budget increase waiting"
    # The held run (the demo's prompt change to the same workflow waits too, in a row of its own).
    row = waiting.filter(has_text="In-app chat assistant").filter(has_not_text="Prompt change")
    assert row.count() == 1
    approval_id = row.get_attribute("data-approval")
    text = row.inner_text()
    assert "In-app chat assistant" in text and demo.tenant_name in text and APPROVAL_MODEL in text
    assert "Approval required above $0.50" in text
    assert row.locator("td.num").inner_text().startswith("$")
    assert page.locator("nav.mainnav .nav-approvals-count").inner_text() == str(pending)

    row.get_by_label("Comment (optional)").fill("Customer escalation, go ahead")
    with page.expect_navigation():
        row.get_by_role("button", name="Approve").click()
    page.wait_for_load_state("load")
    screenshot(page, "approvals-approved")
    message = page.locator(".messages").inner_text()
    assert "Approved the run of chat-assistant" in message and "next preflight with approval_id" in message
    assert page.locator("section:has(#pending-approvals) tbody tr").count() == pending - 1
    decided = page.locator("section:has(#decided-approvals) tbody tr")
    assert decided.count() == 1
    decided_text = decided.first.inner_text()
    assert "approved" in decided_text and "by northwind-approver" in decided_text
    assert "Customer escalation, go ahead" in decided_text
    assert page.locator("nav.mainnav .nav-approvals-count").inner_text() == str(pending - 1)

    # The spiking tenant's daily budget has no room left for so big a run: an operator gives it room
    # (the budget, not the approval, is what would deny it), then the service presents the approval
    # and the run it covers goes through, once.
    daily = Budget.objects.get(tenant__slug=demo.tenant_slug, period="day")
    budget_update(budget=daily, hard_limit=1000 * 10**9, soft_limit=None)
    call = {"workflow": APPROVAL_WORKFLOW, "model": APPROVAL_MODEL, "input_tokens": 170_000,
            "max_output_tokens": 8_000, "approval_id": approval_id}  # fmt: skip
    answer = _preflight(live_server.url, call)
    assert answer["decision"] == "allow" and answer["approval_id"] == approval_id, answer
    # (The tenant's compress-context control may shrink the run below the approval threshold, in which
    # case it runs without using the approval; either way it is no longer held.)
    assert answer["approval_status"] in ("approved", "consumed")


def test_the_requester_sees_no_decide_buttons_on_their_own_request(page, demo):
    sign_in(page, "northwind-admin", demo.password, next="/approvals/")
    own = page.locator("section:has(#pending-approvals) tbody tr").filter(has_text="Budget increase")
    assert own.count() == 1
    assert own.get_by_role("button", name="Approve").count() == 0
    assert "another approver" in own.inner_text()
    # The held run was asked for by the demo key, not by this admin: the admin may decide that one.
    run = page.locator("section:has(#pending-approvals) tbody tr").filter(has_text="In-app chat assistant")
    assert run.get_by_role("button", name="Approve").count() == 1


def test_viewer_sees_the_request_without_buttons(page, demo):
    sign_in(page, demo.viewer, demo.password, next="/approvals/")
    assert page.locator("section:has(#pending-approvals) tbody tr").count() >= 2
    assert page.get_by_role("button", name="Approve").count() == 0
    assert page.get_by_role("button", name="Reject").count() == 0


# A pull-request bot's prompt (a high-priority workflow), then a version that drops a line and grows.
PR_PROMPT_V1 = (
    "You review pull requests for Northwind Traders' services.\n"
    "Flag security issues first.\n"
    "Keep each comment under two sentences.\n"
)
PR_PROMPT_V2 = (
    "You review pull requests for Northwind Traders' services.\n"
    "Flag security issues first.\n"
    "Check every SQL query for injection and every template for unescaped output.\n"
    "Quote the offending line, say why it is a problem, and propose the smallest fix that solves it.\n"
    "Group comments by file and order them by severity: security, correctness, performance, style.\n"
)


def test_a_prompt_change_request_shows_the_same_diff_and_projection_as_the_version_page(page, demo):
    from django.contrib.auth import get_user_model

    from finops.models import PromptVersion, Workflow
    from finops.selectors.prompts import prompt_projection, prompt_version_baseline
    from finops.services.prompts import prompt_version_register
    from finops.templatetags.money import usd
    from tenants.models import Tenant
    from tenants.scope import Actor, TenantScope

    tenant = Tenant.objects.get(slug=demo.tenant_slug)
    workflow = Workflow.objects.get(slug="code-review-bot")
    assert workflow.priority == Workflow.Priority.HIGH
    admin = Actor(user=get_user_model().objects.get(username="northwind-admin"))
    common = {"tenant": tenant, "workflow": workflow, "actor": admin}
    prompt_version_register(label="pr-v1", text=PR_PROMPT_V1, model_name="o3", **common)
    grown = prompt_version_register(label="pr-v2", text=PR_PROMPT_V2, **common).version
    assert grown.status == PromptVersion.Status.UNDER_REVIEW
    own = TenantScope.for_tenant(tenant)
    projection = prompt_projection(
        scope=own, workflow=workflow, baseline=prompt_version_baseline(scope=own, workflow=workflow, before=grown),
        new_tokens=grown.input_tokens, new_cost_nanos=grown.estimated_cost_per_call_nanos,
    )  # fmt: skip
    monthly = f"+{usd(projection.monthly_cost_change_nanos)}"
    assert projection.monthly_cost_change_nanos and projection.monthly_cost_change_nanos > 0

    sign_in(page, "northwind-approver", demo.password, next="/approvals/?kind=prompt_change")
    rows = page.locator("section:has(#pending-approvals) tbody tr").filter(has_text="Pull request review bot")
    assert rows.count() == 1
    with page.expect_navigation():
        rows.get_by_role("link", name="Review the request →").click()
    page.wait_for_load_state("load")
    screenshot(page, "approval-prompt-change")
    request_url = page.url

    def diff_and_projection() -> tuple[list[str], list[str], str, str]:
        return (
            page.locator(".diff .diff__line--add").all_inner_texts(),
            page.locator(".diff .diff__line--del").all_inner_texts(),
            page.locator("[data-monthly-change]").inner_text(),
            page.locator("[data-token-change]").inner_text(),
        )

    added, removed, shown_monthly, token_change = diff_and_projection()
    assert "Prompt change: Pull request review bot" in page.locator("h1").inner_text()
    assert removed == ["-Keep each comment under two sentences."]
    assert "+Check every SQL query for injection and every template for unescaped output." in added
    assert len(added) == 3
    assert shown_monthly == monthly
    assert token_change == f"+{projection.token_change:,}"
    assert page.locator(".card__value").filter(has_text="$").count() >= 2

    # The version's own page shows the same diff and the same projection.
    with page.expect_navigation():
        page.get_by_role("link", name="version pr-v2's page →").click()
    page.wait_for_load_state("load")
    assert "/workflows/code-review-bot/prompt-versions/pr-v2/" in page.url
    assert diff_and_projection() == (added, removed, shown_monthly, token_change)

    # Back on the request: Approve needs the confirmation ticked (the browser refuses the form without it).
    page.goto(request_url)
    decision = page.locator("#decide")
    decision.get_by_role("button", name="Approve").click()
    assert page.url == request_url and page.locator("#decide form").count() == 1
    assert PromptVersion.objects.get(pk=grown.pk).status == PromptVersion.Status.UNDER_REVIEW
    decision.get_by_label("Comment").fill("Security checks are worth the tokens")
    decision.get_by_label("I have read the estimate and the budget state").check()
    with page.expect_navigation():
        decision.get_by_role("button", name="Approve").click()
    page.wait_for_load_state("load")
    screenshot(page, "approval-prompt-change-approved")
    assert page.url == request_url
    assert "Approved prompt version pr-v2" in page.locator(".messages").inner_text()
    assert "approved" in page.locator("h1 .badge").inner_text()
    assert "Security checks are worth the tokens" in page.locator("section:has(#history-heading)").inner_text()
    assert PromptVersion.objects.get(pk=grown.pk).status == PromptVersion.Status.ACTIVE
