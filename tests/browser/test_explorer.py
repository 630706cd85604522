"""The attribution explorer (/explore/): every control lives in the query string (`by`, `by2`, `range`,
`start`, `end`, `granularity`, the filters, `sort`), changing one changes the figure and the table,
and the CSV download holds exactly the rows the table shows."""

from __future__ import annotations

import csv
from datetime import UTC

import pytest

from finops.models import UsageRecord

from .helpers import figures, query, screenshot, sign_in, wait_for_figures, y_total

EXPLORE = "/explore/"
FORM = "main form:has(select[name='by'])"
TABLE = "main table#explore-table"

pytestmark = pytest.mark.requires_page(EXPLORE)


def _apply(page, **expected: str) -> None:
    """Press the form's Apply button and wait for the page whose URL holds `expected`."""
    page.locator(f"{FORM} button[type=submit]").click()
    page.wait_for_url(lambda url: all(query(url).get(k) == [v] for k, v in expected.items()))
    page.wait_for_load_state("load")
    wait_for_figures(page)


def _trace_names(page) -> list[str]:
    return sorted(t["name"] for fig in figures(page) for t in fig)


def _first_column(page) -> list[str]:
    """What the table's first column holds, as the CSV writes it (the cell's data-value)."""
    cells = page.locator(f"{TABLE} tbody tr > :first-child")
    return [
        value if value is not None else " ".join(text.split())
        for value, text in zip(
            cells.evaluate_all("cells => cells.map(c => c.dataset.value ?? null)"),
            cells.all_inner_texts(),
            strict=True,
        )
    ]


def _open(page, demo, path: str) -> None:
    sign_in(page, demo.operator, demo.password, next=path)
    page.wait_for_load_state("load")
    wait_for_figures(page)


def test_changing_group_by_changes_the_url_the_figure_and_the_table(page, demo):
    _open(page, demo, f"{EXPLORE}?by=workflow&granularity=day")
    screenshot(page, "explorer")
    figs = figures(page)
    assert figs and figs[0] and y_total(figs[0]) > 0, "the explorer draws a time series with data"
    assert page.locator(f"{FORM} select[name='by']").input_value() == "workflow"
    names_before, rows_before = _trace_names(page), _first_column(page)
    assert rows_before

    page.locator(f"{FORM} select[name='by']").select_option("model")
    _apply(page, by="model")
    screenshot(page, "explorer-by-model")
    assert page.locator(f"{FORM} select[name='by']").input_value() == "model"
    names_after, rows_after = _trace_names(page), _first_column(page)
    assert names_after and names_after != names_before
    assert rows_after and rows_after != rows_before
    assert y_total(figures(page)[0]) == pytest.approx(y_total(figs[0]), rel=1e-6)  # same money, cut differently

    # The table sorts by a column from its header; the sort is in the URL too.
    page.locator(f"{TABLE} thead a", has_text="Calls").click()
    page.wait_for_url(lambda url: query(url).get("sort", [""])[0].lstrip("-") == "calls")
    headers = [h.strip().lower() for h in page.locator(f"{TABLE} thead th").all_text_contents()]
    calls_column = headers.index("calls") + 1
    cells = page.locator(f"{TABLE} tbody tr:not(.is-other) > :nth-child({calls_column})")
    calls = [int(v) for v in cells.evaluate_all("cells => cells.map(c => c.dataset.value)")]
    assert calls and calls in (sorted(calls), sorted(calls, reverse=True))
    assert query(page.url)["by"] == ["model"], "sorting keeps the grouping"


def test_filters_and_granularity_are_in_the_url_and_change_the_figure(page, demo):
    _open(page, demo, f"{EXPLORE}?by=environment&granularity=day")
    daily_total = y_total(figures(page)[0])
    assert daily_total > 0

    page.locator(f"{FORM} select[name='granularity']").select_option("month")
    _apply(page, granularity="month", by="environment")
    monthly = figures(page)[0]
    assert all(str(x)[8:10] == "01" for t in monthly for x in t["x"]), "monthly buckets start on the 1st"
    assert y_total(monthly) == pytest.approx(daily_total, rel=1e-6)  # same range, coarser buckets

    page.locator(f"{FORM} select[name='environment']").select_option("prod")
    _apply(page, environment="prod", granularity="month")
    prod_total = y_total(figures(page)[0])
    assert 0 < prod_total < daily_total
    assert set(_first_column(page)) == {"prod"}

    # From the newest record's day on (UTC): less than the whole range, which spans two days or more.
    newest_day = UsageRecord.objects.latest("occurred_at").occurred_at.astimezone(UTC).date().isoformat()
    page.locator(f"{FORM} input[name='start']").fill(newest_day)
    _apply(page, start=newest_day, environment="prod", granularity="month")
    screenshot(page, "explorer-filtered")
    assert 0 < y_total(figures(page)[0]) < prod_total


def test_csv_download_has_the_rows_the_table_shows(page, demo):
    _open(page, demo, f"{EXPLORE}?by=workflow&by2=environment&granularity=day")
    shown = _first_column(page)
    assert shown

    with page.expect_download() as download_info:
        page.locator("main a[download], main a[href*='csv']").first.click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    with open(download.path(), newline="", encoding="utf-8-sig") as f:
        header, *rows = [r for r in csv.reader(f) if r]
    assert header[0] == "Workflow"
    # The file ends with the totals line that the table shows in its footer.
    assert rows[-1][0] == "Total"
    assert [r[0] for r in rows[:-1]] == shown
    footer = page.locator(f"{TABLE} tfoot tr > *").evaluate_all("cells => cells.map(c => c.dataset.value)")
    assert [v for v in rows[-1] if v] == [v for v in footer if v]
