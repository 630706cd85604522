"""Budgets, controls and alerts in the browser, on the demo data set: the demo budgets and their burn,
a burn-down figure drawn with data, the active controls of a tenant over its budget, and acknowledging
an alert.

Demo budgets are sized from the expected spend of their whole window, so whether the spiking tenant is
already over its daily budget depends on how far its day has gone. The tests that need a budget over
its limits play the live demo's scripted runaway loop first (finops/services/seed/demo_live.py), which
takes the spiking tenant over its daily budget at any hour, through the ingest API."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from budgets.services.demo import _BUDGETS
from budgets.services.ladder import budgets_evaluate
from finops.services import seed
from finops.services.seed.demo_live import DemoTraffic, demo_pairs, ticks_between

from .helpers import figures, screenshot, sign_in, visit, wait_for_figures, y_total

OVER_BUDGET = next(b.name for b in _BUDGETS if b.spiking)  # the runaway loop's tenant's daily budget


@pytest.fixture
def runaway(demo):
    """Two minutes of the demo's runaway loop on Northwind, sent through the ingest API, then the ladder."""
    start = timezone.now()
    traffic = DemoTraffic(pairs=demo_pairs(), speed=0, first_incident_after=0, rng=random.Random(5), started_at=start)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {seed.DEMO_PLATFORM_KEY}")
    for tick in ticks_between(start, start + timedelta(seconds=115), traffic.interval):
        records = traffic.batch(tick)
        if records:
            assert client.post("/api/v1/usage", {"records": records}, format="json").status_code == 200
    budgets_evaluate(now=timezone.now())
    return demo


def test_budgets_list_shows_the_demo_budgets_and_the_burn_down_has_data(page, runaway):
    demo = runaway
    sign_in(page, demo.operator, demo.password, next="/budgets/")
    screenshot(page, "budgets")
    rows = page.locator("table.table--budgets tbody tr")
    assert rows.count() == len(_BUDGETS)
    names = page.locator("table.table--budgets .budget-name > a").all_inner_texts()
    assert set(names) == {b.name for b in _BUDGETS}
    spiking = rows.filter(has_text=OVER_BUDGET)
    assert spiking.locator(".badge").inner_text() in ("over soft", "forecast over hard", "at hard")
    assert spiking.locator("td.num").first.inner_text().startswith("$")
    assert "tokens" in rows.filter(has_text="tokens").first.inner_text()

    with page.expect_navigation():
        page.click(f"text={OVER_BUDGET}")
    wait_for_figures(page)
    screenshot(page, "budget-detail")
    assert OVER_BUDGET in page.locator("h1").inner_text()
    [burn_down] = figures(page)
    traces = {t["name"]: t for t in burn_down}
    assert {"Spent", "Soft limit", "Hard limit"} <= set(traces)
    assert max(traces["Spent"]["y"]) > 0
    assert traces["Hard limit"]["y"][0] > traces["Soft limit"]["y"][0] > 0
    assert y_total(burn_down) > 0
    # the controls the ladder started for it are listed on its page
    assert page.locator("#budget-controls ~ * tbody tr, section:has(#budget-controls) tbody tr").count() >= 1


def test_controls_page_shows_the_over_budget_tenants_active_controls(page, runaway):
    demo = runaway
    sign_in(page, demo.operator, demo.password, next="/controls/")
    screenshot(page, "controls")
    active = page.locator("section:has(#active-controls) tbody tr")
    assert active.count() >= 2
    text = page.locator("section:has(#active-controls)").inner_text()
    assert f"tenant {demo.tenant_slug}" in text
    assert OVER_BUDGET in text
    assert "Cap Output Tokens" in text or "cap_output_tokens" in text.lower().replace(" ", "_")
    # operators can end them: each active row has a form
    assert page.locator("section:has(#active-controls) form.inline-form").count() == active.count()


def test_approver_acknowledges_an_alert(page, runaway):
    demo = runaway
    sign_in(page, "northwind-approver", demo.password, next="/alerts/")
    screenshot(page, "alerts")
    open_rows = page.locator("section:has(#open-alerts) tbody tr")
    before = open_rows.count()
    assert before >= 1
    first = open_rows.first
    subject = first.locator("td:nth-child(3) strong").inner_text()
    assert OVER_BUDGET in subject
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


def test_viewer_sees_alerts_without_acknowledging_and_no_other_tenant(page, runaway):
    demo = runaway
    sign_in(page, demo.viewer, demo.password, next="/alerts/")
    assert page.locator("section:has(#open-alerts) tbody tr").count() >= 1
    assert page.get_by_role("button", name="Acknowledge").count() == 0
    visit(page, "/budgets/")
    body = page.inner_text("main")
    assert "Platform monthly" not in body and "Initech" not in body
    assert "Northwind Traders monthly" in body
