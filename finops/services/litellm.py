"""LiteLLM's generic_api logging callback -> usage records.

A LiteLLM proxy configured with `callback_type: generic_api` posts `StandardLoggingPayload` items
(https://docs.litellm.ai/docs/proxy/logging_spec) with `Content-Type: application/json` in one of
three `log_format`s: `json_array` (the default: `[{...}, {...}]`), `ndjson` (one object per line)
and `single` (one object per request). The body tells which; all three are accepted.

Mapping of one item:

- request_id: `litellm:<id>` (LiteLLM's call id), so a re-sent batch is a duplicate;
- model: `model` (as sent to the provider), else `hidden_params.litellm_model_name`, else `model_group`;
- tokens: `prompt_tokens` includes the cached input (`response.usage.prompt_tokens_details.cached_tokens`
  or `cache_read_input_tokens`) and the cache writes (`cache_creation_input_tokens`), which are taken out
  of it like an OpenAI `prompt_tokens`; `completion_tokens` includes
  `response.usage.completion_tokens_details.reasoning_tokens`. Where a provider's prompt count leaves
  the cache writes out (they do not fit in it), only the cached tokens are taken out;
- occurred_at: `endTime`; environment: `environment` in the request's `spend_logs_metadata` or
  `requester_metadata`; workflow: the first of `LITELLM_WORKFLOW_FIELDS` present, made a slug;
- tags: `provider`, `user`, `team`, `key_alias`, `end_user` and the request's `tags`;
- tenant (platform keys only): `LITELLM_TENANT_FIELD`, by default the LiteLLM team's alias; a tenant
  key's items are always its own tenant's, whatever team they name.

LiteLLM's own `response_cost` is not used: the record is priced from this product's catalog like any
other. Items without tokens (a failed call) are skipped and counted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from django.conf import settings

from tenants.errors import ApplicationError

from .catalog_import import litellm_channel
from .foreign_usage import MappedBatch, MappingError, environment_name, iso, tag_value, workflow_slug
from .usage_validation import known_service_tier

MAX_TOKENS = 10**9


def _malformed(message: str) -> ApplicationError:
    return ApplicationError("malformed_json", message)


def litellm_items(body: bytes) -> list[Any]:
    """The items of a json_array, ndjson or single post."""
    text = body.strip()
    if not text:
        raise _malformed("The body is empty: send LiteLLM StandardLoggingPayload items.")
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        items = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise _malformed(f"Line {number} is not JSON (json_array, ndjson or single): {exc}") from None
        return items
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        return [data]
    raise _malformed("Send a StandardLoggingPayload object, a JSON array of them, or one per line.")


def _path(item: dict, dotted: str) -> Any:
    value: Any = item
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _tokens(value: Any, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or not 0 <= value <= MAX_TOKENS:
        raise MappingError(name, f"Must be a whole number of tokens from 0 to {MAX_TOKENS:,}.")
    return value


def _time(value: Any) -> datetime | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise MappingError("endTime", "Is not a time this product can store.") from None
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise MappingError("endTime", f"'{value[:40]}' is neither epoch seconds nor ISO 8601.") from None
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    raise MappingError("endTime", "Must be epoch seconds or an ISO 8601 timestamp.")


def litellm_items_map(items: list[Any], *, tenant_bound: bool) -> MappedBatch:
    batch = MappedBatch()
    workflow_fields = settings.LITELLM_WORKFLOW_FIELDS
    tenant_field = None if tenant_bound else settings.LITELLM_TENANT_FIELD
    for index, item in enumerate(items):
        label = f"item {index}"
        if not isinstance(item, dict):
            batch.reject(label, MappingError("non_field_errors", "Each item must be a StandardLoggingPayload object."))
            continue
        if isinstance(item.get("id"), str):
            label = f"item {index} ({item['id'][:60]})"
        if (
            item.get("prompt_tokens") is None
            and item.get("completion_tokens") is None
            or (item.get("status") == "failure" and not item.get("prompt_tokens") and not item.get("completion_tokens"))
        ):
            batch.skipped += 1
            continue
        try:
            batch.add(_record(item, workflow_fields, tenant_field), label)
        except MappingError as error:
            batch.reject(label, error)
    return batch


def _record(item: dict, workflow_fields: list[str], tenant_field: str | None) -> dict:
    call_id = item.get("id")
    if not isinstance(call_id, str) or not call_id.strip():
        raise MappingError("id", "Required: LiteLLM's call id.")
    if len(call_id) > 190:
        raise MappingError("id", "At most 190 characters.")
    model = item.get("model") or _path(item, "hidden_params.litellm_model_name") or item.get("model_group")
    if not isinstance(model, str) or not model.strip():
        raise MappingError("model", "Required: the model the call used.")

    usage = _path(item, "response.usage")
    usage = usage if isinstance(usage, dict) else {}
    prompt = _tokens(item.get("prompt_tokens"), "prompt_tokens")
    completion = _tokens(item.get("completion_tokens"), "completion_tokens")
    cached = _tokens(
        _path(usage, "prompt_tokens_details.cached_tokens") or usage.get("cache_read_input_tokens"),
        "response.usage.prompt_tokens_details.cached_tokens",
    )
    written = _tokens(usage.get("cache_creation_input_tokens"), "response.usage.cache_creation_input_tokens")
    reasoning = _tokens(
        _path(usage, "completion_tokens_details.reasoning_tokens"),
        "response.usage.completion_tokens_details.reasoning_tokens",
    )
    if cached > prompt:
        raise MappingError("prompt_tokens", f"Includes the cached tokens, so it cannot be below them ({cached}).")
    if reasoning > completion:
        raise MappingError(
            "completion_tokens", f"Includes the reasoning tokens, so it cannot be below them ({reasoning})."
        )
    uncached = prompt - cached - written if cached + written <= prompt else prompt - cached

    raw_meta = item.get("metadata")
    meta: dict = raw_meta if isinstance(raw_meta, dict) else {}
    record: dict[str, Any] = {
        "request_id": f"litellm:{call_id.strip()}",
        "model": model.strip(),
        "input_tokens": uncached,
        "cached_input_tokens": cached,
        "cache_write_tokens": written,
        "output_tokens": completion - reasoning,
        "reasoning_tokens": reasoning,
    }
    # A call through Vertex, Bedrock or Azure bills that channel's prices; the provider's own API is the
    # default (from the model name). The tier is the one the provider's answer says billed the call.
    provider = item.get("custom_llm_provider")
    channel = litellm_channel(model, provider) if isinstance(provider, str) else None
    if channel is not None and channel != "api":
        record["channel"] = channel
    tier = known_service_tier(_path(item, "response.service_tier"))
    if tier is not None:
        record["service_tier"] = tier
    when = _time(item.get("endTime")) or _time(item.get("startTime"))
    if when is not None:
        record["occurred_at"] = iso(when)
    for where in ("metadata.spend_logs_metadata", "metadata.requester_metadata"):
        env = environment_name(_path(item, f"{where}.environment"), f"{where}.environment")
        if env:
            record["environment"] = env
            break
    for dotted in workflow_fields:
        slug = workflow_slug(_path(item, dotted))
        if slug:
            record["workflow"] = slug
            break
    tags = {
        "provider": tag_value(item.get("custom_llm_provider")),
        "user": tag_value(meta.get("user_api_key_user_id")),
        "team": tag_value(meta.get("user_api_key_team_alias") or meta.get("user_api_key_team_id")),
        "key_alias": tag_value(meta.get("user_api_key_alias")),
        "end_user": tag_value(item.get("end_user")),
        "tags": tag_value(item.get("request_tags")),
    }
    tags = {k: v for k, v in tags.items() if v}
    if tags:
        record["tags"] = tags
    for where in ("metadata.spend_logs_metadata", "metadata.requester_metadata"):
        reservation = _path(item, f"{where}.reservation_id")
        if reservation:
            record["reservation_id"] = str(reservation)
            break
    prompt_version = _path(item, "metadata.spend_logs_metadata.prompt_version")
    if prompt_version:
        record["prompt_version"] = str(prompt_version)
    if tenant_field:
        tenant = _path(item, tenant_field)
        if tenant:
            record["tenant"] = str(tenant)
    return record
