"""End to end: the OpenTelemetry SDK and its OTLP/HTTP exporter send GenAI spans to a running server.

The server is pytest-django's live server (a real HTTP server thread on a port); the spans are made
by the SDK's tracer exactly as an instrumented application makes them, and sent by
`opentelemetry-exporter-otlp-proto-http`'s own HTTP client, with its retries. The Python exporter
only speaks protobuf, so the JSON run encodes the same SDK spans with the SDK's own OTLP encoder and
the OTLP/JSON rules (hex ids, lowerCamelCase) and sends them through the same exporter client.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from unittest import mock

import orjson
import pytest
from django.http import HttpResponse
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from finops.apis import otlp as otlp_api
from finops.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)


class OtlpJsonSpanExporter(OTLPSpanExporter):
    """The SDK exporter, sending OTLP/JSON: the SDK's encoding, ids as hex as the specification says."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = json_format.MessageToDict(encode_spans(spans))
        for rs in data.get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in span:
                            span[key] = base64.b64decode(span[key]).hex()
        result = self._client.export(orjson.dumps(data))
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE


def _tracer(exporter):
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "support-bot", "deployment.environment.name": "production"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, provider.get_tracer("tests.genai"), memory


def _chat_span(tracer, model: str, input_tokens: int, cached: int, output: int, reasoning: int = 0) -> None:
    with tracer.start_as_current_span("invoke_agent triage") as agent:
        agent.set_attribute("gen_ai.agent.name", "triage")  # no usage on it: skipped
        with tracer.start_as_current_span(f"chat {model}") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.request.model", model)
            span.set_attribute("gen_ai.response.model", model)
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", cached)
            span.set_attribute("gen_ai.usage.output_tokens", output)
            span.set_attribute("gen_ai.usage.reasoning.output_tokens", reasoning)
            span.set_attribute("tokenspend.workflow", "ticket-summary")


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_sdk_spans_reach_the_server_priced_exactly_and_a_retry_does_not_double_count(
    live_server, api_a, catalog, encoding
):
    exporter_class = OTLPSpanExporter if encoding == "protobuf" else OtlpJsonSpanExporter
    headers = {"Authorization": f"Bearer {api_a.raw}"}
    if encoding == "json":
        headers["Content-Type"] = "application/json"
    exporter = exporter_class(endpoint=f"{live_server.url}/api/v1/otlp/v1/traces", headers=headers, timeout=10)
    provider, tracer, memory = _tracer(exporter)

    _chat_span(tracer, "gpt-4o", input_tokens=1200, cached=800, output=300)
    _chat_span(tracer, "o3", input_tokens=1000, cached=0, output=900, reasoning=600)
    provider.force_flush()

    records = {r.model_name: r for r in UsageRecord.objects.select_related("workflow")}
    assert set(records) == {"gpt-4o", "o3"}, "the agent spans carry no usage and are skipped"
    gpt = records["gpt-4o"]
    assert (gpt.input_tokens, gpt.cached_input_tokens, gpt.output_tokens) == (400, 800, 300)
    assert gpt.cost_nanos == 5_000_000  # 400 x 2.50 + 800 x 1.25 + 300 x 10.00 per 1M tokens
    o3 = records["o3"]
    assert (o3.input_tokens, o3.output_tokens, o3.reasoning_tokens) == (1000, 300, 600)
    assert o3.cost_nanos == 9_200_000  # 1000 x 2.00 + (300 + 600) x 8.00 per 1M tokens
    assert {r.environment for r in records.values()} == {"prod"}
    assert {r.workflow.slug for r in records.values()} == {"ticket-summary"}
    chat_spans = [s for s in memory.get_finished_spans() if s.name.startswith("chat")]
    assert gpt.request_id == f"otel:{chat_spans[0].context.trace_id:032x}:{chat_spans[0].context.span_id:016x}"
    assert gpt.occurred_at.timestamp() == pytest.approx(chat_spans[0].end_time / 1e9, abs=1e-6)

    # The exporter sends the same batch again (its answer was lost): nothing is counted twice.
    assert exporter.export(memory.get_finished_spans()) == SpanExportResult.SUCCESS
    assert UsageRecord.objects.count() == 2
    provider.shutdown()


def test_the_exporters_own_retry_after_a_503_stores_each_span_once(live_server, api_a, catalog):
    """The server stores the spans but the first answer is lost as a 503: the exporter retries by itself."""
    real = otlp_api._export_response
    answers: list[int] = []

    def first_answer_lost(result, encoding):
        if not answers:
            answers.append(503)
            return HttpResponse(b"", status=503, headers={"Retry-After": "0"})
        answers.append(200)
        return real(result, encoding)

    exporter = OTLPSpanExporter(
        endpoint=f"{live_server.url}/api/v1/otlp/v1/traces", headers={"Authorization": f"Bearer {api_a.raw}"}
    )
    provider, tracer, _ = _tracer(exporter)
    with mock.patch.object(otlp_api, "_export_response", first_answer_lost):
        _chat_span(tracer, "gpt-4o", input_tokens=1200, cached=800, output=300)
        provider.force_flush()
    # chat span: lost answer, then the exporter's retry; then the agent span (one export per span here)
    assert answers == [503, 200, 200]
    assert UsageRecord.objects.count() == 1
    assert UsageRecord.objects.get().cost_nanos == 5_000_000
    provider.shutdown()
