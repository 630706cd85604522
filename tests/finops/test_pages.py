"""Pages for people: sign-in, overview, usage list/detail, error pages, and the tenant boundary."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.utils import timezone

from finops.models import UsageRecord, Workflow
from finops.selectors.dashboard import day_start, utc_today
from finops.services.rollups import rollup_mark_dirty, rollups_refresh
from finops.templatetags.money import percent, signed_percent, tokens, usd, usd_exact
from tests.factories import MembershipFactory, TenantFactory, UserFactory, WorkflowFactory

PASSWORD = "pw-for-tests-1"  # tests/factories.py UserFactory
_request_ids = itertools.count(1)


def _record(
    tenant,
    *,
    cost_nanos: int | None,
    occurred_at=None,
    model_name="gpt-4o",
    workflow=None,
    environment="prod",
    input_tokens=1000,
    output_tokens=100,
    request_id=None,
) -> UsageRecord:
    occurred_at = occurred_at or day_start(utc_today()) + timedelta(seconds=1)
    record = UsageRecord.objects.create(
        tenant=tenant,
        workflow=workflow,
        model_name=model_name,
        environment=environment,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_nanos=cost_nanos,
        priced=cost_nanos is not None,
        occurred_at=occurred_at,
        received_at=occurred_at,
        request_id=request_id or f"req-{next(_request_ids)}",
        content_hash="0" * 32,
    )
    # Written past the ingest service, so mark its day for the rollups as ingest does; dashboards
    # read rollups only.
    rollup_mark_dirty(pairs=[(tenant.pk, occurred_at.astimezone(UTC).date())])
    rollups_refresh()
    return record


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _assert_no_cdn(html: str) -> None:
    # CSRF tokens are random letters and may spell "cdn"; they are not references, so drop them first.
    page = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", html).lower()
    assert "cdn" not in page
    assert "https://" not in page


def _html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


# --- Sign-in ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_login_page_renders():
    html = _html(Client().get("/accounts/login/"))
    assert "Sign in to Tokenspend" in html
    assert 'name="username"' in html and 'name="password"' in html
    assert "csrfmiddlewaretoken" in html
    _assert_no_cdn(html)


def test_login_with_right_password_redirects_to_overview(viewer_a):
    client = Client()
    response = client.post("/accounts/login/", {"username": "viewer-a", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_login_with_wrong_password_says_so(viewer_a):
    response = Client().post("/accounts/login/", {"username": "viewer-a", "password": "not-the-password"})
    html = _html(response)
    assert "Please enter a correct username and password" in html
    assert 'value="viewer-a"' in html  # the username is kept


def test_sign_out_is_a_post_form_and_works(viewer_a):
    client = _client_for(viewer_a)
    html = _html(client.get("/"))
    assert re.search(r'<form method="post" action="/accounts/logout/">', html)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert client.get("/").status_code == 302


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/", "/usage/", "/usage/1/"])
def test_anonymous_is_sent_to_login(url):
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


# --- Overview --------------------------------------------------------------------------------------


def test_overview_shows_spend_for_today_week_and_month(viewer_a, tenant_a):
    today = utc_today()
    start = day_start(today)
    _record(tenant_a, cost_nanos=1_000_000_000_000, occurred_at=start + timedelta(seconds=1))  # $1,000
    _record(tenant_a, cost_nanos=234_560_000_000, occurred_at=start + timedelta(seconds=2))  # $234.56
    old = start - timedelta(days=40)
    _record(tenant_a, cost_nanos=100_000_000_000, occurred_at=old)  # before every period shown

    html = _html(_client_for(viewer_a).get("/"))

    assert "$1,234.56" in html  # today, and this week and month so far
    assert "$1,334.56" not in html
    assert "2 calls" in html
    assert "No usage yet" not in html


def test_overview_humanizes_tokens_and_shows_small_amounts_precisely(viewer_a, tenant_a):
    _record(tenant_a, cost_nanos=4_213_000, input_tokens=1_200_000, output_tokens=34_567)
    html = _html(_client_for(viewer_a).get("/"))
    assert "$0.0042" in html
    assert "1.2M tokens" in html


def test_overview_chart_is_built_on_the_server_and_rendered_by_local_plotly(viewer_a, tenant_a):
    _record(tenant_a, cost_nanos=2_500_000_000)
    html = _html(_client_for(viewer_a).get("/"))
    assert '<script src="/static/js/plotly.min.js"' in html
    figure = re.search(r'<script id="daily-spend-figure" type="application/json">(.*?)</script>', html, re.S)
    assert figure is not None
    assert '"displaylogo": false' in figure.group(1)
    assert '"type": "bar"' in figure.group(1)


def test_overview_tables_attribute_spend(viewer_a, tenant_a):
    summary = WorkflowFactory(slug="ticket-summary", name="Ticket summary")
    _record(tenant_a, cost_nanos=3_000_000_000, workflow=summary, model_name="claude-sonnet-4-5", environment="stage")
    _record(tenant_a, cost_nanos=1_000_000_000, model_name="gpt-4o", environment="prod")
    html = _html(_client_for(viewer_a).get("/"))
    assert "Top workflows" in html and "Ticket summary" in html and "(no workflow)" in html
    assert "Top models" in html and "claude-sonnet-4-5" in html
    assert "Spend by environment" in html and "Stage" in html
    assert 'href="/workflows/ticket-summary/"' in html
    assert "Top tenants" not in html  # one tenant only: nothing to compare


def test_unpriced_banner_appears_only_when_unpriced_usage_exists(viewer_a, tenant_a):
    client = _client_for(viewer_a)
    _record(tenant_a, cost_nanos=1_000_000_000)
    html = _html(client.get("/"))
    assert "not priced" not in html

    _record(tenant_a, cost_nanos=None, model_name="mystery-model-x")
    _record(tenant_a, cost_nanos=None, model_name="mystery-model-y")
    html = _html(client.get("/"))
    assert "2 calls in the last 30 days are not priced" in html
    assert "mystery-model-x" in html and "mystery-model-y" in html
    assert 'href="/usage/?priced=false"' in html
    assert "$1.00" in html  # unpriced calls never count as zero-cost spend, nor change the total


def test_empty_state_explains_how_to_report_usage(viewer_a, tenant_a):
    html = _html(_client_for(viewer_a).get("/"))
    assert "No usage yet" in html
    assert "curl -X POST http://testserver/api/v1/usage" in html
    assert 'href="/api/docs/"' in html
    assert "daily-spend-figure" not in html
    _assert_no_cdn(html)


def test_overview_query_count_stays_small(operator, tenant_a, tenant_b, django_assert_max_num_queries):
    for i in range(20):
        _record(tenant_a if i % 2 else tenant_b, cost_nanos=1_000_000 * i, model_name=f"model-{i % 3}")
    _record(tenant_a, cost_nanos=None, model_name="unknown-model")
    client = _client_for(operator)
    # session, user, visible tenants; from rollups: daily by tier and environment (3), today's hours (2),
    # 30 days by workflow and model (3), by tenant (3); workflow names; variance from baseline (1). Whatever
    # the number of records.
    with django_assert_max_num_queries(16):
        _html(client.get("/"))


# --- Tenant boundary -------------------------------------------------------------------------------


@pytest.fixture
def two_tenants_of_records(tenant_a, tenant_b):
    a = _record(tenant_a, cost_nanos=1_000_000_000, model_name="model-of-a", request_id="req-of-tenant-a")
    # A workflow first seen in tenant b's usage: its name is tenant b's and must not leak either.
    b_flow = WorkflowFactory(slug="marker-tenant-b-flow", status=Workflow.Status.AUTO_DISCOVERED)
    b = _record(
        tenant_b,
        cost_nanos=7_000_000_000,
        model_name="marker-tenant-b-model",
        request_id="marker-tenant-b-req",
        workflow=b_flow,
    )
    _record(tenant_b, cost_nanos=None, model_name="marker-tenant-b-unpriced")
    return a, b


@pytest.mark.parametrize("url", ["/", "/usage/", "/usage/?priced=false", "/usage/?environment=prod"])
def test_viewer_never_sees_another_tenants_data(viewer_a, two_tenants_of_records, url):
    html = _html(_client_for(viewer_a).get(url))
    assert "marker-tenant-b" not in html
    assert "$7.00" not in html


def test_viewer_sees_own_tenant_only_figures(viewer_a, two_tenants_of_records):
    html = _html(_client_for(viewer_a).get("/"))
    assert "$1.00" in html
    assert "not priced" not in html  # tenant b's unpriced record does not raise a's banner
    assert "req-of-tenant-a" in _html(_client_for(viewer_a).get("/usage/"))


@pytest.mark.parametrize("url", ["/?tenant=globex", "/usage/?tenant=globex", "/?tenant=no-such-tenant"])
def test_asking_for_a_tenant_one_cannot_see_is_404(viewer_a, two_tenants_of_records, url):
    response = _client_for(viewer_a).get(url)
    assert response.status_code == 404
    assert "marker-tenant-b" not in response.content.decode()


def test_usage_detail_of_another_tenants_record_is_404_like_a_missing_one(viewer_a, two_tenants_of_records):
    own, other = two_tenants_of_records
    client = _client_for(viewer_a)
    assert "req-of-tenant-a" in _html(client.get(f"/usage/{own.pk}/"))
    foreign = client.get(f"/usage/{other.pk}/")
    missing = client.get(f"/usage/{other.pk + 1000}/")
    assert foreign.status_code == missing.status_code == 404
    assert "marker-tenant-b" not in foreign.content.decode()
    assert "Page not found" in foreign.content.decode()  # the layout's 404 page


def test_operator_sees_both_tenants_and_can_narrow_to_one(operator, two_tenants_of_records):
    client = _client_for(operator)
    html = _html(client.get("/"))
    assert "Top tenants" in html
    assert "marker-tenant-a" in html and "marker-tenant-b" in html
    assert "$8.00" in html  # both tenants' spend
    assert 'name="tenant"' in html  # the switcher

    usage = _html(client.get("/usage/"))
    assert "req-of-tenant-a" in usage and "marker-tenant-b-req" in usage

    only_b = _html(client.get("/?tenant=globex"))
    assert "$7.00" in only_b and "marker-tenant-b-unpriced" in only_b
    assert "model-of-a" not in only_b
    assert "req-of-tenant-a" not in _html(client.get("/usage/?tenant=globex"))


def test_member_of_several_tenants_uses_the_switcher(tenant_a, tenant_b, two_tenants_of_records):
    user = UserFactory(username="two-hats")
    MembershipFactory(user=user, tenant=tenant_a)
    MembershipFactory(user=user, tenant=tenant_b)
    client = _client_for(user)
    html = _html(client.get("/"))
    assert '<option value="acme"' in html and '<option value="globex"' in html
    assert "$8.00" in html
    only_a = _html(client.get("/?tenant=acme"))
    assert "$1.00" in only_a
    assert "$7.00" not in only_a and "marker-tenant-b-unpriced" not in only_a


def test_single_tenant_member_sees_no_switcher(viewer_a, two_tenants_of_records):
    html = _html(_client_for(viewer_a).get("/"))
    assert 'id="tenant-switcher"' not in html


# --- Usage list and detail -------------------------------------------------------------------------


def test_usage_list_columns_and_unpriced_badge(viewer_a, tenant_a):
    _record(tenant_a, cost_nanos=None, model_name="mystery-model", input_tokens=12_345)
    _record(tenant_a, cost_nanos=42_000_000, model_name="gpt-4o")
    html = _html(_client_for(viewer_a).get("/usage/"))
    assert "mystery-model" in html and "unpriced</span>" in html
    assert "12,345" in html
    assert "$0.0420" in html
    assert "—" in html  # the unpriced record has no cost


def test_usage_list_filters(viewer_a, tenant_a):
    summary = WorkflowFactory(slug="ticket-summary")
    _record(tenant_a, cost_nanos=1, workflow=summary, request_id="req-summary", environment="dev")
    _record(tenant_a, cost_nanos=1, request_id="req-other", model_name="o3")
    _record(tenant_a, cost_nanos=None, request_id="req-unpriced", model_name="mystery")
    client = _client_for(viewer_a)

    def ids(query):
        return set(re.findall(r"req-[a-z]+", _html(client.get("/usage/" + query))))

    assert ids("?workflow=ticket-summary") == {"req-summary"}
    assert ids("?environment=dev") == {"req-summary"}
    assert ids("?model=o3") == {"req-other"}
    assert ids("?priced=false") == {"req-unpriced"}
    assert ids("?priced=true") == {"req-summary", "req-other"}
    assert "No records match these filters" in _html(client.get("/usage/?workflow=nothing"))


@pytest.mark.parametrize("spacing", [timedelta(minutes=1), timedelta(hours=1)], ids=["dense", "sparse"])
def test_usage_list_is_newest_first_and_paginated_by_50(viewer_a, tenant_a, spacing):
    # Dense: pages come from the one-day window next to the cursor; sparse: from the unbounded query.
    now = timezone.now()
    for i in range(120):
        _record(tenant_a, cost_nanos=i, occurred_at=now - (120 - i) * spacing, request_id=f"req-{i:03d}")
    client = _client_for(viewer_a)

    def shown(html):
        return [int(n) for n in re.findall(r">req-(\d{3})<", html)]

    def link(html, rel):
        return re.search(rf'href="\?cursor=([^"]+)" rel="{rel}"', html).group(1)

    first = _html(client.get("/usage/"))
    assert shown(first) == list(range(119, 69, -1))
    assert 'rel="prev"' not in first

    second = _html(client.get(f"/usage/?cursor={link(first, 'next')}"))
    assert shown(second) == list(range(69, 19, -1))

    third = _html(client.get(f"/usage/?cursor={link(second, 'next')}"))
    assert shown(third) == list(range(19, -1, -1))
    assert 'rel="next"' not in third

    back = _html(client.get(f"/usage/?cursor={link(third, 'prev')}"))
    assert shown(back) == shown(second)
    assert shown(_html(client.get(f"/usage/?cursor={link(back, 'prev')}"))) == shown(first)


def test_usage_list_ignores_a_malformed_cursor(viewer_a, tenant_a):
    _record(tenant_a, cost_nanos=1, request_id="req-only")
    for cursor in ("garbage", "o-1", "x123-4", "o99999999999999999999999-1"):
        assert "req-only" in _html(_client_for(viewer_a).get(f"/usage/?cursor={cursor}"))


def test_usage_list_empty_state(viewer_a):
    html = _html(_client_for(viewer_a).get("/usage/"))
    assert "No usage recorded yet" in html
    assert 'href="/api/docs/"' in html


def test_usage_detail_shows_the_record(viewer_a, tenant_a):
    record = _record(tenant_a, cost_nanos=1_234, model_name="mystery-model", request_id="req-detail")
    html = _html(_client_for(viewer_a).get(f"/usage/{record.pk}/"))
    assert "req-detail" in html
    assert "$0.000001234" in html  # exact nano-USD
    assert "marker-tenant-a" in html


# --- Static files, layout and error pages --------------------------------------------------------------


@pytest.mark.django_db
def test_plotly_bundle_is_served_locally():
    response = Client().get("/static/js/plotly.min.js")
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"plotly.js" in body[:500]


def test_no_page_references_a_cdn(operator, viewer_a, two_tenants_of_records):
    own, _ = two_tenants_of_records
    pages = [(Client(), "/accounts/login/")]
    pages += [
        (_client_for(user), url) for user in (operator, viewer_a) for url in ("/", "/usage/", f"/usage/{own.pk}/")
    ]
    for client, url in pages:
        html = _html(client.get(url))
        _assert_no_cdn(html)


def test_layout_navigation(operator, viewer_a):
    staff = _html(_client_for(operator).get("/"))
    member = _html(_client_for(viewer_a).get("/"))
    for html in (staff, member):
        assert "Tokenspend" in html
        assert 'href="/usage/"' in html and 'href="/api/docs/"' in html
    assert 'href="/admin/"' in staff
    assert 'href="/admin/"' not in member


def test_server_error_page_renders_without_a_request():
    html = render_to_string("500.html")
    assert "Something went wrong" in html
    assert "Tokenspend" in html


# --- Display filters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nanos", "expected"),
    [
        (None, "—"),
        (0, "$0.00"),
        (1_234_560_000_000, "$1,234.56"),
        (1_000_000_000, "$1.00"),
        (4_200_000, "$0.0042"),
        (530_000_000, "$0.5300"),
        (999_990_000, "$1.00"),  # rounds up to a dollar: shown in cents
        (12_345, "$0.000012"),  # below a hundredth of a cent: two significant digits, never "$0.0000"
    ],
)
def test_usd_filter(nanos, expected):
    assert usd(nanos) == expected


def test_usd_exact_filter():
    assert usd_exact(1_234) == "$0.000001234"
    assert usd_exact(None) == "—"


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (None, "—"),
        (0, "0"),
        (999, "999"),
        (1_234, "1.2K"),
        (1_234_567, "1.2M"),
        (999_990, "1M"),
        (3_400_000_000, "3.4B"),
    ],
)
def test_tokens_filter(count, expected):
    assert tokens(count) == expected


def test_percent_filters():
    assert percent(Decimal("0.1234")) == "12.3%"
    assert percent(Decimal("0.0004")) == "<0.1%"
    assert percent(0) == "0.0%"
    assert signed_percent(Decimal("0.5")) == "+50.0%"
    assert signed_percent(Decimal("-0.0404")) == "−4.0%"
    assert signed_percent(Decimal("2.345")) == "+235%"
    assert signed_percent(0) == "±0%"
    assert signed_percent(None) == "—"


def test_member_of_several_tenants_never_sees_a_third(tenant_a, tenant_b, two_tenants_of_records):

    third = TenantFactory(slug="initech", name="Initech (marker-tenant-c)")
    _record(third, cost_nanos=50_000_000_000, model_name="marker-tenant-c-model", request_id="marker-tenant-c-req")
    user = UserFactory(username="two-hats")
    MembershipFactory(user=user, tenant=tenant_a)
    MembershipFactory(user=user, tenant=tenant_b)
    client = _client_for(user)
    for url in ("/", "/usage/", "/usage/?priced=false"):
        assert "marker-tenant-c" not in _html(client.get(url)), url
    assert client.get("/?tenant=initech").status_code == 404
    record = UsageRecord.objects.get(request_id="marker-tenant-c-req")
    assert client.get(f"/usage/{record.pk}/").status_code == 404
