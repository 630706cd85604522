"""Spend dashboards from rollups: overview, attribution explorer (and its CSV), tenant and workflow pages.

Usage goes in through the ingest service, rollups are refreshed, and the pages are read with the
test client. Prices (tests/conftest.py `catalog`): gpt-4o $2.50 input / $10 output per 1M tokens,
o3 $2 / $8, claude-sonnet-4-5 $3 / $15, gemini-2.5-flash-lite $0.10 / $0.40.
"""

from __future__ import annotations

import csv
import html
import io
import itertools
import json
import re
from datetime import date, datetime, timedelta

import plotly.graph_objects as go
import pytest
from django.test import Client

from finops.models import Workflow
from finops.selectors.dashboard import day_start, utc_today
from finops.selectors.overview import overview_periods
from finops.services.ingest import usage_ingest
from finops.services.rollups import rollups_refresh
from tests.factories import MembershipFactory, UserFactory, WorkflowFactory

pytestmark = pytest.mark.django_db
_ids = itertools.count(1)

# 400,000 gpt-4o input tokens cost exactly $1.00; 100,000 gpt-4o output tokens too.
DOLLAR_OF_INPUT = 400_000


def ingest(tenant, *records: dict, now: datetime | None = None) -> None:
    """Store records for `tenant` through the ingest service, then refresh the rollups."""
    batch = []
    for r in records:
        item = {"request_id": f"req-{next(_ids)}", "model": "gpt-4o", "environment": "prod", **r}
        if isinstance(item.get("occurred_at"), datetime):
            item["occurred_at"] = item["occurred_at"].isoformat()
        batch.append(item)
    result = usage_ingest(records=batch, bound_tenant=tenant, now=now)
    assert result.all_stored, [(i.status, getattr(i, "errors", None)) for i in result.items]
    rollups_refresh()


def dollars(n: float, **extra) -> dict:
    """A gpt-4o call costing exactly `n` dollars (input tokens only)."""
    return {"input_tokens": int(n * DOLLAR_OF_INPUT), "output_tokens": 0, **extra}


def today_at(seconds: int = 1) -> datetime:
    return day_start(utc_today()) + timedelta(seconds=seconds)


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page(client, url, status=200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.content.decode()


def table_rows(body: str) -> list[list[str]]:
    """The explorer table as the page holds it: every row's `data-value` cells, totals row last."""
    table = re.search(r'<table[^>]*id="explore-table".*?</table>', body, re.S)
    assert table is not None
    rows = []
    for tr in re.findall(r"<tr data-row.*?</tr>", table.group(0), re.S):
        cells = []
        for attrs in re.findall(r"<td([^>]*)>", tr):
            cells.append(html.unescape(re.search(r'data-value="([^"]*)"', attrs).group(1)))
            key = re.search(r'data-key="([^"]*)"', attrs)
            if key:
                cells.append(html.unescape(key.group(1)))
        rows.append(cells)
    return rows


def figure(body: str, element_id: str) -> dict:
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', body, re.S)
    assert match is not None, element_id
    payload = json.loads(match.group(1))["figure"]
    go.Figure(payload)  # pages build the JSON by hand: it must still be a valid Plotly figure
    return payload


@pytest.fixture
def spend(catalog, tenant_a, tenant_b):
    """Tenant a: ticket-summary (registered) on gpt-4o and o3, an untagged chat call, one unknown model.
    Tenant b: a large call on a workflow only b uses (auto-discovered, name carries a marker)."""
    WorkflowFactory(
        slug="ticket-summary",
        name="Ticket summary",
        expected_input_tokens_p50=1000,
        expected_input_tokens_p95=3000,
        expected_output_tokens_p50=200,
        expected_output_tokens_p95=500,
        expected_calls_per_day=50,
    )
    ingest(
        tenant_a,
        dollars(2, workflow="ticket-summary", occurred_at=today_at(1), tags={"team": "support"}),
        dollars(1, workflow="ticket-summary", occurred_at=today_at(2), environment="stage", tags={"team": "support"}),
        # o3: 250,000 input x $2 + 62,500 output x $8 per 1M = $0.50 + $0.50
        {
            "workflow": "ticket-summary",
            "model": "o3",
            "input_tokens": 250_000,
            "output_tokens": 62_500,
            "occurred_at": today_at(3),
            "tags": {"team": "search"},
        },
        dollars(0.25, workflow="chat", occurred_at=today_at(4), environment="dev"),
        {
            "workflow": "chat",
            "model": "mystery-model-9",
            "input_tokens": 10,
            "output_tokens": 5,
            "occurred_at": today_at(5),
        },
    )
    ingest(
        tenant_b,
        dollars(40, workflow="marker-tenant-b-flow", occurred_at=today_at(6), tags={"team": "marker-tenant-b-team"}),
        dollars(5, workflow="ticket-summary", occurred_at=today_at(7)),
    )


# --- Overview ---------------------------------------------------------------------------------------


def test_overview_periods_are_calendar_periods_against_the_same_days_before():
    # Wednesday 2026-03-04: this week is Mon 2-Wed 4, last week Mon 23 Feb-Wed 25 Feb; this month
    # 1-4 March, last month 1-4 February.
    today_, week, month = overview_periods(date(2026, 3, 4))
    assert (today_.first, today_.previous_first, today_.previous_last) == (
        date(2026, 3, 4),
        date(2026, 3, 3),
        date(2026, 3, 3),
    )
    assert (week.first, week.last, week.previous_first, week.previous_last) == (
        date(2026, 3, 2),
        date(2026, 3, 4),
        date(2026, 2, 23),
        date(2026, 2, 25),
    )
    assert (month.first, month.previous_first, month.previous_last) == (
        date(2026, 3, 1),
        date(2026, 2, 1),
        date(2026, 2, 4),
    )
    # On 31 March the month before is shorter: compare with all of February.
    assert overview_periods(date(2026, 3, 31))[2].previous_last == date(2026, 2, 28)


def test_overview_shows_periods_with_change_against_the_period_before(viewer_a, tenant_a, catalog):
    today = utc_today()
    ingest(tenant_a, dollars(3, occurred_at=today_at(1)))
    # Yesterday, early enough to fall before today's hour: compared with today so far.
    ingest(tenant_a, dollars(2, occurred_at=day_start(today - timedelta(days=1)) + timedelta(seconds=1)))
    older = {today - timedelta(days=8): 5, today - timedelta(days=20): 11, today - timedelta(days=45): 13}
    for day, amount in older.items():
        when = day_start(day) + timedelta(hours=1)
        ingest(tenant_a, dollars(amount, occurred_at=when), now=when + timedelta(minutes=5))
    amounts = {today: 3, today - timedelta(days=1): 2, **older}

    def total(first: date, last: date) -> int:
        return sum(v for d, v in amounts.items() if first <= d <= last)

    monday = today - timedelta(days=today.weekday())
    month_first = today.replace(day=1)
    body = page(client_for(viewer_a), "/")

    assert "$3.00" in body and "+50.0%" in body and "vs $2.00 yesterday" in body
    assert f"${total(monday, today):,}.00" in body
    assert f"${total(month_first, today):,}.00" in body
    last_month_last = month_first - timedelta(days=1)
    previous_month = total(
        last_month_last.replace(day=1),
        min(last_month_last.replace(day=1) + (today - month_first), last_month_last),
    )
    assert f"vs ${previous_month:,}.00 last month" in body
    # The daily chart covers 30 days and only them: the 45-day-old $13 is not in its total.
    assert f"${total(today - timedelta(days=29), today):,}.00 in total" in body


def test_overview_attributes_spend_and_warns_about_unpriced_calls(viewer_a, spend):
    body = page(client_for(viewer_a), "/")
    assert "Top workflows" in body and "Ticket summary" in body and 'href="/workflows/ticket-summary/"' in body
    assert "Top models" in body and "gpt-4o" in body and "o3" in body
    assert "Spend by model tier" in body and "Standard" in body and "Premium" in body
    assert "Spend by environment" in body and "Stage" in body and "Dev" in body
    assert "$4.25" in body  # a's spend today: 2 + 1 + 1 (o3) + 0.25
    assert "1 call in the last 30 days is not priced" in body and "mystery-model-9" in body
    assert 'href="/usage/?priced=false"' in body
    assert "Top tenants" not in body  # one tenant: nothing to compare
    chart = figure(body, "daily-spend-figure")
    assert {t["name"] for t in chart["data"]} == {"Prod", "Stage", "Dev"}
    assert round(sum(sum(t["y"]) for t in chart["data"]), 2) == 4.25


def test_overview_empty_state(viewer_a):
    body = page(client_for(viewer_a), "/")
    assert "No usage yet" in body and "curl -X POST http://testserver/api/v1/usage" in body
    assert "daily-spend-figure" not in body


def test_overview_with_only_old_usage_says_so(viewer_a, tenant_a, catalog):
    when = day_start(utc_today() - timedelta(days=70))
    ingest(tenant_a, dollars(1, occurred_at=when), now=when + timedelta(minutes=1))
    body = page(client_for(viewer_a), "/")
    assert "Nothing in the last 30 days" in body and "No usage yet" not in body


def test_overview_for_an_operator_lists_tenants_with_links(operator, spend):
    body = page(client_for(operator), "/")
    assert "Top tenants" in body
    assert 'href="/tenants/acme/"' in body and 'href="/tenants/globex/"' in body
    assert "$49.25" in body  # both tenants today


def test_overview_query_count(operator, viewer_a, spend, django_assert_max_num_queries):
    # session, user, tenants; daily (3), hourly (2), workflow x model (3), tenants (3); workflow names;
    # variance from baseline (1)
    staff, member = client_for(operator), client_for(viewer_a)
    with django_assert_max_num_queries(16):
        page(staff, "/")
    with django_assert_max_num_queries(13):
        page(member, "/")


# --- Attribution explorer -----------------------------------------------------------------------------


def test_explorer_groups_by_workflow_with_totals_and_shares(viewer_a, spend):
    body = page(client_for(viewer_a), "/explore/?by=workflow&range=7d")
    rows = table_rows(body)
    header = ["Calls", "Unpriced calls", "Tokens", "Cost (USD)", "Cost per call (USD)", "Share of spend (%)"]
    assert all(f">{h}</" in body for h in header)
    assert rows == [
        ["Ticket summary", "ticket-summary", "3", "0", "1512500", "4.000000000", "1.333333333", "94.12"],
        ["Chat", "chat", "2", "1", "100015", "0.250000000", "0.250000000", "5.88"],
        ["Total", "", "5", "1", "1612515", "4.250000000", "1.062500000", "100.00"],
    ]


def test_explorer_two_dimensions_and_filters(viewer_a, spend):
    client = client_for(viewer_a)
    rows = table_rows(page(client, "/explore/?by=workflow&by2=model&range=24h&granularity=day"))
    assert [r[:3] for r in rows[:-1]] == [
        ["Ticket summary", "ticket-summary", "gpt-4o"],
        ["Ticket summary", "ticket-summary", "o3"],
        ["Chat", "chat", "gpt-4o"],
        ["Chat", "chat", "mystery-model-9"],
    ]
    stage = table_rows(page(client, "/explore/?by=model&environment=stage"))
    assert stage == [["gpt-4o", "1", "400000", "1.000000000", "1.000000000", "100.00"], stage[-1]]
    premium = table_rows(page(client, "/explore/?by=environment&tier=premium"))
    assert [r[0] for r in premium] == ["prod", "Total"] and premium[0][3] == "1.000000000"
    by_model = table_rows(page(client, "/explore/?by=tier&model=o3"))
    assert by_model[0][0] == "premium"


def test_explorer_groups_by_tag(viewer_a, spend):
    body = page(client_for(viewer_a), "/explore/?by=tag:team")
    assert '<option value="tag:team" selected>' in body
    rows = table_rows(body)
    assert [(r[0], r[3]) for r in rows] == [
        ("support", "3.000000000"),
        ("search", "1.000000000"),
        ("Total", "4.000000000"),
    ]
    assert "marker-tenant-b" not in body


def test_explorer_sorts_on_the_server(viewer_a, spend):
    client = client_for(viewer_a)
    by_calls = table_rows(page(client, "/explore/?by=model&sort=-calls"))
    assert [r[0] for r in by_calls[:-1]] == ["gpt-4o", "o3", "mystery-model-9"]
    by_name = table_rows(page(client, "/explore/?by=model&sort=name"))
    assert [r[0] for r in by_name[:-1]] == ["gpt-4o", "mystery-model-9", "o3"]
    # The sort link keeps the rest of the view and flips direction on the active column.
    body = page(client, "/explore/?by=model&range=7d&sort=calls")
    assert 'href="/explore/?by=model&amp;range=7d&amp;sort=-calls"' in body
    assert 'aria-sort="ascending"' in body


def test_explorer_csv_is_exactly_the_table(viewer_a, spend):
    client = client_for(viewer_a)
    for query in ("by=workflow&by2=model&range=7d", "by=tag:team&sort=name", "by=&range=mtd", "by=tenant"):
        body = page(client, f"/explore/?{query}")
        response = client.get(f"/explore/export.csv?{query}")
        assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
        assert "attachment; filename=" in response["Content-Disposition"]
        lines = list(csv.reader(io.StringIO(response.content.decode())))
        assert lines[1:] == table_rows(body), query
        assert lines[-1][0] == "Total"
    # The page links to the CSV of the same view.
    assert 'href="/explore/export.csv?by=tenant"' in page(client, "/explore/?by=tenant")


def test_explorer_csv_header_names_every_column(viewer_a, spend):
    response = client_for(viewer_a).get("/explore/export.csv?by=workflow&by2=environment")
    header = next(csv.reader(io.StringIO(response.content.decode())))
    assert header == [
        "Workflow",
        "Workflow slug",
        "Environment",
        "Calls",
        "Unpriced calls",
        "Tokens",
        "Cost (USD)",
        "Cost per call (USD)",
        "Share of spend (%)",
    ]


def test_explorer_hourly_series_for_the_last_24_hours(viewer_a, spend):
    body = page(client_for(viewer_a), "/explore/?range=24h&by=model")
    chart = figure(body, "explore-figure")
    assert len(chart["data"][0]["x"]) == 24
    assert {t["name"] for t in chart["data"]} == {"gpt-4o", "o3", "mystery-model-9"}
    assert round(sum(sum(t["y"]) for t in chart["data"]), 2) == 4.25


def test_explorer_shows_top_ten_series_and_other(viewer_a, tenant_a, catalog):
    ingest(tenant_a, *[dollars(i + 1, workflow=f"flow-{i:02d}", occurred_at=today_at(i + 1)) for i in range(12)])
    body = page(client_for(viewer_a), "/explore/?by=workflow&range=7d")
    names = [t["name"] for t in figure(body, "explore-figure")["data"]]
    assert len(names) == 11 and names[-1] == "Other" and names[0] == "Flow 11"  # auto-discovered names
    assert len(table_rows(body)) == 13  # the table keeps every group, and the totals


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("range=30d&granularity=hour", "Hourly spend is kept for recent days only"),
        ("by=nonsense", "is not something spend can be grouped by"),
        ("range=custom&start=2026-13-01&end=2026-01-01", "is not a date"),
        ("start=2026-02-10&end=2026-02-01", "The end date is before the start date"),
        ("start=2020-01-01&end=2026-01-01", "Pick at most 400 days"),
        ("start=9999-12-30&end=9999-12-31", "is out of range"),
        ("by=tag:team&by2=model", "Tags combine with tenant, workflow and environment"),
        ("granularity=week", "Granularity is hour, day or month"),
        ("range=forever", "Pick a time range from the list"),
        ("tag=novalue", "Filter on a tag as key=value"),
        ("environment=moon", "There is no environment"),
    ],
)
def test_explorer_explains_bad_parameters(viewer_a, spend, query, message):
    client = client_for(viewer_a)
    response = client.get(f"/explore/?{query}")
    assert response.status_code == 400
    body = response.content.decode()
    assert message in body and "This view cannot be shown" in body
    assert 'name="by"' in body  # the form is still there to fix it
    csv_response = client.get(f"/explore/export.csv?{query}")
    assert csv_response.status_code == 400 and message in csv_response.content.decode()


@pytest.mark.parametrize(
    "query",
    [
        "by=tag:",
        "by=tag:a%20b",
        "by=&by2=tenant",
        "by=model&by2=model",
        "granularity=&range=",
        "sort=-",
        "sort=%3Bdrop",
        "tag==x",
        "tag=k=",
        "model=%00",
        "workflow=x%00y",
        "start=2026-01-01",
        "end=1999-01-01",
        "by=tenant&tenant=",
        "range=24h&granularity=month",
    ],
)
def test_explorer_never_answers_500(viewer_a, spend, query):
    client = client_for(viewer_a)
    for url in (f"/explore/?{query}", f"/explore/export.csv?{query}"):
        assert client.get(url).status_code in (200, 400), url


@pytest.mark.parametrize("query", ["days=abc", "days=-1", "days=90&days=30", "tenant=acme"])
def test_detail_pages_tolerate_odd_parameters(viewer_a, spend, query):
    client = client_for(viewer_a)
    assert client.get(f"/tenants/acme/?{query}").status_code in (200, 302)
    assert client.get(f"/workflows/ticket-summary/?{query}").status_code == 200


def test_explorer_custom_dates_and_empty_range(viewer_a, spend):
    client = client_for(viewer_a)
    today = utc_today()
    body = page(client, f"/explore/?start={today.isoformat()}&end={today.isoformat()}&by=model")
    assert '<option value="custom" selected>' in body
    assert table_rows(body)[-1][4] == "4.250000000"
    empty = page(client, "/explore/?start=2025-01-01&end=2025-01-31")
    assert "Nothing in this range" in empty and "explore-figure" not in empty


def test_explorer_offers_tag_keys_of_visible_tenants_only(viewer_a, operator, spend):
    own = page(client_for(viewer_a), "/explore/")
    assert 'value="tag:team"' in own
    # b's tag *values* never reach a; keys are offered from a's own rollups.
    assert "marker-tenant-b" not in own


def test_explorer_query_count(operator, spend, django_assert_max_num_queries):
    client = client_for(operator)
    # session, user, tenants; spend: groups, top-10 series, workflow and tenant slugs (4); workflow
    # names; options: workflows, models, tiers, tag keys
    with django_assert_max_num_queries(12):
        page(client, "/explore/?by=workflow&by2=tenant&range=90d")
    with django_assert_max_num_queries(7):
        client.get("/explore/export.csv?by=workflow&by2=tenant&range=90d")


def test_explorer_keeps_its_view_when_the_tenant_switcher_is_used(operator, spend):
    body = page(client_for(operator), "/explore/?by=model&range=7d&tenant=acme")
    switcher = re.search(r'<form class="tenant-switcher".*?</form>', body, re.S).group(0)
    assert '<input type="hidden" name="by" value="model">' in switcher
    assert '<input type="hidden" name="range" value="7d">' in switcher
    assert "$45.00" not in body and "$4.25" in body


# --- Tenant page ------------------------------------------------------------------------------------------


def test_tenant_page_shows_spend_token_mix_and_top_lists(viewer_a, spend):
    body = page(client_for(viewer_a), "/tenants/acme/")
    assert "Acme Corp (marker-tenant-a)" in body
    assert "$4.25" in body  # spend over 30 days
    assert "Ticket summary" in body and "gpt-4o" in body and "o3" in body
    tokens = figure(body, "token-figure")
    assert {t["name"] for t in tokens["data"]} == {"Input", "Output"}
    assert sum(sum(t["y"]) for t in tokens["data"]) == 1_612_515
    spend_chart = figure(body, "spend-figure")
    assert {t["name"] for t in spend_chart["data"]} == {"Ticket summary", "Chat"}
    assert "per-call-figure" in body
    assert 'aria-current="true">30 days' in body
    assert 'aria-current="true">90 days' in page(client_for(viewer_a), "/tenants/acme/?days=90")


def test_tenant_page_of_another_tenant_is_404_like_a_missing_one(viewer_a, spend):
    client = client_for(viewer_a)
    other = client.get("/tenants/globex/")
    missing = client.get("/tenants/no-such-tenant/")
    assert other.status_code == missing.status_code == 404
    assert "marker-tenant-b" not in other.content.decode()


def test_tenant_page_for_operators_and_the_switcher(operator, spend):
    client = client_for(operator)
    assert "$45.00" in page(client, "/tenants/globex/")
    response = client.get("/tenants/acme/?tenant=globex")
    assert response.status_code == 302 and response["Location"] == "/tenants/globex/"
    assert client.get("/tenants/acme/?tenant=")["Location"] == "/"


def test_tenant_page_without_usage(viewer_a, tenant_a):
    body = page(client_for(viewer_a), "/tenants/acme/")
    assert "No usage in the last 30 days" in body and "spend-figure" not in body


def test_tenant_page_query_count(viewer_a, spend, django_assert_max_num_queries):
    client = client_for(viewer_a)
    # session, user, tenants; by workflow (3), by model (3), workflow names, daily profile; variance (1)
    with django_assert_max_num_queries(12):
        page(client, "/tenants/acme/")


# --- Workflow page ------------------------------------------------------------------------------------------


def test_workflow_page_against_its_envelope(viewer_a, spend):
    body = page(client_for(viewer_a), "/workflows/ticket-summary/")
    assert "Ticket summary" in body and "$4.00" in body
    assert "$5.00" not in body  # tenant b's call of the same workflow
    assert "No envelope set" not in body and "3,000" in body
    inputs = figure(body, "input-figure")
    names = [t.get("name") for t in inputs["data"]]
    assert "Envelope p50–p95" in names and "Expected p95" in names
    mean = next(t for t in inputs["data"] if t.get("name") == "Mean per call")
    assert mean["y"][-1] == pytest.approx((800_000 + 400_000 + 250_000) / 3)
    calls = figure(body, "calls-figure")
    expected = next(t for t in calls["data"] if t["name"] == "Expected")
    assert expected["y"][-1] == 50  # one tenant used it today
    assert next(t for t in calls["data"] if t["name"] == "Calls")["y"][-1] == 3


def test_workflow_page_without_envelope_says_so(viewer_a, spend):
    body = page(client_for(viewer_a), "/workflows/chat/")
    assert "No envelope set" in body
    assert "Envelope p50–p95" not in body


def test_workflow_page_cross_tenant(viewer_a, viewer_b, operator, spend):
    # b's auto-discovered workflow: its name is b's and a sees it nowhere; its page answers 404.
    a = client_for(viewer_a)
    other = a.get("/workflows/marker-tenant-b-flow/")
    assert other.status_code == a.get("/workflows/no-such-flow/").status_code == 404
    assert "marker-tenant-b" not in other.content.decode()
    operator_body = page(client_for(operator), "/workflows/ticket-summary/")
    assert "$9.00" in operator_body and "Tenants" in operator_body
    assert "Globex Inc (marker-tenant-b)" in operator_body
    assert "$40.00" in page(client_for(viewer_b), "/workflows/marker-tenant-b-flow/")


def test_workflow_page_query_count(operator, spend, django_assert_max_num_queries):
    client = client_for(operator)
    # session, user, tenants, workflow; by model (3), by tenant (3), daily profile; prompt versions and
    # their usage (2; +1 for their reviews when there are versions); the observed envelope (1), for operators
    # its pending proposal (1); variance (1)
    with django_assert_max_num_queries(16):
        page(client, "/workflows/ticket-summary/")


# --- Tenant boundary on every dashboard -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/explore/",
        "/explore/?by=tenant",
        "/explore/?by=workflow&by2=model",
        "/explore/?by=tag:team",
        "/explore/?by=environment&range=24h",
        "/explore/export.csv?by=workflow&by2=tenant",
        "/tenants/acme/",
        "/workflows/ticket-summary/",
        "/workflows/chat/",
    ],
)
def test_viewer_never_sees_another_tenants_data(viewer_a, spend, url):
    body = page(client_for(viewer_a), url)
    assert "marker-tenant-b" not in body
    assert "$45.00" not in body and "45.000000000" not in body


def test_viewer_cannot_ask_for_another_tenant(viewer_a, spend):
    client = client_for(viewer_a)
    for url in ("/?tenant=globex", "/explore/?tenant=globex", "/workflows/ticket-summary/?tenant=globex"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert "marker-tenant-b" not in response.content.decode()


def test_operator_sees_every_tenant_and_can_narrow(operator, spend):
    client = client_for(operator)
    rows = table_rows(page(client, "/explore/?by=tenant"))
    assert [r[1] for r in rows[:-1]] == ["globex", "acme"]
    assert rows[-1][5] == "49.250000000"
    only_a = table_rows(page(client, "/explore/?by=tenant&tenant=acme"))
    assert [r[1] for r in only_a[:-1]] == ["acme"]


def test_member_of_two_tenants_sees_both_and_nothing_else(tenant_a, tenant_b, spend):
    user = UserFactory(username="two-hats")
    MembershipFactory(user=user, tenant=tenant_a)
    MembershipFactory(user=user, tenant=tenant_b)
    client = client_for(user)
    assert "$49.25" in page(client, "/")
    assert "Top tenants" in page(client, "/")
    assert page(client, "/tenants/globex/")
    assert [r[1] for r in table_rows(page(client, "/explore/?by=tenant"))[:-1]] == ["globex", "acme"]


def test_navigation_links_the_explorer(viewer_a):
    body = page(client_for(viewer_a), "/")
    assert 'href="/explore/"' in body


def test_every_dashboard_renders_local_plotly_only(operator, spend):
    client = client_for(operator)
    for url in ("/", "/explore/", "/tenants/acme/", "/workflows/ticket-summary/"):
        body = page(client, url)
        assert '<script src="/static/js/plotly.min.js"' in body
        assert "cdn" not in re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", body).lower()


@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/explore/?by=workflow&by2=model",
        "/explore/?range=90d&granularity=day",
        "/explore/?range=24h",
        "/explore/?range=90d&granularity=month&by=tenant",
        "/explore/?by=",
        "/tenants/acme/",
        "/workflows/ticket-summary/",
        "/workflows/chat/",
    ],
)
def test_every_figure_is_a_valid_plotly_figure_with_data(operator, spend, url):
    body = page(client_for(operator), url)
    ids = re.findall(r'data-plotly-figure="([^"]+)"', body)
    assert ids
    for element_id in ids:
        fig = figure(body, element_id)
        assert fig["data"] and all(t.get("x") or t.get("values") for t in fig["data"]), element_id


def test_auto_discovered_workflow_is_marked(viewer_b, spend):
    assert Workflow.objects.get(slug="marker-tenant-b-flow").status == Workflow.Status.AUTO_DISCOVERED
    assert "auto-discovered" in page(client_for(viewer_b), "/workflows/marker-tenant-b-flow/")


def test_long_range_at_month_granularity(viewer_a, tenant_a, catalog):
    when = day_start(utc_today() - timedelta(days=30))
    ingest(tenant_a, dollars(7, occurred_at=when), now=when + timedelta(minutes=1))
    ingest(tenant_a, dollars(1, occurred_at=today_at(1)))
    first = (utc_today() - timedelta(days=399)).isoformat()
    body = page(client_for(viewer_a), f"/explore/?start={first}&end={utc_today().isoformat()}&granularity=month")
    chart = figure(body, "explore-figure")
    assert len(chart["data"][0]["x"]) in (14, 15)  # every month of the 400 days gets a slot
    assert table_rows(body)[-1][4] == "8.000000000"
