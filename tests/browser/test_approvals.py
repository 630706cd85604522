"""The approvals page in the browser, on the demo data set: the spiking tenant's held chat-assistant run,
approved by one of its approvers, moves from waiting to decided."""

from __future__ import annotations

from budgets.services.demo import APPROVAL_MODEL

from .helpers import screenshot, sign_in


def test_approver_approves_the_demo_request(page, demo):
    sign_in(page, "northwind-approver", demo.password, next="/approvals/")
    screenshot(page, "approvals")
    waiting = page.locator("section:has(#pending-approvals) tbody tr")
    assert waiting.count() == 1
    row = waiting.first
    text = row.inner_text()
    assert "In-app chat assistant" in text and demo.tenant_name in text and APPROVAL_MODEL in text
    assert "Approval required above $0.50" in text
    assert row.locator("td.num").inner_text().startswith("$")
    assert page.locator("nav.mainnav .nav-approvals-count").inner_text() == "1"

    row.get_by_label("Comment (optional)").fill("Customer escalation, go ahead")
    with page.expect_navigation():
        row.get_by_role("button", name="Approve").click()
    page.wait_for_load_state("load")
    screenshot(page, "approvals-approved")
    message = page.locator(".messages").inner_text()
    assert "Approved the run of chat-assistant" in message and "next preflight with approval_id" in message
    assert page.locator("section:has(#pending-approvals) tbody tr").count() == 0
    assert "Nothing waiting" in page.locator("section:has(#pending-approvals)").inner_text()
    decided = page.locator("section:has(#decided-approvals) tbody tr")
    assert decided.count() == 1
    decided_text = decided.first.inner_text()
    assert "approved" in decided_text and "by northwind-approver" in decided_text
    assert "Customer escalation, go ahead" in decided_text
    assert page.locator("nav.mainnav .nav-approvals-count").count() == 0


def test_viewer_sees_the_request_without_buttons(page, demo):
    sign_in(page, demo.viewer, demo.password, next="/approvals/")
    assert page.locator("section:has(#pending-approvals) tbody tr").count() == 1
    assert page.get_by_role("button", name="Approve").count() == 0
    assert page.get_by_role("button", name="Reject").count() == 0
