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
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tenants.errors import ApplicationError

from .foreign_usage import MappedBatch, MappingError, environment_name, iso, tag_value, workflow_slug
from .usage_validation import known_service_tier

INPUT, OUTPUT = "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"
CACHE_READ, CACHE_WRITE = "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens"
REASONING = "gen_ai.usage.reasoning.output_tokens"
OLD_INPUT, OLD_OUTPUT = "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens"
USAGE_ATTRIBUTES = (INPUT, OUTPUT, OLD_INPUT, OLD_OUTPUT)
ENVIRONMENT_ATTRIBUTES = ("deployment.environment.name", "deployment.environment")
PROMPT_VERSION_ATTRIBUTE = "tokenspend.prompt_version"
MAX_TOKENS = 10**9

_HEX = re.compile(r"^[0-9a-fA-F]*$")
_INT = re.compile(r"^-?[0-9]+$")


@dataclass(slots=True)
class SpanView:
    """What the mapping reads of a span, the same from either encoding."""

    trace_id: bytes
    span_id: bytes
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any]


@dataclass(slots=True)
class ResourceView:
    attributes: dict[str, Any]
    spans: list[SpanView]


def _malformed(message: str) -> ApplicationError:
    return ApplicationError("malformed_otlp", message)


def otlp_decode(body: bytes, *, encoding: str) -> list[ResourceView]:
    """The resources and spans of a protobuf or OTLP/JSON export; malformed input raises a 400.

    JSON is read straight from the parsed dicts: protobuf's own JSON parser is pure Python and costs
    about 20 times the rest of the path per span (bench/otlp.py), and wants base64 ids besides.
    """
    if encoding == "protobuf":
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except (DecodeError, ValueError) as exc:
            raise _malformed(f"Not an OTLP ExportTraceServiceRequest in protobuf: {exc}") from None
        return [
            ResourceView(
                _attributes(rs.resource.attributes),
                [
                    SpanView(
                        span.trace_id,
                        span.span_id,
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                        _attributes(span.attributes),
                    )
                    for ss in rs.scope_spans
                    for span in ss.spans
                ],
            )
            for rs in request.resource_spans
        ]
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _malformed(f"Malformed JSON: {exc}") from None
    return _json_export(_object(data, "The export"))


# --- OTLP/JSON: lowerCamelCase keys (protobuf names accepted too), hex ids, int64 as string or number ---


def _get(obj: dict, camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise _malformed(f"{where} must be a JSON object.")
    return value


def _list(obj: dict, camel: str, snake: str, where: str) -> list:
    value = _get(obj, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _malformed(f"{where}.{camel} must be a list.")
    return value


def _uint64(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if type(value) is not int or not 0 <= value < 2**64:
        raise _malformed(f"{where} must be an unsigned 64-bit integer (a number or a string of digits).")
    return value


def _id(value: Any, length: int, where: str) -> bytes:
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise _malformed(f"{where} must be a hex string.")
    if len(value) == 2 * length and _HEX.match(value):
        return bytes.fromhex(value)
    try:  # protobuf's own JSON mapping (base64), which some exporters send
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != length:
        raise _malformed(f"{where} must be {length} bytes as {2 * length} hex digits.")
    return raw


def _json_value(value: Any, where: str) -> Any:
    for key, inner in _object(value, where).items():
        if key in ("stringValue", "string_value"):
            if not isinstance(inner, str):
                raise _malformed(f"{where}.stringValue must be a string.")
            return inner
        if key in ("intValue", "int_value"):
            if isinstance(inner, str) and _INT.match(inner):
                inner = int(inner)
            if type(inner) is not int or not -(2**63) <= inner < 2**63:
                raise _malformed(f"{where}.intValue must be a 64-bit integer.")
            return inner
        if key in ("boolValue", "bool_value"):
            if not isinstance(inner, bool):
                raise _malformed(f"{where}.boolValue must be true or false.")
            return inner
        if key in ("doubleValue", "double_value"):
            if isinstance(inner, str) and inner in ("NaN", "Infinity", "-Infinity"):
                return float(inner.replace("Infinity", "inf"))
            if isinstance(inner, bool) or not isinstance(inner, int | float):
                raise _malformed(f"{where}.doubleValue must be a number.")
            return float(inner)
        if key in ("arrayValue", "array_value"):
            values = _list(_object(inner, f"{where}.arrayValue"), "values", "values", f"{where}.arrayValue")
            return [_json_value(v, f"{where}.arrayValue.values") for v in values]
        if key in ("kvlistValue", "kvlist_value"):
            kvs = _list(_object(inner, f"{where}.kvlistValue"), "values", "values", f"{where}.kvlistValue")
            return _json_attributes(kvs, f"{where}.kvlistValue.values")
        if key in ("bytesValue", "bytes_value"):
            try:
                return base64.b64decode(inner, validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise _malformed(f"{where}.bytesValue must be base64.") from None
    return None  # an empty AnyValue, or only fields this receiver does not know (ignored, as the spec says)


def _json_attributes(kvs: list, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        key = _object(kv, where).get("key")
        if not isinstance(key, str):
            raise _malformed(f"{where}: each attribute needs a string key.")
        raw = kv.get("value")
        out[key] = None if raw is None else _json_value(raw, f"{where}[{key[:60]}]")
    return out


def _json_export(data: dict) -> list[ResourceView]:
    resources = []
    for rs in _list(data, "resourceSpans", "resource_spans", "The export"):
        rs = _object(rs, "resourceSpans[]")
        resource = _object(rs.get("resource") or {}, "resource")
        view = ResourceView(
            _json_attributes(_list(resource, "attributes", "attributes", "resource"), "resource.attributes"), []
        )
        for ss in _list(rs, "scopeSpans", "scope_spans", "resourceSpans[]"):
            for span in _list(_object(ss, "scopeSpans[]"), "spans", "spans", "scopeSpans[]"):
                span = _object(span, "spans[]")
                view.spans.append(
                    SpanView(
                        _id(_get(span, "traceId", "trace_id"), 16, "traceId"),
                        _id(_get(span, "spanId", "span_id"), 8, "spanId"),
                        _uint64(_get(span, "startTimeUnixNano", "start_time_unix_nano"), "startTimeUnixNano"),
                        _uint64(_get(span, "endTimeUnixNano", "end_time_unix_nano"), "endTimeUnixNano"),
                        _json_attributes(_list(span, "attributes", "attributes", "span"), "span.attributes"),
                    )
                )
        resources.append(view)
    return resources


# --- protobuf ---------------------------------------------------------------------------------------


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


# --- mapping ----------------------------------------------------------------------------------------


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


def otlp_spans_map(resources: list[ResourceView]) -> MappedBatch:
    """Every span of an export as a usage record, a rejection with its reason, or a skip."""
    batch = MappedBatch()
    workflow_attrs = settings.OTLP_WORKFLOW_ATTRIBUTES
    tag_attrs = settings.OTLP_TAG_ATTRIBUTES[: settings.USAGE_MAX_TAGS]
    tenant_attr, reservation_attr = settings.OTLP_TENANT_ATTRIBUTE, settings.OTLP_RESERVATION_ATTRIBUTE
    for resource in resources:
        for span in resource.spans:
            attrs = span.attributes
            if not any(name in attrs for name in USAGE_ATTRIBUTES):
                batch.skipped += 1
                continue
            label = f"span {span.trace_id.hex()}/{span.span_id.hex()}"
            try:
                record = _record(
                    span, attrs, resource.attributes, workflow_attrs, tag_attrs, tenant_attr, reservation_attr
                )
            except MappingError as error:
                batch.reject(label, error)
                continue
            batch.add(record, label)
    return batch


def _record(
    span: SpanView,
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
    channel = otel_channel(pick("gen_ai.provider.name") or pick("gen_ai.system"))
    if channel is not None:
        record["channel"] = channel
    for name in SERVICE_TIER_ATTRIBUTES:
        tier = known_service_tier(pick(name))
        if tier is not None:
            record["service_tier"] = tier
            break
    return record


# Where OpenAI's instrumentations put the tier that billed the call (the response's first: it is what
# ran; the request's asks for one).
SERVICE_TIER_ATTRIBUTES = (
    "openai.response.service_tier",
    "gen_ai.openai.response.service_tier",
    "openai.request.service_tier",
    "gen_ai.openai.request.service_tier",
)


def otel_channel(provider: Any) -> str | None:
    """The price channel a GenAI `gen_ai.provider.name` (or the older `gen_ai.system`) names: a cloud
    reseller bills its own prices. None leaves the channel to the model name (the provider's API)."""
    if not isinstance(provider, str):
        return None
    provider = provider.strip().lower()
    if provider.startswith(("gcp.vertex_ai", "vertex_ai")):
        return "vertex"
    if provider.startswith(("aws.bedrock", "aws_bedrock")):
        return "bedrock"
    if provider.startswith(("azure.", "az.")):
        return "azure"
    return None
