"""OTLP/HTTP trace export -> usage records: spans that carry OpenTelemetry GenAI usage become calls.

Decoding follows the OTLP specification: protobuf (`application/x-protobuf`) or its JSON encoding
(`application/json`, lowerCamelCase keys, trace and span ids as hex strings, 64-bit integers as
strings or numbers). Ids sent base64-encoded (protobuf's own JSON mapping, which some exporters use)
are accepted too.

Mapping of one span (attributes of the span first, then of its resource):

- model: `gen_ai.response.model`, else `gen_ai.request.model`;
- tokens: `gen_ai.usage.input_tokens` includes the cached input (`gen_ai.usage.cache_read.input_tokens`)
  and the cache writes (`gen_ai.usage.cache_creation.input_tokens`), so both are taken out of it, the
  way an OpenAI `prompt_tokens` is split; `gen_ai.usage.output_tokens` includes
  `gen_ai.usage.reasoning.output_tokens`. The deprecated `gen_ai.usage.prompt_tokens` /
  `completion_tokens` are read when the new names are absent;
- occurred_at: the span's end; request_id: `otel:<trace id>:<span id>`, so an exporter's retry of
  the same span is a duplicate, never a second call;
- environment: `deployment.environment.name` (or the older `deployment.environment`);
- workflow: the first of `OTLP_WORKFLOW_ATTRIBUTES` present, made a slug;
- tags: the `OTLP_TAG_ATTRIBUTES` present; reservation: `OTLP_RESERVATION_ATTRIBUTE`;
- tenant: `OTLP_TENANT_ATTRIBUTE`, for platform keys; a tenant key's spans are its own tenant's, and
  a span naming another tenant is rejected exactly like a usage record naming one.

A span without any usage attribute (an HTTP client span, a tool call) is skipped and counted.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tenants.errors import ApplicationError

from .foreign_usage import MappedBatch, MappingError, environment_name, iso, tag_value, workflow_slug

INPUT, OUTPUT = "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"
CACHE_READ, CACHE_WRITE = "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens"
REASONING = "gen_ai.usage.reasoning.output_tokens"
OLD_INPUT, OLD_OUTPUT = "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens"
USAGE_ATTRIBUTES = (INPUT, OUTPUT, OLD_INPUT, OLD_OUTPUT)
ENVIRONMENT_ATTRIBUTES = ("deployment.environment.name", "deployment.environment")
PROMPT_VERSION_ATTRIBUTE = "tokenspend.prompt_version"
MAX_TOKENS = 10**9

_HEX = re.compile(r"^[0-9a-fA-F]*$")
_ID_KEYS = {"traceId": 32, "trace_id": 32, "spanId": 16, "span_id": 16, "parentSpanId": 16, "parent_span_id": 16}


def _malformed(message: str) -> ApplicationError:
    return ApplicationError("malformed_otlp", message)


def otlp_decode(body: bytes, *, encoding: str) -> ExportTraceServiceRequest:
    """An ExportTraceServiceRequest from a protobuf or JSON body; malformed input raises a 400."""
    request = ExportTraceServiceRequest()
    if encoding == "protobuf":
        try:
            request.ParseFromString(body)
        except (DecodeError, ValueError) as exc:
            raise _malformed(f"Not an OTLP ExportTraceServiceRequest in protobuf: {exc}") from None
        return request
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _malformed(f"Malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _malformed('An OTLP/JSON export is an object: {"resourceSpans": [...]}.')
    _hex_ids_to_base64(data)
    try:
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise _malformed(f"Not an OTLP ExportTraceServiceRequest in JSON: {str(exc)[:300]}") from None
    return request


def _hex_ids_to_base64(data: dict) -> None:
    """OTLP/JSON carries ids as hex; protobuf's JSON parser expects base64 for bytes fields."""
    for rs in _items(data, "resourceSpans", "resource_spans"):
        for ss in _items(rs, "scopeSpans", "scope_spans"):
            for span in _items(ss, "spans"):
                _convert_ids(span)
                for link in _items(span, "links"):
                    _convert_ids(link)


def _items(container: Any, *keys: str) -> list:
    if not isinstance(container, dict):
        return []
    for key in keys:
        value = container.get(key)
        if isinstance(value, list):
            return value
    return []


def _convert_ids(obj: Any) -> None:
    if not isinstance(obj, dict):
        return
    for key, length in _ID_KEYS.items():
        value = obj.get(key)
        if isinstance(value, str) and len(value) == length and _HEX.match(value):
            obj[key] = base64.b64encode(bytes.fromhex(value)).decode()


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def _attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        out[kv.key] = _value(kv.value)
    return out


def _tokens(attrs: dict, name: str) -> int | None:
    value = attrs.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise MappingError(name, "Must be a whole number of tokens.")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int):
        raise MappingError(name, "Must be a whole number of tokens.")
    if not 0 <= value <= MAX_TOKENS:
        raise MappingError(name, f"Must be from 0 to {MAX_TOKENS:,}.")
    return value


def _when(unix_nano: int) -> datetime:
    seconds, nanos = divmod(unix_nano, 10**9)
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=nanos // 1000)


def otlp_spans_map(request: ExportTraceServiceRequest) -> MappedBatch:
    """Every span of an export as a usage record, a rejection with its reason, or a skip."""
    batch = MappedBatch()
    workflow_attrs = settings.OTLP_WORKFLOW_ATTRIBUTES
    tag_attrs = settings.OTLP_TAG_ATTRIBUTES[: settings.USAGE_MAX_TAGS]
    tenant_attr, reservation_attr = settings.OTLP_TENANT_ATTRIBUTE, settings.OTLP_RESERVATION_ATTRIBUTE
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attrs = _attributes(span.attributes)
                if not any(name in attrs for name in USAGE_ATTRIBUTES):
                    batch.skipped += 1
                    continue
                label = f"span {span.trace_id.hex()}/{span.span_id.hex()}"
                try:
                    record = _record(span, attrs, resource, workflow_attrs, tag_attrs, tenant_attr, reservation_attr)
                except MappingError as error:
                    batch.reject(label, error)
                    continue
                batch.add(record, label)
    return batch


def _record(
    span: Any,
    attrs: dict,
    resource: dict,
    workflow_attrs: list[str],
    tag_attrs: list[str],
    tenant_attr: str,
    reservation_attr: str,
) -> dict:
    def pick(name: str) -> Any:
        value = attrs.get(name)
        return resource.get(name) if value is None or value == "" else value

    if len(span.trace_id) != 16 or len(span.span_id) != 8 or not any(span.trace_id) or not any(span.span_id):
        raise MappingError("traceId", "A span needs a 16-byte trace id and an 8-byte span id.")
    model = pick("gen_ai.response.model") or pick("gen_ai.request.model")
    if not isinstance(model, str) or not model.strip():
        raise MappingError("gen_ai.request.model", "The span has usage but names no model.")

    total_in = _tokens(attrs, INPUT)
    if total_in is None:
        total_in = _tokens(attrs, OLD_INPUT) or 0
    total_out = _tokens(attrs, OUTPUT)
    if total_out is None:
        total_out = _tokens(attrs, OLD_OUTPUT) or 0
    cached = _tokens(attrs, CACHE_READ) or 0
    written = _tokens(attrs, CACHE_WRITE) or 0
    reasoning = _tokens(attrs, REASONING) or 0
    if cached + written > total_in:
        raise MappingError(
            INPUT, f"Includes the cached and cache-write tokens, so it cannot be below them ({cached + written})."
        )
    if reasoning > total_out:
        raise MappingError(OUTPUT, f"Includes the reasoning tokens, so it cannot be below them ({reasoning}).")

    end = span.end_time_unix_nano or span.start_time_unix_nano
    record: dict[str, Any] = {
        "request_id": f"otel:{span.trace_id.hex()}:{span.span_id.hex()}",
        "model": model.strip(),
        "input_tokens": total_in - cached - written,
        "cached_input_tokens": cached,
        "cache_write_tokens": written,
        "output_tokens": total_out - reasoning,
        "reasoning_tokens": reasoning,
    }
    if end:
        try:
            record["occurred_at"] = iso(_when(end))
        except (OverflowError, OSError, ValueError):
            raise MappingError("endTimeUnixNano", "Is not a time this product can store.") from None
    for name in ENVIRONMENT_ATTRIBUTES:
        env = environment_name(pick(name), name)
        if env:
            record["environment"] = env
            break
    for name in workflow_attrs:
        slug = workflow_slug(pick(name))
        if slug:
            record["workflow"] = slug
            break
    tags = {name[:64]: value for name in tag_attrs if (value := tag_value(pick(name))) is not None}
    if tags:
        record["tags"] = tags
    tenant = pick(tenant_attr)
    if tenant is not None:
        record["tenant"] = str(tenant)
    reservation = pick(reservation_attr)
    if reservation:
        record["reservation_id"] = str(reservation)
    prompt_version = pick(PROMPT_VERSION_ATTRIBUTE)
    if prompt_version:
        record["prompt_version"] = str(prompt_version)
    return record
