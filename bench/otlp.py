"""OTLP front half: what decoding an export and mapping its spans costs, beside the usage API's own front half.

Both paths end in the same `usage_ingest` (validation, pricing, the COPY, budget windows), so the
question is only what comes before it. For the same 1,000 calls this prints, per record:

- the ceiling: `orjson.loads` of a POST /api/v1/usage batch plus `validate_record` of each record
  (what the usage API does before the shared service);
- OTLP protobuf: `otlp_decode` + `otlp_spans_map` + `validate_record` of the mapped records;
- OTLP/JSON: the same from the JSON encoding (hex ids, string int64);
- LiteLLM: `litellm_items` + `litellm_items_map` + `validate_record` of a json_array of
  StandardLoggingPayload items (with their messages and response, as LiteLLM sends them).

No database: nothing here touches one.

    .venv/bin/python bench/otlp.py            # 30 rounds
    .venv/bin/python bench/otlp.py --quick    # 5 rounds
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")
os.environ.setdefault("DJANGO_DEBUG", "true")

import django  # noqa: E402

django.setup()

import orjson  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402

from finops.services.litellm import litellm_items, litellm_items_map  # noqa: E402
from finops.services.otlp import otlp_decode, otlp_spans_map  # noqa: E402
from finops.services.usage_validation import Limits, validate_record  # noqa: E402

CALLS = 1000
NOW = datetime.now(UTC)


def _kv(key: str, value) -> KeyValue:
    return KeyValue(
        key=key, value=AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
    )


def otlp_export() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in {"service.name": "support-bot", "deployment.environment.name": "production"}.items():
        rs.resource.attributes.append(_kv(key, value))
    ss = rs.scope_spans.add()
    end = int((NOW - timedelta(minutes=5)).timestamp()) * 10**9
    for i in range(CALLS):
        span = ss.spans.add()
        span.trace_id = (i + 1).to_bytes(16, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
        span.name = "chat gpt-4o"
        span.start_time_unix_nano, span.end_time_unix_nano = end - 10**9, end + i
        for key, value in {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 1200 + i,
            "gen_ai.usage.cache_read.input_tokens": 800,
            "gen_ai.usage.output_tokens": 300,
            "server.address": "api.openai.com",
            "tokenspend.workflow": "ticket-summary",
        }.items():
            span.attributes.append(_kv(key, value))
    return request


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    import base64

    data = json_format.MessageToDict(request)
    for rs in data["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId"):
                    span[key] = base64.b64decode(span[key]).hex()
    return orjson.dumps(data)


def usage_batch() -> bytes:
    when = (NOW - timedelta(minutes=5)).isoformat()
    records = [
        {
            "request_id": f"req-{i}",
            "workflow": "ticket-summary",
            "model": "gpt-4o-2024-08-06",
            "environment": "prod",
            "occurred_at": when,
            "tags": {"gen_ai.provider.name": "openai", "service.name": "support-bot"},
            "usage": {
                "prompt_tokens": 1200 + i,
                "completion_tokens": 300,
                "prompt_tokens_details": {"cached_tokens": 800},
            },
        }
        for i in range(CALLS)
    ]
    return orjson.dumps({"records": records})


def litellm_batch() -> bytes:
    end = (NOW - timedelta(minutes=5)).timestamp()
    items = []
    for i in range(CALLS):
        items.append(
            {
                "id": f"call-{i}",
                "trace_id": f"trace-{i}",
                "call_type": "acompletion",
                "status": "success",
                "custom_llm_provider": "openai",
                "prompt_tokens": 1200 + i,
                "completion_tokens": 300,
                "total_tokens": 1500 + i,
                "startTime": end - 1.5,
                "endTime": end,
                "model": "gpt-4o-2024-08-06",
                "model_group": "gpt-4o",
                "metadata": {
                    "user_api_key_alias": "support-bot",
                    "user_api_key_team_alias": "acme",
                    "user_api_key_user_id": "u-42",
                    "spend_logs_metadata": {"workflow": "ticket-summary", "environment": "prod"},
                },
                "request_tags": ["support"],
                "messages": [{"role": "user", "content": "Summarise this ticket: " + "x" * 400}],
                "response": {
                    "id": f"chatcmpl-{i}",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "y" * 200}}],
                    "usage": {
                        "prompt_tokens": 1200 + i,
                        "completion_tokens": 300,
                        "prompt_tokens_details": {"cached_tokens": 800},
                    },
                },
            }
        )
    return orjson.dumps(items)


def _validate(records: list) -> None:
    limits = Limits.current(datetime.now(UTC))
    for i, record in enumerate(records):
        validate_record(i, record, limits, "acme")


def front_usage(body: bytes) -> None:
    _validate(orjson.loads(body)["records"])


def front_otlp(body: bytes, encoding: str) -> None:
    batch = otlp_spans_map(otlp_decode(body, encoding=encoding))
    assert len(batch.records) == CALLS and not batch.rejected, batch.rejected[:3]
    _validate(batch.records)


def front_litellm(body: bytes) -> None:
    batch = litellm_items_map(litellm_items(body), tenant_bound=True)
    assert len(batch.records) == CALLS and not batch.rejected, batch.rejected[:3]
    _validate(batch.records)


def best_per_record(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) / CALLS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 30")
    args = parser.parse_args(argv)
    rounds = 5 if args.quick else 30

    export = otlp_export()
    bodies = {
        "usage": usage_batch(),
        "otlp-protobuf": export.SerializeToString(),
        "otlp-json": otlp_json(export),
        "litellm": litellm_batch(),
    }
    paths = {
        "usage API JSON (ceiling)": lambda: front_usage(bodies["usage"]),
        "OTLP protobuf": lambda: front_otlp(bodies["otlp-protobuf"], "protobuf"),
        "OTLP/JSON": lambda: front_otlp(bodies["otlp-json"], "json"),
        "LiteLLM json_array": lambda: front_litellm(bodies["litellm"]),
    }
    for fn in paths.values():  # warm up: imports, caches
        fn()
    ceiling = None
    print(f"{CALLS:,} calls per body, median of {rounds} rounds, Python {sys.version.split()[0]}")
    print(f"{'path':28} {'body KiB':>9} {'us/record':>10} {'records/s':>11} {'x ceiling time':>15}")
    sizes = dict(zip(paths, bodies.values(), strict=True))
    for name, fn in paths.items():
        per = best_per_record(fn, rounds)
        ceiling = ceiling or per
        print(f"{name:28} {len(sizes[name]) / 1024:9.0f} {per * 1e6:10.1f} {1 / per:11,.0f} {per / ceiling:15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
