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
    row = waiting.filter(has_text="In-app chat assistant")
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
