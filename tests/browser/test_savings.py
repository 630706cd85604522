"""The savings page (/savings/): what caching and controls saved, the what-if form, recommendations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from budgets.savings import savings_summary, whatif_reprice
from finops.models import LlmModel, Workflow
from finops.pricing import nanos_to_usd
from tenants.models import Tenant
from tenants.scope import TenantScope

from .helpers import screenshot, sign_in

pytestmark = pytest.mark.requires_page("/savings/")


def test_viewer_sees_savings_and_reprices_a_workflow_on_another_model(page, demo):
    sign_in(page, demo.viewer, demo.password, next="/savings/")
    assert page.locator("h1").inner_text() == "Savings"
    scope = TenantScope.for_tenant(Tenant.objects.get(slug=demo.tenant_slug))
    until = timezone.now()
    summary = savings_summary(scope=scope, since=until - timedelta(days=30), until=until)
    cards = page.locator("[data-testid=cache-saved]").inner_text()
    assert cards.startswith("$")
    assert page.locator("[data-testid=hit-rate]").inner_text() == summary.hit_rate_pct
    assert demo.other_marker not in page.content()
    screenshot(page, "savings")

    form = page.locator("[data-testid=whatif-form]")
    slug = next(w.workflow for w in summary.workflows if w.workflow_id is not None and w.calls)
    form.locator("select[name=workflow]").select_option(slug)
    form.locator("select[name=model]").select_option("gpt-4o-mini")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    result = page.locator("[data-testid=whatif-result]")
    assert result.is_visible()
    expected = whatif_reprice(
        scope=scope,
        workflow=Workflow.objects.get(slug=slug),
        target=LlmModel.objects.get(name="gpt-4o-mini"),
        since=timezone.now() - timedelta(days=30),
        until=timezone.now(),
    )
    assert "On gpt-4o-mini" in result.inner_text() and expected.calls > 0
    assert nanos_to_usd(expected.actual_nanos) in result.inner_text()
    assert nanos_to_usd(expected.whatif_nanos) in result.inner_text()
    monthly = page.locator("[data-testid=whatif-monthly]").inner_text()
    assert monthly.endswith(nanos_to_usd(abs(expected.monthly_difference_nanos)))
    screenshot(page, "savings-whatif")
