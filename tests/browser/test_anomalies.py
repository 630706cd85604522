"""The anomalies page in the browser, on the demo data set: the spiking tenant's loop is open with its
chart of actual against the expected band and the control it started; feedback is recorded."""

from __future__ import annotations

import re

from finops.services import seed

from .helpers import figures, screenshot, sign_in, wait_for_figures


def test_the_demo_spike_shows_on_the_anomalies_page_with_its_chart_and_control(page, demo):
    # The job scores after a week of hourly history: the demo's default (75 days) has it, the browser
    # tests' quick one (2 days) is extended here.
    seed.demo_seed(days=9)
    sign_in(page, demo.operator, demo.password, next="/anomalies/")
    wait_for_figures(page)
    screenshot(page, "anomalies")
    assert page.locator("h1").inner_text() == "Anomalies"
    # The loop's block, wherever it sorts: at some hours of the day the demo's Northwind chat assistant also
    # has a newer tokens-per-call anomaly (its release's longer prompts), listed first.
    block = (
        page.locator("article.anomaly").filter(has_text="Northwind").filter(has_text=re.compile("runaway loop", re.I))
    )
    block = block.first
    assert "runaway loop" in block.inner_text().lower()
    assert block.locator("[data-control]").count() >= 1 and "active" in block.inner_text()
    charts = [{t["name"]: t for t in traces} for traces in figures(page)]
    traces = next(c for c in charts if "Actual (calls/h)" in c)  # the loop's chart: calls per hour
    assert {"Expected", "Expected band"} <= set(traces) and max(v for v in traces["Actual (calls/h)"]["y"] if v) > 0

    with page.expect_navigation():
        block.locator("a").first.click()
    wait_for_figures(page)
    screenshot(page, "anomaly-detail")
    page.check("input[name=feedback][value=confirmed]")
    with page.expect_navigation():
        page.click("text=Save feedback")
    assert "Recorded: Confirmed." in page.inner_text("body")
