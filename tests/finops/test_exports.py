"""FOCUS export of usage: columns, exact costs, periods, tags, the tenant boundary and the range limits."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from django.test import Client

from finops.models import ModelPrice, UsageRecord
from tests.factories import WorkflowFactory

pytestmark = pytest.mark.django_db

API = "/api/v1/exports/focus.csv"
PAGE = "/exports/focus.csv"
# Two days ago at 10:17:05.25 UTC: inside the default 30-day range, not on an hour boundary.
NOW = datetime.now(UTC)
BASE = (NOW - timedelta(days=2)).replace(hour=10, minute=17, second=5, microsecond=250_000)
_ids = itertools.count(1)

FOCUS_NAMES = [
    "BillingAccountId",
    "BillingAccountName",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeDescription",
    "ServiceName",
    "ServiceCategory",
    "ProviderName",
    "PublisherName",
    "InvoiceIssuerName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "SkuId",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingQuantity",
    "PricingUnit",
    "ListCost",
    "BilledCost",
    "EffectiveCost",
    "ContractedCost",
    "BillingCurrency",
    "RegionId",
    "Tags",
]
COSTS = ("ListCost", "BilledCost", "EffectiveCost", "ContractedCost")


def _usage(tenant, *, catalog=None, model="gpt-4o", cost_nanos=None, occurred_at=None, **fields) -> UsageRecord:
    known = (catalog or {}).get(model)
    occurred_at = occurred_at or BASE
    price = known and ModelPrice.objects.filter(model=known).order_by("-effective_from").first()
    return UsageRecord.objects.create(
        tenant=tenant,
        model=known or None,
        model_name=fields.pop("model_name", model),
        price=price if cost_nanos is not None else None,
        cost_nanos=cost_nanos,
        priced=cost_nanos is not None,
        occurred_at=occurred_at,
        received_at=occurred_at,
        request_id=fields.pop("request_id", f"req-{next(_ids)}"),
        content_hash="0" * 32,
        **fields,
    )


def _rows(response) -> tuple[list[str], list[dict[str, str]]]:
    assert response.status_code == 200, getattr(response, "content", b"")[:500]
    assert response.streaming
    body = b"".join(response.streaming_content).decode()
    reader = csv.reader(io.StringIO(body))
    header = next(reader)
    return header, [dict(zip(header, row, strict=True)) for row in reader]


def _body(response) -> str:
    return b"".join(response.streaming_content).decode() if response.streaming else response.content.decode()


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def usage(tenant_a, tenant_b, catalog):
    """Tenant a: a priced call with tags, an unpriced one, one too old for the default range; tenant b: one call."""
    summary = WorkflowFactory(slug="ticket-summary")
    priced = _usage(
        tenant_a,
        catalog=catalog,
        cost_nanos=12_345_678_901,  # $12.345678901: nine places survive
        workflow=summary,
        environment="stage",
        input_tokens=1_200,
        cached_input_tokens=300,
        cache_write_tokens=40,
        output_tokens=500,
        reasoning_tokens=60,
        tags={"team": "support", "x_workflow": "ignored"},
        request_id="req-priced",
        model_name="gpt-4o-2024-08-06",
    )
    unpriced = _usage(tenant_a, model="mystery-model", input_tokens=1_000, request_id="req-unpriced")
    old = _usage(tenant_a, catalog=catalog, cost_nanos=1, occurred_at=NOW - timedelta(days=40), request_id="req-old")
    other = _usage(tenant_b, catalog=catalog, cost_nanos=7_000_000_000, request_id="marker-tenant-b-req")
    return {"priced": priced, "unpriced": unpriced, "old": old, "other": other}


# --- Rows -------------------------------------------------------------------------------------------


def test_focus_csv_has_the_focus_columns_and_one_row_per_record(api_a, usage):
    response = api_a.client.get(API)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    header, rows = _rows(response)
    assert set(FOCUS_NAMES) <= set(header)
    assert len(header) == len(set(header))
    assert sorted(r["ResourceId"] for r in rows) == ["req-priced", "req-unpriced"]  # req-old is out of range


def test_focus_row_of_a_priced_call(api_a, usage):
    _, rows = _rows(api_a.client.get(API))
    row = next(r for r in rows if r["ResourceId"] == "req-priced")
    hour = BASE.replace(minute=0, second=0, microsecond=0)
    month = BASE.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (month + timedelta(days=32)).replace(day=1)
    assert row["BillingAccountId"] == "acme" and row["BillingAccountName"] == "Acme Corp (marker-tenant-a)"
    assert row["ChargePeriodStart"] == hour.strftime("%Y-%m-%dT%H:00:00Z")
    assert row["ChargePeriodEnd"] == (hour + timedelta(hours=1)).strftime("%Y-%m-%dT%H:00:00Z")
    assert row["BillingPeriodStart"] == month.strftime("%Y-%m-01T00:00:00Z")
    assert row["BillingPeriodEnd"] == next_month.strftime("%Y-%m-01T00:00:00Z")
    assert row["ChargeCategory"] == "Usage" and row["ChargeClass"] == ""
    assert row["ServiceName"] == "openai gpt-4o" and row["ServiceCategory"] == "AI and Machine Learning"
    assert row["ProviderName"] == row["PublisherName"] == row["InvoiceIssuerName"] == "openai"
    assert row["ResourceName"] == "ticket-summary" and row["ResourceType"] == "LLM call"
    assert row["SkuId"] == "gpt-4o"  # the catalog name, not the snapshot name sent
    assert row["SkuPriceId"] == str(usage["priced"].price_id)
    assert row["ConsumedQuantity"] == "2100" and row["ConsumedUnit"] == "Tokens"
    assert row["PricingQuantity"] == "0.002100" and row["PricingUnit"] == "1M Tokens"
    for column in COSTS:
        assert row[column] == "12.345678901"
    assert row["BillingCurrency"] == "USD" and row["RegionId"] == ""
    assert "ticket-summary" in row["ChargeDescription"] and "stage" in row["ChargeDescription"]
    assert orjson.loads(row["Tags"]) == {
        "team": "support",
        "x_environment": "stage",
        "x_workflow": "ticket-summary",  # ours win over a tag of the same name
        "x_tokens_input": 1200,
        "x_tokens_cached": 300,
        "x_tokens_cache_write": 40,
        "x_tokens_output": 500,
        "x_tokens_reasoning": 60,
    }


def test_unpriced_call_has_empty_costs_never_zero(api_a, usage):
    _, rows = _rows(api_a.client.get(API))
    row = next(r for r in rows if r["ResourceId"] == "req-unpriced")
    for column in COSTS:
        assert row[column] == ""
    assert row["SkuId"] == "mystery-model" and row["ServiceName"] == "mystery-model" and row["ProviderName"] == ""
    assert row["SkuPriceId"] == "" and "not priced" in row["ChargeDescription"]
    assert row["ConsumedQuantity"] == "1000" and row["ResourceName"] == ""


def test_costs_are_exact_and_sum_to_the_records_cost(api_a, tenant_a, catalog):
    # 2**53 + 1 nano-USD has no float; neither do many small amounts summed.
    amounts = [2**53 + 1, 1, 333_333_333, 999_999_999, 10**12 + 7]
    for i, nanos in enumerate(amounts):
        _usage(tenant_a, catalog=catalog, cost_nanos=nanos, occurred_at=BASE + timedelta(minutes=i))
    _, rows = _rows(api_a.client.get(API))
    assert "9007199.254740993" in [r["BilledCost"] for r in rows]
    for column in COSTS:
        assert sum(Decimal(r[column]) for r in rows) == Decimal(sum(amounts)).scaleb(-9)


def test_filters_and_an_explicit_range(api_a, tenant_a, catalog, usage):
    chat = WorkflowFactory(slug="chat")
    _usage(tenant_a, catalog=catalog, cost_nanos=5, workflow=chat, request_id="req-chat")

    def ids(query: str) -> set[str]:
        return {r["ResourceId"] for r in _rows(api_a.client.get(API + query))[1]}

    assert ids("?workflow=ticket-summary") == {"req-priced"}
    assert ids("?environment=stage") == {"req-priced"}
    assert ids("?environment=prod") == {"req-unpriced", "req-chat"}
    old_day = (NOW - timedelta(days=40)).date().isoformat()
    assert ids(f"?start={old_day}&end={old_day}") == {"req-old"}  # a date as end includes that day
    start = BASE.replace(minute=0, second=0, microsecond=0)
    assert "req-priced" not in ids(f"?start={start.isoformat()}&end={BASE.isoformat()}")  # end is exclusive
    assert "req-priced" in ids(f"?start={start.strftime('%Y-%m-%dT%H:%M:%SZ')}")


def test_streams_in_chunks_and_names_the_file(api_a, tenant_a, catalog, monkeypatch):
    monkeypatch.setattr("finops.exports.CHUNK_SIZE", 7)
    monkeypatch.setattr("finops.exports._FLUSH_BYTES", 2_000)
    for i in range(40):
        _usage(tenant_a, catalog=catalog, cost_nanos=i, occurred_at=BASE - timedelta(minutes=i))
    response = api_a.client.get(API + "?start=2026-01-01&end=2026-01-31")
    assert response["Content-Disposition"] == 'attachment; filename="focus-acme-2026-01-01-2026-01-31.csv"'
    response = api_a.client.get(API)
    chunks = list(response.streaming_content)
    assert len(chunks) > 3
    rows = list(csv.reader(io.StringIO(b"".join(chunks).decode())))[1:]
    assert len(rows) == 40
    assert [r[4] for r in rows] == sorted(r[4] for r in rows)  # in time order


# --- Tenants and errors ----------------------------------------------------------------------------


def test_tenant_key_sees_only_its_tenant(api_a, usage):
    body = _body(api_a.client.get(API))
    assert "req-priced" in body
    assert "marker-tenant-b" not in body and "globex" not in body


def test_tenant_key_naming_another_tenant_is_404(api_a, usage):
    response = api_a.client.get(API + "?tenant=globex")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert "marker-tenant-b" not in response.content.decode()


def test_platform_key_must_name_the_tenant(api_platform, usage):
    response = api_platform.client.get(API)
    assert response.status_code == 400 and response.json()["error"]["code"] == "tenant_required"
    _, rows = _rows(api_platform.client.get(API + "?tenant=globex"))
    assert [r["ResourceId"] for r in rows] == ["marker-tenant-b-req"]
    assert api_platform.client.get(API + "?tenant=no-such-tenant").status_code == 404


def test_key_without_read_scope_is_refused(make_key, tenant_a, usage):
    key = make_key(tenant_a, scopes="ingest")
    response = key.client.get(API)
    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?start=2026-01-01&end=2026-04-05", "range_too_long"),
        ("?start=2026-01-01T00:00:00Z&end=2026-04-04T00:00:01Z", "range_too_long"),
        ("?start=yesterday", "invalid_date"),
        ("?end=2026-02-30", "invalid_date"),
        ("?start=2026-03-01&end=2026-02-01", "invalid_range"),
        ("?environment=production", "invalid_environment"),
    ],
)
def test_bad_parameters_are_a_clear_400(api_a, usage, query, code):
    response = api_a.client.get(API + query, HTTP_ACCEPT="text/csv")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


def test_exactly_93_days_is_allowed(api_a, usage):
    assert api_a.client.get(API + "?start=2026-01-01&end=2026-04-03").status_code == 200


def test_api_accepts_a_csv_accept_header(api_a, usage):
    response = api_a.client.get(API, HTTP_ACCEPT="text/csv")
    assert len(_rows(response)[1]) == 2


def test_openapi_schema_documents_the_export(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/exports/focus.csv"]["get"]
    assert "text/csv" in operation["responses"]["200"]["content"]
    assert {"tenant", "start", "end", "workflow", "environment"} <= {p["name"] for p in operation["parameters"]}


# --- The people's download --------------------------------------------------------------------------


def test_page_export_respects_membership(viewer_a, usage):
    client = _client_for(viewer_a)
    response = client.get(PAGE)
    assert response["Content-Disposition"].startswith('attachment; filename="focus-acme-')
    header, rows = _rows(response)
    assert "BilledCost" in header
    assert sorted(r["ResourceId"] for r in rows) == ["req-priced", "req-unpriced"]
    assert client.get(PAGE + "?tenant=globex").status_code == 404
    assert "marker-tenant-b" not in _body(client.get(PAGE + "?tenant=acme"))


def test_operator_exports_all_tenants_or_one(operator, usage):
    client = _client_for(operator)
    response = client.get(PAGE)
    assert 'filename="focus-all-' in response["Content-Disposition"]
    _, rows = _rows(response)
    assert {r["BillingAccountId"] for r in rows} == {"acme", "globex"}
    _, only_b = _rows(client.get(PAGE + "?tenant=globex"))
    assert [r["ResourceId"] for r in only_b] == ["marker-tenant-b-req"]


def test_person_without_tenants_gets_only_the_header(db, usage):
    from tests.factories import UserFactory

    _, rows = _rows(_client_for(UserFactory(username="nobody")).get(PAGE))
    assert rows == []


def test_page_export_refuses_a_long_range(viewer_a, usage):
    response = _client_for(viewer_a).get(PAGE + "?start=2025-01-01&end=2025-12-31")
    assert response.status_code == 400
    assert "longest export is 93 days" in response.content.decode()
