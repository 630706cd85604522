"""Budgets, controls and alerts in the browser, on the demo data set: the demo budgets and their burn,
a burn-down figure drawn with data, the spiking tenant's active controls, and acknowledging an alert."""

from __future__ import annotations

from budgets.services.demo import _BUDGETS

from .helpers import figures, screenshot, sign_in, visit, wait_for_figures, y_total

SPIKING_BUDGET = next(b.name for b in _BUDGETS if b.spiking)


def test_budgets_list_shows_the_demo_budgets_and_the_burn_down_has_data(page, demo):
    sign_in(page, demo.operator, demo.password, next="/budgets/")
    screenshot(page, "budgets")
    rows = page.locator("table.table--budgets tbody tr")
    assert rows.count() == len(_BUDGETS)
    names = page.locator("table.table--budgets .budget-name > a").all_inner_texts()
    assert set(names) == {b.name for b in _BUDGETS}
    spiking = rows.filter(has_text=SPIKING_BUDGET)
    assert spiking.locator(".badge").inner_text() in ("over soft", "forecast over hard", "at hard")
    assert spiking.locator("td.num").first.inner_text().startswith("$")
    assert "tokens" in rows.filter(has_text="tokens").first.inner_text()

    with page.expect_navigation():
        page.click(f"text={SPIKING_BUDGET}")
    wait_for_figures(page)
    screenshot(page, "budget-detail")
    assert SPIKING_BUDGET in page.locator("h1").inner_text()
    [burn_down] = figures(page)
    traces = {t["name"]: t for t in burn_down}
    assert {"Spent", "Soft limit", "Hard limit"} <= set(traces)
    assert max(traces["Spent"]["y"]) > 0
    assert traces["Hard limit"]["y"][0] > traces["Soft limit"]["y"][0] > 0
    assert y_total(burn_down) > 0
    # the controls the ladder started for it are listed on its page
    assert page.locator("#budget-controls ~ * tbody tr, section:has(#budget-controls) tbody tr").count() >= 1


def test_controls_page_shows_the_spiking_tenants_active_controls(page, demo):
    sign_in(page, demo.operator, demo.password, next="/controls/")
    screenshot(page, "controls")
    active = page.locator("section:has(#active-controls) tbody tr")
    assert active.count() >= 2
    text = page.locator("section:has(#active-controls)").inner_text()
    assert f"tenant {demo.tenant_slug}" in text
    assert SPIKING_BUDGET in text
    assert "Cap Output Tokens" in text or "cap_output_tokens" in text.lower().replace(" ", "_")
    # operators can end them: each active row has a form
    assert page.locator("section:has(#active-controls) form.inline-form").count() == active.count()


def test_approver_acknowledges_an_alert(page, demo):
    sign_in(page, "northwind-approver", demo.password, next="/alerts/")
    screenshot(page, "alerts")
    open_rows = page.locator("section:has(#open-alerts) tbody tr")
    before = open_rows.count()
    assert before >= 1
    first = open_rows.first
    subject = first.locator("td:nth-child(3) strong").inner_text()
    assert SPIKING_BUDGET in subject
    assert "sent" in first.locator(".deliveries").inner_text() or "pending" in first.locator(".deliveries").inner_text()
    badge = page.locator("nav.mainnav .nav-count")
    assert badge.inner_text() == str(before)

    with page.expect_navigation():
        first.get_by_role("button", name="Acknowledge").click()
    page.wait_for_load_state("load")
    screenshot(page, "alerts-acknowledged")
    assert "Acknowledged:" in page.locator(".messages").inner_text()
    assert page.locator("section:has(#open-alerts) tbody tr").count() == before - 1
    acknowledged = page.locator("section:has(#acknowledged-alerts)").inner_text()
    assert subject in acknowledged and "by northwind-approver" in acknowledged


def test_viewer_sees_alerts_without_acknowledging_and_no_other_tenant(page, demo):
    sign_in(page, demo.viewer, demo.password, next="/alerts/")
    assert page.locator("section:has(#open-alerts) tbody tr").count() >= 1
    assert page.get_by_role("button", name="Acknowledge").count() == 0
    visit(page, "/budgets/")
    body = page.inner_text("main")
    assert "Platform monthly" not in body and "Initech" not in body
    assert "Northwind Traders monthly" in body
