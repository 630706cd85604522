"""The overview: its figure is drawn by the local Plotly bundle with real data, and the tenant
switcher changes the URL and the figure."""

from __future__ import annotations

from finops.models import Environment

from .helpers import figures, screenshot, sign_in, wait_for_figures, wait_for_query, y_total


def test_overview_draws_spend_and_the_tenant_switcher_narrows_it(page, demo):
    plotly_responses = []
    page.on("response", lambda r: r.url.endswith("/static/js/plotly.min.js") and plotly_responses.append(r.status))
    sign_in(page, demo.operator, demo.password)
    wait_for_figures(page)
    screenshot(page, "overview")

    assert plotly_responses == [200], "Plotly comes from the app's own /static/"
    assert page.evaluate("typeof window.Plotly") == "object"
    assert page.evaluate("document.querySelector('.js-plotly-plot').data.length") > 0
    figs = figures(page)
    assert figs and all(traces and y_total(traces) > 0 for traces in figs), "every figure has data"
    daily = figs[0]  # spend over time, by environment
    assert {t["name"] for t in daily} <= set(Environment.labels)
    all_tenants = y_total(daily)

    cards = page.locator(".cards .card__value").all_inner_texts()
    assert len(cards) == 3 and all(c.startswith("$") for c in cards)
    assert cards[2] != "$0.00"
    # Initech's unknown model is in the demo data: the overview says so and links to it.
    banner = page.locator(".banner--warn")
    assert demo.other_marker in banner.inner_text()
    assert "priced=false" in banner.locator("a").get_attribute("href")
    assert "Top tenants" in page.inner_text("main")

    page.select_option("#tenant-switcher", demo.tenant_slug)  # submits on change
    wait_for_query(page, tenant=demo.tenant_slug)
    screenshot(page, "overview-one-tenant")
    one_tenant = y_total(figures(page)[0])
    assert 0 < one_tenant < all_tenants
    assert page.locator("#tenant-switcher").input_value() == demo.tenant_slug
    assert "Top tenants" not in page.inner_text("main")
    assert page.locator(".page-head__sub .scope-label").inner_text() == demo.tenant_name
    # Links to the other pages keep the choice.
    usage_link = page.locator("nav.mainnav a", has_text="Usage").get_attribute("href")
    assert usage_link == f"/usage/?tenant={demo.tenant_slug}"
