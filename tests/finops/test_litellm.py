"""POST /api/v1/litellm/logs: what LiteLLM's generic_api callback posts becomes usage records.

The payloads are StandardLoggingPayload items as LiteLLM documents them
(https://docs.litellm.ai/docs/proxy/logging_spec) and serialises them in its three log_formats
(litellm/integrations/generic_api/generic_api_callback.py): `json_array` is `json.dumps(list)`,
`ndjson` is the items' JSON joined by newlines, `single` one item per request; always with
`Content-Type: application/json`.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import pytest

from finops.models import UsageRecord

URL = "/api/v1/litellm/logs"
END = (datetime.now(UTC) - timedelta(minutes=3)).replace(microsecond=250000)


def payload(call_id: str, **changes) -> dict:
    """A StandardLoggingPayload of a successful OpenAI call through a LiteLLM proxy."""
    item = {
        "id": call_id,
        "trace_id": "3b4a9e8f-0d51-4a1d-9c1c-6f7d0a3f2b11",
        "call_type": "acompletion",
        "stream": False,
        "response_cost": 0.0065,
        "response_cost_failure_debug_info": None,
        "status": "success",
        "custom_llm_provider": "openai",
        "total_tokens": 1800,
        "prompt_tokens": 1500,
        "completion_tokens": 300,
        "startTime": END.timestamp() - 1.5,
        "endTime": END.timestamp(),
        "completionStartTime": END.timestamp() - 1.2,
        "response_time": 1.5,
        "model_map_information": {"model_map_key": "gpt-4o-2024-08-06", "model_map_value": None},
        "model": "gpt-4o-2024-08-06",
        "model_id": "c1b9a0f5e3",
        "model_group": "gpt-4o",
        "api_base": "https://api.openai.com/v1",
        "metadata": {
            "user_api_key_hash": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
            "user_api_key_alias": "support-bot prod",
            "user_api_key_org_id": None,
            "user_api_key_team_id": "team-7f3c",
            "user_api_key_user_id": "u-42",
            "user_api_key_team_alias": "acme",
            "spend_logs_metadata": {"workflow": "ticket-summary", "environment": "production"},
            "requester_ip_address": "10.0.0.7",
            "requester_metadata": {},
        },
        "cache_hit": None,
        "cache_key": None,
        "saved_cache_cost": 0.0,
        "request_tags": ["support", "eu"],
        "end_user": "customer-981",
        "requester_ip_address": "10.0.0.7",
        "messages": [{"role": "user", "content": "Summarise this ticket"}],
        "response": {
            "id": "chatcmpl-AbC123",
            "created": int(END.timestamp()),
            "model": "gpt-4o-2024-08-06",
            "object": "chat.completion",
            "system_fingerprint": "fp_45c6de4934",
            "choices": [
                {"finish_reason": "stop", "index": 0, "message": {"content": "Summary ...", "role": "assistant"}}
            ],
            "usage": {
                "completion_tokens": 300,
                "prompt_tokens": 1500,
                "total_tokens": 1800,
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
                "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
            },
        },
        "error_str": None,
        "error_information": {"error_code": "", "error_class": "", "llm_provider": ""},
        "model_parameters": {"temperature": 0.2, "max_tokens": 1000},
        "hidden_params": {
            "model_id": "c1b9a0f5e3",
            "cache_key": None,
            "api_base": "https://api.openai.com/v1",
            "response_cost": "0.0065",
            "additional_headers": {},
            "litellm_model_name": "gpt-4o-2024-08-06",
        },
    }
    for key, value in changes.items():
        item[key] = value
    return item


def anthropic_payload(call_id: str) -> dict:
    item = payload(call_id, model="claude-sonnet-4-5-20250929", custom_llm_provider="anthropic")
    item["prompt_tokens"], item["completion_tokens"], item["total_tokens"] = 3100, 300, 3400
    item["response"]["usage"] = {
        "completion_tokens": 300,
        "prompt_tokens": 3100,
        "total_tokens": 3400,
        "prompt_tokens_details": {"cached_tokens": 2000},
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 2000,
    }
    item["metadata"]["spend_logs_metadata"] = {"workflow": "chat-assistant", "environment": "staging"}
    return item


def failed_payload(call_id: str) -> dict:
    item = payload(call_id, status="failure", prompt_tokens=0, completion_tokens=0, total_tokens=0, response_cost=0.0)
    item["response"] = None
    item["error_str"] = "litellm.RateLimitError: OpenAIException - Rate limit reached"
    item["error_information"] = {"error_code": "429", "error_class": "RateLimitError", "llm_provider": "openai"}
    return item


def post(client, body: str, **extra):
    return client.post(URL, body.encode(), content_type="application/json", **extra)


def json_array(items) -> str:
    return json.dumps(items)


def ndjson(items) -> str:
    return "\n".join(json.dumps(item) for item in items)


def test_a_json_array_batch_becomes_priced_usage_records(api_a, catalog):
    response = post(
        api_a.client, json_array([payload("call-1"), anthropic_payload("call-2"), failed_payload("call-3")])
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"accepted": 2, "duplicate": 0, "rejected": 0, "skipped": 1, "errors": []}

    gpt = UsageRecord.objects.get(request_id="litellm:call-1")
    assert gpt.tenant.slug == "acme" and gpt.model_name == "gpt-4o-2024-08-06"
    assert (gpt.input_tokens, gpt.cached_input_tokens, gpt.output_tokens) == (500, 1000, 300)
    assert gpt.cost_nanos == 5_500_000  # 500 x 2.50 + 1000 x 1.25 + 300 x 10.00 per 1M tokens
    assert gpt.workflow.slug == "ticket-summary" and gpt.environment == "prod"
    assert gpt.occurred_at == END
    assert gpt.tags == {
        "provider": "openai",
        "user": "u-42",
        "team": "acme",
        "key_alias": "support-bot prod",
        "end_user": "customer-981",
        "tags": "support,eu",
    }
    claude = UsageRecord.objects.get(request_id="litellm:call-2")
    assert (claude.input_tokens, claude.cached_input_tokens, claude.cache_write_tokens) == (100, 2000, 1000)
    assert claude.cost_nanos == 9_150_000  # 100 x 3 + 2000 x 0.30 + 1000 x 3.75 + 300 x 15 per 1M
    assert claude.environment == "stage" and claude.workflow.slug == "chat-assistant"


@pytest.mark.parametrize("log_format", ["ndjson", "single"])
def test_ndjson_and_single_formats_and_resent_batches_are_duplicates(api_a, catalog, log_format):
    items = [payload("call-1"), anthropic_payload("call-2")]
    bodies = [ndjson(items)] if log_format == "ndjson" else [json.dumps(item) for item in items]
    for body in bodies:
        assert post(api_a.client, body).status_code == 200
    assert UsageRecord.objects.count() == 2
    for body in bodies:  # LiteLLM re-sending the same calls: nothing counts twice
        again = post(api_a.client, body)
        assert again.status_code == 200 and again.json()["accepted"] == 0 and again.json()["duplicate"] >= 1
    assert UsageRecord.objects.count() == 2


def test_without_workflow_metadata_the_key_alias_names_the_workflow(api_a, catalog):
    item = payload("call-1")
    item["metadata"]["spend_logs_metadata"] = None
    post(api_a.client, json_array([item]))
    record = UsageRecord.objects.get()
    assert record.workflow.slug == "support-bot-prod" and record.environment == "prod"


def test_bad_items_are_rejected_with_reasons_and_the_rest_stored(api_a, catalog):
    bad_usage = payload("call-2")
    bad_usage["response"]["usage"]["prompt_tokens_details"]["cached_tokens"] = 9000
    response = post(api_a.client, json_array([payload("call-1"), bad_usage, "not an object", payload("")]))
    assert response.status_code == 207
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (1, 3)
    assert any("cannot be below them (9000)" in e for e in answer["errors"])
    assert any("StandardLoggingPayload object" in e for e in answer["errors"])
    assert UsageRecord.objects.count() == 1


@pytest.mark.parametrize("body", ["", "{not json", "[1, 2", '{"a": 1}\n{broken', "42"])
def test_malformed_bodies_answer_400(api_a, body):
    response = post(api_a.client, body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


def test_a_tenant_keys_items_stay_in_its_tenant_whatever_team_they_name(api_a, api_b, catalog):
    item = payload("call-1")
    item["metadata"]["user_api_key_team_alias"] = "globex"  # tenant B's slug as the LiteLLM team
    response = post(api_a.client, json_array([item]))
    assert response.status_code == 200
    record = UsageRecord.objects.get()
    assert record.tenant.slug == "acme" and record.tags["team"] == "globex"
    response = post(api_a.client, json_array([payload("call-9")]), QUERY_STRING="tenant=globex")
    assert response.status_code == 404 and b"marker" not in response.content
    assert not UsageRecord.objects.filter(tenant__slug="globex").exists()


def test_a_platform_key_routes_items_by_the_litellm_team(api_platform, catalog):
    to_b = payload("call-1")
    to_b["metadata"]["user_api_key_team_alias"] = "globex"
    unknown = payload("call-2")
    unknown["metadata"]["user_api_key_team_alias"] = "initech"
    no_team = copy.deepcopy(payload("call-3"))
    no_team["metadata"]["user_api_key_team_alias"] = None
    response = post(api_platform.client, json_array([to_b, unknown, no_team]))
    assert response.status_code == 207
    assert response.json()["rejected"] == 2
    assert list(UsageRecord.objects.values_list("tenant__slug", "request_id")) == [("globex", "litellm:call-1")]


def test_the_key_needs_the_ingest_scope(make_key, tenant_a, catalog, client):
    assert post(client, json_array([payload("call-1")])).status_code == 401
    read_only = make_key(tenant_a, scopes="read")
    assert post(read_only.client, json_array([payload("call-1")])).status_code == 403
    assert not UsageRecord.objects.exists()


def test_absurd_items_are_rejected_never_a_5xx(api_a, catalog):
    def changed(call_id, **changes):
        item = payload(call_id)
        item.update(changes)
        return item

    items = [
        changed("a1", endTime=1e300),
        changed("a2", prompt_tokens="100"),
        changed("a3", completion_tokens=-1),
        changed("a4", metadata="not an object"),
        changed("a5", response="plain text"),
        changed("a6", model=None, model_group=None, hidden_params=None),
        changed("a7", endTime="yesterday"),
        changed("a" * 300),
        changed("a9", metadata={"spend_logs_metadata": {"environment": "qa-7"}}),
    ]
    response = post(api_a.client, json_array(items))
    assert response.status_code == 207
    answer = response.json()
    # a4 (metadata not an object) and a5 (no usage details) still carry tokens: stored without extras
    assert (answer["accepted"], answer["rejected"]) == (2, 7), answer


def test_the_channel_and_service_tier_of_a_litellm_call_reach_the_record(api_a, catalog):
    """LiteLLM names the route (`custom_llm_provider`) and the provider's answer the tier that billed it."""
    vertex = payload("call-v", custom_llm_provider="vertex_ai")
    flex = payload("call-f")
    flex["response"] = {**(flex.get("response") or {}), "service_tier": "flex"}
    response = post(api_a.client, json_array([vertex, flex]))
    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == 2
    on_vertex = UsageRecord.objects.get(request_id="litellm:call-v")
    assert (on_vertex.channel, on_vertex.service_tier) == ("vertex", "standard")
    on_flex = UsageRecord.objects.get(request_id="litellm:call-f")
    assert (on_flex.channel, on_flex.service_tier) == ("api", "flex")
