"""POST /api/v1/otlp/v1/traces: OTLP/HTTP exports (protobuf and JSON) of GenAI spans become usage records."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from budgets.models import Reservation
from finops.models import UsageRecord

URL = "/api/v1/otlp/v1/traces"
PB = "application/x-protobuf"
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
END = datetime.now(UTC).replace(microsecond=123456) - timedelta(minutes=5)
END_NANO = int(END.timestamp()) * 10**9 + 123456789


def _kv(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        any_value = AnyValue(bool_value=value)
    elif isinstance(value, int):
        any_value = AnyValue(int_value=value)
    elif isinstance(value, float):
        any_value = AnyValue(double_value=value)
    else:
        any_value = AnyValue(string_value=value)
    return KeyValue(key=key, value=any_value)


def export(spans: list[dict], resource: dict | None = None) -> ExportTraceServiceRequest:
    """An export of one resource with the given spans: {"span_id": hex, "attrs": {...}}."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in (resource or {"service.name": "support-bot"}).items():
        rs.resource.attributes.append(_kv(key, value))
    ss = rs.scope_spans.add()
    for spec in spans:
        span = ss.spans.add()
        span.trace_id = spec.get("trace_id", TRACE)
        span.span_id = bytes.fromhex(spec["span_id"])
        span.name = "chat gpt-4o"
        span.start_time_unix_nano = END_NANO - 2 * 10**9
        span.end_time_unix_nano = spec.get("end", END_NANO)
        for key, value in spec["attrs"].items():
            span.attributes.append(_kv(key, value))
    return request


GENAI = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.cache_read.input_tokens": 800,
    "gen_ai.usage.output_tokens": 300,
    "tokenspend.workflow": "ticket-summary",
}


def post_pb(client, request: ExportTraceServiceRequest, **extra):
    return client.post(URL, request.SerializeToString(), content_type=PB, **extra)


def test_a_protobuf_export_becomes_priced_usage_records(api_a, catalog):
    request = export(
        [
            {"span_id": "eee19b7ec3c1b174", "attrs": GENAI},
            # a span of the same trace without GenAI usage (an HTTP call): skipped, not rejected
            {"span_id": "eee19b7ec3c1b175", "attrs": {"http.request.method": "GET"}},
        ],
        resource={"service.name": "support-bot", "deployment.environment.name": "staging"},
    )
    response = post_pb(api_a.client, request)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == PB
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert not answer.HasField("partial_success")

    record = UsageRecord.objects.get()
    assert record.tenant.slug == "acme"
    assert record.request_id == "otel:5b8efff798038103d269b633813fc60c:eee19b7ec3c1b174"
    assert record.model_name == "gpt-4o-2024-08-06"  # the response model, matched by the catalog pattern
    assert record.model == catalog["gpt-4o"]
    # input includes the cached tokens, split as an OpenAI prompt_tokens is
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens) == (400, 800, 300)
    # 400 x 2.50 + 800 x 1.25 + 300 x 10.00 per 1M tokens = 0.005 USD exactly
    assert record.cost_nanos == 5_000_000 and record.priced
    assert record.environment == "stage"
    assert record.workflow.slug == "ticket-summary"
    assert record.tags == {"gen_ai.provider.name": "openai", "service.name": "support-bot"}
    assert record.occurred_at == datetime.fromtimestamp(END_NANO // 10**9, UTC) + timedelta(microseconds=123456)


def test_json_export_with_hex_ids_string_int64_and_gzip(api_a, catalog):
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "chat-assistant"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "opentelemetry.instrumentation.anthropic"},
                        "spans": [
                            {
                                "traceId": TRACE.hex(),
                                "spanId": "0102030405060708",
                                "name": "chat claude",
                                "kind": 3,
                                "startTimeUnixNano": str(END_NANO - 10**9),
                                "endTimeUnixNano": str(END_NANO),
                                "attributes": [
                                    {"key": "gen_ai.request.model", "value": {"stringValue": "claude-sonnet-4-5"}},
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "3100"}},
                                    {"key": "gen_ai.usage.cache_read.input_tokens", "value": {"intValue": 2000}},
                                    {"key": "gen_ai.usage.cache_creation.input_tokens", "value": {"intValue": "1000"}},
                                    {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "300"}},
                                    {"key": "gen_ai.agent.name", "value": {"stringValue": "Triage Agent"}},
                                ],
                                "status": {},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    response = api_a.client.post(
        URL,
        gzip.compress(orjson.dumps(body)),
        content_type="application/json",
        HTTP_CONTENT_ENCODING="gzip",
    )
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {}
    record = UsageRecord.objects.get()
    assert record.request_id == f"otel:{TRACE.hex()}:0102030405060708"
    assert (record.input_tokens, record.cached_input_tokens, record.cache_write_tokens, record.output_tokens) == (
        100,
        2000,
        1000,
        300,
    )
    # 100 x 3.00 + 2000 x 0.30 + 1000 x 3.75 + 300 x 15.00 per 1M = 0.00915 USD
    assert record.cost_nanos == 9_150_000
    assert record.workflow.slug == "triage-agent"  # the agent name, made a slug
    assert record.environment == "prod"


def test_a_retried_export_is_a_duplicate_not_a_second_call(api_a, catalog):
    request = export([{"span_id": "eee19b7ec3c1b174", "attrs": GENAI}])
    assert post_pb(api_a.client, request).status_code == 200
    again = post_pb(api_a.client, request)
    assert again.status_code == 200
    assert not ExportTraceServiceResponse.FromString(again.content).HasField("partial_success")
    assert UsageRecord.objects.count() == 1


def test_partial_success_counts_rejected_spans_and_says_why(api_a, catalog):
    bad = {**GENAI, "gen_ai.usage.cache_read.input_tokens": 5000}  # more cached than input
    old = {**GENAI}
    request = export(
        [
            {"span_id": "0000000000000001", "attrs": GENAI},
            {"span_id": "0000000000000002", "attrs": bad},
            {
                "span_id": "0000000000000003",
                "attrs": {**GENAI, "gen_ai.request.model": "", "gen_ai.response.model": ""},
            },
            {"span_id": "0000000000000004", "attrs": old, "end": int((END - timedelta(days=90)).timestamp()) * 10**9},
            {"span_id": "0000000000000005", "attrs": {"db.system": "postgresql"}},
        ]
    )
    response = post_pb(api_a.client, request)
    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 3
    assert "gen_ai.usage.input_tokens" in partial.error_message
    assert "names no model" in partial.error_message
    assert "backfill window" in partial.error_message
    assert UsageRecord.objects.count() == 1

    as_json = api_a.client.post(
        URL, b'{"resourceSpans": []}', content_type="application/json"
    )  # nothing to do is a success
    assert as_json.status_code == 200 and as_json.json() == {}


def test_partial_success_in_json_uses_camel_case_and_int64_strings(api_a, catalog):
    bad = {**GENAI, "gen_ai.usage.cache_read.input_tokens": 5000}
    from google.protobuf import json_format

    body = json_format.MessageToDict(export([{"span_id": "0000000000000009", "attrs": bad}]))
    response = api_a.client.post(URL, orjson.dumps(body), content_type="application/json")  # base64 ids accepted too
    assert response.status_code == 200
    answer = response.json()
    assert answer["partialSuccess"]["rejectedSpans"] == "1"
    assert "cannot be below" in answer["partialSuccess"]["errorMessage"]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"\xff\xff\xff not protobuf", PB, 400),
        (b"{not json", "application/json", 400),
        (b'["a list"]', "application/json", 400),
        (b'{"resourceSpans": "nope"}', "application/json", 400),
        (b"<xml/>", "application/xml", 415),
    ],
)
def test_malformed_exports_answer_4xx_with_a_status_in_the_request_encoding(api_a, body, content_type, status):
    response = api_a.client.post(URL, body, content_type=content_type)
    assert response.status_code == status
    if content_type == "application/json":
        assert response.json()["code"] == 3 and response.json()["message"]
    elif content_type == PB:
        assert response["Content-Type"] == PB and response.content.startswith(b"\x08\x03\x12")
    assert not UsageRecord.objects.exists()


def test_bad_gzip_is_a_400_and_a_bomb_a_413(api_a, settings):
    response = api_a.client.post(URL, b"not gzip", content_type=PB, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 400
    settings.USAGE_MAX_BODY_BYTES = 10_000
    bomb = gzip.compress(b"\x00" * 1_000_000)
    response = api_a.client.post(URL, bomb, content_type=PB, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413


def test_the_key_is_required_and_its_scope_checked(client, make_key, tenant_a, catalog):
    request = export([{"span_id": "eee19b7ec3c1b174", "attrs": GENAI}])
    response = client.post(URL, request.SerializeToString(), content_type=PB)
    assert response.status_code == 401
    read_only = make_key(tenant_a, scopes="read")
    response = post_pb(read_only.client, request)
    assert response.status_code == 403
    assert not UsageRecord.objects.exists()


def test_a_tenant_key_cannot_write_another_tenants_usage_through_span_attributes(api_a, api_b, catalog):
    attrs = {**GENAI, "tokenspend.tenant": "globex"}
    response = post_pb(api_a.client, export([{"span_id": "eee19b7ec3c1b174", "attrs": attrs}]))
    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 1 and "tenant 'acme' only" in partial.error_message
    # ... nor through the resource, nor by naming the tenant in the URL
    response = post_pb(
        api_a.client,
        export([{"span_id": "eee19b7ec3c1b176", "attrs": GENAI}], resource={"tokenspend.tenant": "globex"}),
    )
    assert ExportTraceServiceResponse.FromString(response.content).partial_success.rejected_spans == 1
    response = post_pb(
        api_a.client, export([{"span_id": "eee19b7ec3c1b177", "attrs": GENAI}]), QUERY_STRING="tenant=globex"
    )
    assert response.status_code == 404
    assert b"marker" not in response.content
    assert not UsageRecord.objects.filter(tenant__slug="globex").exists()
    assert not UsageRecord.objects.exists()


def test_a_platform_key_names_the_tenant_per_span_or_in_the_url(api_platform, catalog):
    response = post_pb(
        api_platform.client,
        export(
            [
                {"span_id": "0000000000000001", "attrs": {**GENAI, "tokenspend.tenant": "globex"}},
                {"span_id": "0000000000000002", "attrs": GENAI},  # no tenant: rejected
            ]
        ),
    )
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 1 and "platform key" in partial.error_message
    assert list(UsageRecord.objects.values_list("tenant__slug", flat=True)) == ["globex"]
    response = post_pb(
        api_platform.client, export([{"span_id": "0000000000000003", "attrs": GENAI}]), QUERY_STRING="tenant=acme"
    )
    assert response.status_code == 200
    assert UsageRecord.objects.filter(tenant__slug="acme").count() == 1


def test_a_span_carrying_a_reservation_settles_it(api_a, catalog):
    from budgets.models import Budget

    # A hard limit: preflight holds the estimate on it and answers with a reservation id.
    Budget.objects.create(
        tenant=api_a.key.tenant, name="hard", metric="cost", period="month", time_zone="UTC", hard_limit=10**12
    )
    preflight = api_a.client.post(
        "/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 1200, "max_output_tokens": 300}, format="json"
    ).json()
    reservation_id = preflight["reservation_id"]
    assert Reservation.objects.get(pk=reservation_id).status == Reservation.Status.HELD
    attrs = {**GENAI, "tokenspend.reservation_id": reservation_id}
    response = post_pb(api_a.client, export([{"span_id": "eee19b7ec3c1b174", "attrs": attrs}]))
    assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")
    record = UsageRecord.objects.get()
    assert str(record.reservation_id) == reservation_id
    assert Reservation.objects.get(pk=reservation_id).status == Reservation.Status.SETTLED


def test_the_workflow_chain_and_tags_are_configurable(api_a, catalog, settings):
    settings.OTLP_WORKFLOW_ATTRIBUTES = ["app.feature", "service.name"]
    settings.OTLP_TAG_ATTRIBUTES = ["team"]
    attrs = {k: v for k, v in GENAI.items() if k != "tokenspend.workflow"}
    post_pb(
        api_a.client,
        export([{"span_id": "0000000000000001", "attrs": attrs}], resource={"service.name": "Bot", "team": "core"}),
    )
    post_pb(api_a.client, export([{"span_id": "0000000000000002", "attrs": {**attrs, "app.feature": "digest"}}]))
    records = {r.request_id[-1]: r for r in UsageRecord.objects.select_related("workflow")}
    assert records["1"].workflow.slug == "bot" and records["1"].tags == {"team": "core"}
    assert records["2"].workflow.slug == "digest"


def test_unknown_environment_is_rejected_not_guessed(api_a, catalog):
    response = post_pb(
        api_a.client,
        export([{"span_id": "0000000000000001", "attrs": GENAI}], resource={"deployment.environment.name": "qa-7"}),
    )
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 1 and "Unknown environment 'qa-7'" in partial.error_message


def test_mangled_exports_never_answer_5xx(api_a, catalog):
    """Every byte of a valid export flipped in turn, and absurd values: 2xx or 4xx, never 5xx."""
    import random

    wire = export([{"span_id": "eee19b7ec3c1b174", "attrs": GENAI}]).SerializeToString()
    rng = random.Random(14)
    bodies = [wire[:i] for i in range(0, len(wire), 7)]
    for _ in range(150):
        mangled = bytearray(wire)
        for _ in range(rng.randint(1, 4)):
            mangled[rng.randrange(len(mangled))] = rng.randrange(256)
        bodies.append(bytes(mangled))
    absurd = export(
        [
            {"span_id": "0000000000000001", "attrs": GENAI, "end": 2**64 - 1},
            {"span_id": "0000000000000002", "attrs": {**GENAI, "gen_ai.usage.input_tokens": 2**62}},
            {"span_id": "0000000000000003", "attrs": {**GENAI, "gen_ai.usage.output_tokens": -5}},
            {"span_id": "0000000000000004", "attrs": {**GENAI, "gen_ai.usage.output_tokens": 1.5}},
            {"span_id": "0000000000000005", "attrs": {**GENAI, "gen_ai.response.model": "m" * 500}},
            {"span_id": "0000000000000006", "attrs": {**GENAI, "tokenspend.reservation_id": "not-a-uuid"}},
            {"span_id": "0000000000000007", "attrs": {**GENAI, "tokenspend.workflow": "!!!"}},
            {"span_id": "0000000000000008", "attrs": {**GENAI, "gen_ai.usage.input_tokens": True}},
            {"span_id": "0000000000000009", "attrs": GENAI, "trace_id": b"\x00" * 16},
        ]
    )
    bodies.append(absurd.SerializeToString())
    for body in bodies:
        response = api_a.client.post(URL, body, content_type=PB)
        assert response.status_code < 500, (body, response.content)
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 8  # the workflow '!!!' just has no usable slug: stored without one


def test_otlp_usage_moves_budget_windows_and_reaches_the_spend_reads(api_a, catalog):
    from budgets.models import Budget, BudgetWindow
    from finops.services.rollups import rollups_refresh

    budget = Budget.objects.create(
        tenant=api_a.key.tenant, name="month", metric="cost", period="month", time_zone="UTC", hard_limit=10**12
    )
    post_pb(api_a.client, export([{"span_id": "eee19b7ec3c1b174", "attrs": GENAI}]))
    assert BudgetWindow.objects.get(budget=budget).spent == 5_000_000
    rollups_refresh()
    spend = api_a.client.get("/api/v1/spend?group_by=workflow").json()
    assert spend["totals"]["cost_usd"] == "0.005000000"
    assert spend["groups"][0]["key"] == {"workflow": "ticket-summary"}


def _json_span(**changes) -> bytes:
    span = {
        "traceId": TRACE.hex(),
        "spanId": "0102030405060708",
        "endTimeUnixNano": str(END_NANO),
        "attributes": [
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1200"}},
            {"key": "gen_ai.usage.cache_read.input_tokens", "value": {"intValue": 800}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "300"}},
            {"key": "tags.list", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "2"}]}}},
            {"key": "nested", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": True}}]}}},
            {"key": "ratio", "value": {"doubleValue": "NaN"}},
            {"key": "future.kind", "value": {"someNewValue": 1}},
            {"key": "empty", "value": {}},
        ],
    }
    span.update(changes)
    return orjson.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": [span]}]}]})


@pytest.mark.parametrize(
    "changes",
    [
        {"traceId": 5},
        {"traceId": "zz" * 16},
        {"spanId": "0102"},
        {"endTimeUnixNano": "-1"},
        {"endTimeUnixNano": 1.5},
        {"attributes": {"key": "x"}},
        {"attributes": [{"key": 1, "value": {"stringValue": "x"}}]},
        {"attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12a"}}]},
        {"attributes": [{"key": "x", "value": {"stringValue": 3}}]},
        {"attributes": [{"key": "x", "value": {"boolValue": "yes"}}]},
        {"attributes": [{"key": "x", "value": {"arrayValue": []}}]},
        {"attributes": [{"key": "x", "value": {"bytesValue": "%%%"}}]},
        {"attributes": [{"key": "x", "value": {"intValue": str(2**63)}}]},
    ],
)
def test_otlp_json_with_wrong_types_is_a_400(api_a, catalog, changes):
    response = api_a.client.post(URL, _json_span(**changes), content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == 3
    assert not UsageRecord.objects.exists()


def test_otlp_json_reads_every_value_kind_and_protobuf_field_names(api_a, catalog):
    response = api_a.client.post(URL, _json_span(), content_type="application/json")
    assert response.status_code == 200 and response.json() == {}
    snake = orjson.loads(_json_span())
    span = snake["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["span_id"], span["trace_id"], span["end_time_unix_nano"] = span.pop("spanId"), span.pop("traceId"), END_NANO
    span["span_id"] = "0102030405060709"
    snake["resource_spans"] = [{"scope_spans": snake.pop("resourceSpans")[0]["scopeSpans"]}]
    response = api_a.client.post(URL, orjson.dumps(snake), content_type="application/json")
    assert response.status_code == 200, response.content
    assert UsageRecord.objects.count() == 2
    assert {r.cost_nanos for r in UsageRecord.objects.all()} == {5_000_000}


def test_the_channel_and_service_tier_a_span_names_reach_the_record(api_a, catalog):
    """A call through Azure (or Vertex, Bedrock) bills that channel's prices, and OpenAI's flex tier its
    own: a span that says so must not be priced as a standard call on the provider's API."""
    attrs = GENAI | {"gen_ai.provider.name": "azure.ai.openai", "openai.response.service_tier": "flex"}
    unknown = GENAI | {"openai.response.service_tier": "some-future-tier"}
    response = post_pb(
        api_a.client,
        export([{"span_id": "eee19b7ec3c1b180", "attrs": attrs}, {"span_id": "eee19b7ec3c1b181", "attrs": unknown}]),
    )
    assert response.status_code == 200, response.content
    azure = UsageRecord.objects.get(request_id__endswith="eee19b7ec3c1b180")
    assert (azure.channel, azure.service_tier) == ("azure", "flex")
    plain = UsageRecord.objects.get(request_id__endswith="eee19b7ec3c1b181")  # an unknown tier is left out
    assert (plain.channel, plain.service_tier) == ("api", "standard")
