"""`POST /api/v1/otlp/v1/traces`: an OTLP/HTTP trace receiver that turns GenAI spans into usage.

An OpenTelemetry exporter needs only this endpoint and `Authorization: Bearer <key>` (through
`OTEL_EXPORTER_OTLP_HEADERS`). Answers follow the OTLP/HTTP specification: 200 with an
ExportTraceServiceResponse in the request's encoding (with `partial_success` when spans were
rejected), and errors as a `google.rpc.Status` in that encoding: 400 for a malformed body (an
exporter must not retry it), 401/403 for the key, 413 too large, 415 for another content type,
429/503 with Retry-After (the only ones an exporter retries).
"""

from __future__ import annotations

import time
import zlib

import orjson
from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from rest_framework import exceptions
from rest_framework.parsers import BaseParser

from finops import metrics
from finops.services.foreign_usage import ForeignIngestResult, foreign_usage_ingest
from finops.services.otlp import otlp_decode, otlp_spans_map
from tenants.errors import ApplicationError, reject_oversized_body
from tenants.scope import Operation
from tenants.scoping import TenantScopedAPIView

PROTOBUF, JSON = "application/x-protobuf", "application/json"
# google.rpc.Code for the HTTP statuses this endpoint answers with.
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 413: 8, 415: 3, 429: 8, 503: 14}


class _RawBody(BaseParser):
    """The body is decoded by the view (protobuf or JSON, maybe gzip); DRF must not parse it."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return None


def _encoding(request) -> str | None:
    content_type = (request.content_type or "").split(";")[0].strip().lower()
    if content_type == PROTOBUF:
        return "protobuf"
    if content_type == JSON:
        return "json"
    return None


def decoded_body(request, limit: int) -> bytes:
    """The request body, gunzipped or inflated when `Content-Encoding` says so, at most `limit` bytes."""
    reject_oversized_body(request, limit, hint="Export smaller batches.")
    body = request.body
    content_encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if content_encoding in ("", "identity"):
        return body
    if content_encoding not in ("gzip", "deflate"):
        raise exceptions.UnsupportedMediaType(f"Content-Encoding {content_encoding}")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if content_encoding == "gzip" else zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ApplicationError("malformed_body", f"The body is not valid {content_encoding}: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise ApplicationError(
            "payload_too_large",
            f"The body is over {limit:,} bytes once decompressed. Export smaller batches.",
            status_code=413,
        )
    return data


class OtlpTracesApi(TenantScopedAPIView):
    """OTLP/HTTP trace export (protobuf or JSON, gzip accepted); GenAI usage spans become usage records."""

    parser_classes = [_RawBody]
    operations = {"POST": Operation.INGEST}
    # Platform keys: the tenant comes from each span's OTLP_TENANT_ATTRIBUTE, or from ?tenant=<slug>.
    tenant_required = False

    @extend_schema(
        operation_id="otlp_traces_export",
        summary="OTLP/HTTP trace export: GenAI spans become usage records",
        description=(
            "An ExportTraceServiceRequest in protobuf (`application/x-protobuf`) or OTLP/JSON (`application/json`), "
            "optionally gzip-compressed. Spans with `gen_ai.usage.*` attributes become usage records; other spans "
            "are skipped. The answer is an ExportTraceServiceResponse in the same encoding, with `partialSuccess` "
            "when some spans were rejected."
        ),
        request={PROTOBUF: bytes, JSON: {"type": "object"}},
        responses={
            200: OpenApiResponse(description="ExportTraceServiceResponse"),
            400: OpenApiResponse(description="google.rpc.Status: malformed export"),
            415: OpenApiResponse(description="google.rpc.Status: not protobuf or JSON"),
        },
    )
    def post(self, request):
        encoding = _encoding(request)
        if encoding is None:
            raise exceptions.UnsupportedMediaType(request.content_type or "(none)")
        started = time.perf_counter()
        body = decoded_body(request, settings.USAGE_MAX_BODY_BYTES)
        batch = otlp_spans_map(otlp_decode(body, encoding=encoding))
        result = foreign_usage_ingest(batch=batch, bound_tenant=self.scope.tenant, api_key=self.api_key)
        metrics.foreign_ingest_observed("otlp", result, time.perf_counter() - started)
        return _export_response(result, encoding)

    def handle_exception(self, exc):
        """Errors as google.rpc.Status in the request's encoding (OTLP/HTTP), same status and headers."""
        response = super().handle_exception(exc)
        error = (getattr(response, "data", None) or {}).get("error") or {}
        message = str(error.get("message") or getattr(exc, "detail", exc))
        status = {"code": _GRPC_CODES.get(response.status_code, 2), "message": message}
        out = _encode_status(status, _encoding(self.request) or "json")
        out.status_code = response.status_code
        for header in ("Retry-After", "WWW-Authenticate"):
            if header in response:
                out[header] = response[header]
        out.exception = True  # type: ignore[attr-defined]  # DRF marks error responses so
        return out


def _export_response(result: ForeignIngestResult, encoding: str) -> HttpResponse:
    answer = ExportTraceServiceResponse()
    if result.rejected:
        answer.partial_success.rejected_spans = result.rejected
        answer.partial_success.error_message = result.message
    if encoding == "protobuf":
        return HttpResponse(answer.SerializeToString(), content_type=PROTOBUF)
    return HttpResponse(orjson.dumps(json_format.MessageToDict(answer)), content_type=JSON)


def _encode_status(status: dict, encoding: str) -> HttpResponse:
    if encoding == "json":
        return HttpResponse(orjson.dumps(status), content_type=JSON)
    # google.rpc.Status {int32 code = 1; string message = 2;}, written by hand: two fields do not
    # justify another dependency.
    message = status["message"].encode()
    wire = b"\x08" + _varint(status["code"]) + b"\x12" + _varint(len(message)) + message
    return HttpResponse(wire, content_type=PROTOBUF)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
