"""The usage list: its filters go into the query string and narrow the rows; a record opens."""

from __future__ import annotations

from finops.models import Environment, UsageRecord

from .helpers import query, screenshot, sign_in, wait_for_query

ROWS = "table.table--usage tbody tr"
ENV_COLUMN = 5  # 1-based: Time, Tenant, Workflow, Model, Env


def _column(page, n: int) -> list[str]:
    return [t.strip() for t in page.locator(f"{ROWS} td:nth-child({n})").all_inner_texts()]


def test_environment_and_pricing_filters_change_the_url_and_the_rows(page, demo):
    # The newest page of records is mostly production; pick a rarer environment that has rows.
    rare = next(
        env for env in (Environment.DEV, Environment.STAGE) if UsageRecord.objects.filter(environment=env).exists()
    )
    sign_in(page, demo.operator, demo.password, next="/usage/")
    screenshot(page, "usage-list")
    before = _column(page, ENV_COLUMN)
    assert len(before) == 50  # a full first page
    assert set(before) != {rare.value}

    page.select_option("#f-environment", rare.value)
    page.click("form.filters button[type=submit]")
    wait_for_query(page, environment=rare.value)
    screenshot(page, "usage-list-filtered")
    after = _column(page, ENV_COLUMN)
    assert after and set(after) == {rare.value}
    assert page.locator("#f-environment").input_value() == rare.value
    assert page.locator("form.filters a", has_text="Clear").is_visible()

    # A second filter keeps the first one.
    page.select_option("#f-environment", "")
    page.select_option("#f-priced", "false")
    page.click("form.filters button[type=submit]")
    wait_for_query(page, priced="false")
    assert query(page.url).get("environment", [""]) == [""]
    unpriced = UsageRecord.objects.filter(priced=False)
    models = _column(page, 4)
    assert len(models) == min(unpriced.count(), 50)
    assert all(demo.other_marker in m and "unpriced" in m for m in models)

    page.click("form.filters a:has-text('Clear')")
    page.wait_for_url("**/usage/")
    assert len(_column(page, ENV_COLUMN)) == 50


def test_workflow_filter_and_record_detail(page, demo):
    sign_in(page, demo.operator, demo.password, next="/usage/")
    page.fill("#f-workflow", "sql-copilot")
    page.click("form.filters button[type=submit]")
    wait_for_query(page, workflow="sql-copilot")
    workflows = _column(page, 3)
    assert workflows and set(workflows) == {"sql-copilot"}

    request_id = page.locator(f"{ROWS} td:last-child a").first.inner_text()
    with page.expect_navigation():
        page.locator(f"{ROWS} td:last-child a").first.click()
    record = UsageRecord.objects.get(request_id=request_id)
    assert page.url.endswith(f"/usage/{record.pk}/")
    assert page.locator("h1").inner_text() == request_id
    assert record.tenant.name in page.locator(".page-head__sub").inner_text()
    screenshot(page, "usage-detail")
