"""The tenant page (/tenants/<slug>/) and the workflow page (/workflows/<slug>/): spend over time and
the token mix drawn with data (a viewer's view of them is in test_tenant_boundary.py)."""

from __future__ import annotations

import pytest

from .helpers import figures, screenshot, sign_in, visit, wait_for_figures, y_total

WORKFLOW = "sql-copilot"
WORKFLOW_NAME = "SQL copilot"


def _assert_figures_have_data(page) -> None:
    figs = figures(page)
    assert figs, "the page draws figures"
    for traces in figs:
        assert traces and y_total(traces) > 0


@pytest.mark.requires_page("/tenants/northwind/")
def test_tenant_page_shows_spend_and_token_mix(page, demo):
    sign_in(page, demo.operator, demo.password, next=f"/tenants/{demo.tenant_slug}/")
    wait_for_figures(page)
    screenshot(page, "tenant")
    assert demo.tenant_name in page.locator("h1").inner_text()
    _assert_figures_have_data(page)
    body = page.inner_text("main").lower()
    for bucket in ("input", "cached", "output", "reasoning"):
        assert bucket in body, f"the token mix names {bucket}"


@pytest.mark.requires_page(f"/workflows/{WORKFLOW}/")
def test_workflow_page_shows_spend_and_narrows_to_one_tenant(page, demo):
    sign_in(page, demo.operator, demo.password, next=f"/workflows/{WORKFLOW}/")
    wait_for_figures(page)
    assert WORKFLOW_NAME in page.locator("h1").inner_text()
    _assert_figures_have_data(page)
    everyone = sum(y_total(f) for f in figures(page))

    visit(page, f"/workflows/{WORKFLOW}/?tenant={demo.tenant_slug}", shot="workflow")
    assert 0 < sum(y_total(f) for f in figures(page)) < everyone
    body = page.inner_text("main").lower()
    assert "per call" in body
