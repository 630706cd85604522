"""Validation of posted usage records: plain Python over parsed JSON, built for 1,000-record batches.

Each record either becomes a `Candidate` (tokens mapped to non-overlapping buckets, timestamps
normalised to UTC) or raises `RecordError` naming the field. Settings are read once per batch
through `Limits`. Text is counted with tiktoken by `count_text_tokens`, never stored.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings

from finops import tokens as tokenizer
from finops.catalog import CatalogSnapshot, channel_from_model_name
from finops.measures import TOKEN_FIELDS
from finops.models import Environment
from finops.pricing import API, CHANNELS, STANDARD, TokenBuckets

TEXT_FIELDS = ("prompt", "messages", "completion")
KNOWN_FIELDS = frozenset(
    {
        "request_id",
        "tenant",
        "workflow",
        "model",
        "environment",
        "occurred_at",
        "tags",
        "usage",
        "reservation_id",
        "prompt_version",
        "service_tier",
        "channel",
        "cache_write_1h_tokens",
        *TOKEN_FIELDS,
        *TEXT_FIELDS,
    }
)
ENVIRONMENTS = frozenset(Environment.values)
MAX_TOKENS = 10**9  # per bucket, per record: far above any real call, far below overflow
_SLUG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_MAX_TEXT_CHARS = 2_000_000
# PostgreSQL text cannot hold NUL: one such record must be rejected alone, not fail its whole batch.
_NUL_MESSAGE = "Must not contain NUL (\\u0000) characters."
PROMPT_VERSION_MAX = 100  # PromptVersion.label / UsageRecord.prompt_version


class RecordError(Exception):
    """A field error on one record; collected, never raised out of the service."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message


@dataclass(slots=True)
class Candidate:
    """A record that passed validation, on its way to the table."""

    index: int
    raw: dict
    request_id: str
    tenant_slug: str | None
    workflow_slug: str | None
    model_name: str
    environment: str
    occurred_at: datetime
    tags: dict[str, str]
    reservation_id: str | None
    prompt_version: str = ""
    service_tier: str = STANDARD
    channel: str = API
    price_rule: str = ""
    buckets: TokenBuckets | None = None  # None until text is counted
    tokens_counted: bool = False
    tokens_estimated: bool = False
    tenant_id: int = 0
    workflow_id: int | None = None
    model_id: int | None = None
    tier_id: int | None = None
    price_id: int | None = None
    cost: int | None = None
    content_hash: str = ""

    @property
    def counted_buckets(self) -> TokenBuckets:
        """The token buckets once counted: every candidate that reaches pricing and the insert has them."""
        if self.buckets is None:
            raise RuntimeError(f"record {self.index}: tokens not counted yet")
        return self.buckets


def _int_field(name: str, value: Any) -> int:
    # bool is an int subclass in Python; JSON true is not a token count.
    if type(value) is not int:
        raise RecordError(name, "Must be a whole number of tokens.")
    if value < 0:
        raise RecordError(name, "Must not be negative.")
    if value > MAX_TOKENS:
        raise RecordError(name, f"Must be at most {MAX_TOKENS:,} tokens.")
    return value


def _opt_int(container: dict, key: str, path: str) -> int:
    value = container.get(key)
    if value is None:
        return 0
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # the common case, without a call
        return value
    return _int_field(path, value)


def _sub(container: dict, key: str, path: str) -> dict:
    value = container.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError(path, "Must be an object.")
    return value


def buckets_from_usage(usage: Any) -> TokenBuckets:
    """Map a provider SDK's `usage` object to non-overlapping buckets.

    - OpenAI Chat Completions: prompt_tokens includes cached tokens, completion_tokens includes
      reasoning tokens, so both are subtracted out.
    - OpenAI Responses: input_tokens / output_tokens with *_details, same inclusions.
    - Anthropic Messages: input_tokens excludes cache reads and writes, which come separately.
    - Google Gemini usageMetadata: promptTokenCount includes cachedContentTokenCount; thoughts apart.
    """
    if not isinstance(usage, dict):
        raise RecordError("usage", "Must be an object as returned by the OpenAI, Anthropic or Gemini SDK.")
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        return _openai_buckets(usage, "prompt_tokens", "completion_tokens")
    if "input_tokens_details" in usage or "output_tokens_details" in usage:
        return _openai_buckets(usage, "input_tokens", "output_tokens")
    if "input_tokens" in usage or "output_tokens" in usage:
        return _anthropic_buckets(usage)
    if "promptTokenCount" in usage or "candidatesTokenCount" in usage:
        prompt = _opt_int(usage, "promptTokenCount", "usage.promptTokenCount")
        cached = _opt_int(usage, "cachedContentTokenCount", "usage.cachedContentTokenCount")
        if cached > prompt:
            raise RecordError("usage.cachedContentTokenCount", "Cannot exceed promptTokenCount.")
        # Tool-use prompt tokens (code execution, search results fed back) are billed as input too.
        tool_prompt = _opt_int(usage, "toolUsePromptTokenCount", "usage.toolUsePromptTokenCount")
        return TokenBuckets(
            input=prompt - cached + tool_prompt,
            cached_input=cached,
            output=_opt_int(usage, "candidatesTokenCount", "usage.candidatesTokenCount"),
            reasoning=_opt_int(usage, "thoughtsTokenCount", "usage.thoughtsTokenCount"),
        )
    raise RecordError(
        "usage",
        "Unrecognised usage shape: expected OpenAI (prompt_tokens/completion_tokens or input_tokens_details), "
        "Anthropic (input_tokens/output_tokens) or Gemini (promptTokenCount) fields.",
    )


def _anthropic_buckets(usage: dict) -> TokenBuckets:
    """`cache_creation_input_tokens` counts every cache write; `cache_creation` splits it by lifetime
    (`ephemeral_5m_input_tokens`, `ephemeral_1h_input_tokens`), and 1-hour writes cost more."""
    split = _sub(usage, "cache_creation", "usage.cache_creation")
    five = _opt_int(split, "ephemeral_5m_input_tokens", "usage.cache_creation.ephemeral_5m_input_tokens")
    hour = _opt_int(split, "ephemeral_1h_input_tokens", "usage.cache_creation.ephemeral_1h_input_tokens")
    if usage.get("cache_creation_input_tokens") is None:
        writes = five + hour
    else:
        writes = _opt_int(usage, "cache_creation_input_tokens", "usage.cache_creation_input_tokens")
        if five + hour > writes:
            raise RecordError(
                "usage.cache_creation", f"Its 5-minute and 1-hour writes exceed cache_creation_input_tokens ({writes})."
            )
    return TokenBuckets(
        input=_opt_int(usage, "input_tokens", "usage.input_tokens"),
        cached_input=_opt_int(usage, "cache_read_input_tokens", "usage.cache_read_input_tokens"),
        cache_write=writes,
        cache_write_1h=hour,
        output=_opt_int(usage, "output_tokens", "usage.output_tokens"),
    )


# How each SDK spells a service tier -> the catalog's tier. OpenAI answers "default" for standard
# processing and "scale" for Scale Tier capacity (paid up front, so the standard list price applies);
# Anthropic's usage says "standard", "priority" or "batch"; Gemini's batch API is named by the caller.
_TIER_SPELLINGS = {
    "standard": STANDARD,
    "default": STANDARD,
    "auto": STANDARD,
    "scale": STANDARD,
    "on_demand": STANDARD,
    "batch": "batch",
    "flex": "flex",
    "priority": "priority",
}


def known_service_tier(value: Any) -> str | None:
    """A provider's tier spelling as this catalog's tier, or None when it is not one (for mappers of
    foreign payloads, which leave an unknown spelling out rather than reject the call)."""
    return _TIER_SPELLINGS.get(value.strip().lower()) if isinstance(value, str) else None


def parse_service_tier(value: Any, path: str = "service_tier") -> str:
    if value is None:
        return STANDARD
    tier = _TIER_SPELLINGS.get(value.strip().lower()) if isinstance(value, str) else None
    if tier is None:
        raise RecordError(path, "Must be a service tier: standard (or default), batch, flex or priority.")
    return tier


def parse_channel(value: Any, model_name: str) -> str:
    if value is None:
        return channel_from_model_name(model_name)
    if not isinstance(value, str) or value.strip().lower() not in CHANNELS:
        raise RecordError("channel", f"Must be one of {', '.join(CHANNELS)} (api = the provider's own API).")
    return value.strip().lower()


def _openai_buckets(usage: dict, in_key: str, out_key: str) -> TokenBuckets:
    """Chat Completions (prompt/completion) and Responses (input/output) differ only in key names:
    each total includes its `<key>_details` cached or reasoning tokens."""
    in_details, out_details = f"{in_key}_details", f"{out_key}_details"
    return _split(
        f"usage.{in_key}",
        _opt_int(usage, in_key, f"usage.{in_key}"),
        _opt_int(_sub(usage, in_details, f"usage.{in_details}"), "cached_tokens", f"usage.{in_details}.cached_tokens"),
        f"usage.{out_key}",
        _opt_int(usage, out_key, f"usage.{out_key}"),
        _opt_int(
            _sub(usage, out_details, f"usage.{out_details}"),
            "reasoning_tokens",
            f"usage.{out_details}.reasoning_tokens",
        ),
    )


def _split(in_path: str, prompt: int, cached: int, out_path: str, completion: int, reasoning: int) -> TokenBuckets:
    if cached > prompt:
        raise RecordError(in_path, f"Includes the cached tokens, so it cannot be below them ({cached}).")
    if reasoning > completion:
        raise RecordError(out_path, f"Includes the reasoning tokens, so it cannot be below them ({reasoning}).")
    return TokenBuckets(input=prompt - cached, cached_input=cached, output=completion - reasoning, reasoning=reasoning)


@dataclass(frozen=True, slots=True)
class Limits:
    """Settings read once per batch: attribute access on django.conf.settings is not free."""

    now: datetime
    earliest: datetime
    latest: datetime
    backfill_days: int
    future_seconds: int
    max_tags: int

    @classmethod
    def current(cls, now: datetime) -> Limits:
        backfill, future = settings.USAGE_BACKFILL_DAYS, settings.USAGE_MAX_FUTURE_SECONDS
        return cls(
            now=now,
            earliest=now - timedelta(days=backfill),
            latest=now + timedelta(seconds=future),
            backfill_days=backfill,
            future_seconds=future,
            max_tags=settings.USAGE_MAX_TAGS,
        )


def _parse_occurred_at(value: Any, limits: Limits) -> datetime:
    if value is None:
        return limits.now
    if not isinstance(value, str):
        raise RecordError("occurred_at", "Must be an ISO 8601 timestamp string with a UTC offset.")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise RecordError("occurred_at", f"'{value[:40]}' is not an ISO 8601 timestamp.") from None
    if when.tzinfo is None:
        raise RecordError("occurred_at", "Must include a UTC offset, e.g. 2025-05-01T12:00:00Z or +02:00.")
    when = when.astimezone(UTC)
    if when > limits.latest:
        raise RecordError("occurred_at", f"Is more than {limits.future_seconds} seconds in the future.")
    if when < limits.earliest:
        raise RecordError("occurred_at", f"Is older than the backfill window of {limits.backfill_days} days.")
    return when


def _parse_tags(value: Any, max_tags: int) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError("tags", "Must be an object of string keys to string values.")
    if len(value) > max_tags:
        raise RecordError("tags", f"At most {max_tags} tags per record.")
    for k, v in value.items():
        if not isinstance(v, str) or not 0 < len(k) <= 64 or len(v) > 256:
            raise RecordError("tags", f"Tag '{str(k)[:64]}': keys are 1-64 characters, values strings up to 256.")
        if "\x00" in k or "\x00" in v:
            raise RecordError("tags", f"Tag '{k[:64]!r}': {_NUL_MESSAGE}")
    return value


def validate_record(index: int, raw: Any, limits: Limits, bound_slug: str | None) -> Candidate:
    if not isinstance(raw, dict):
        raise RecordError("non_field_errors", "Each record must be a JSON object.")
    unknown = raw.keys() - KNOWN_FIELDS
    if unknown:
        raise RecordError("non_field_errors", f"Unknown field(s): {', '.join(sorted(unknown)[:5])}.")

    request_id = raw.get("request_id")
    if not isinstance(request_id, str) or not request_id.strip():
        raise RecordError("request_id", "Required: a non-empty string that identifies this call (idempotency key).")
    if len(request_id) > 200:
        raise RecordError("request_id", "At most 200 characters.")
    if "\x00" in request_id:
        raise RecordError("request_id", _NUL_MESSAGE)

    tenant_slug = raw.get("tenant")
    if tenant_slug is not None and (not isinstance(tenant_slug, str) or "\x00" in tenant_slug):
        raise RecordError("tenant", "Must be a tenant slug.")
    if bound_slug is not None:
        if tenant_slug is not None and tenant_slug != bound_slug:
            raise RecordError("tenant", f"This API key records usage for tenant '{bound_slug}' only.")
        tenant_slug = bound_slug
    elif not tenant_slug:
        raise RecordError("tenant", "Required with a platform key: the slug of the tenant this call was for.")

    workflow = raw.get("workflow")
    if workflow is not None and (not isinstance(workflow, str) or not _SLUG_RE.match(workflow)):
        raise RecordError("workflow", "Must be a slug: letters, digits, '-', '_' or '.', up to 100 characters.")

    model_name = raw.get("model")
    if not isinstance(model_name, str) or not model_name.strip():
        raise RecordError("model", "Required: the model name as sent to the provider.")
    if len(model_name) > 200:
        raise RecordError("model", "At most 200 characters.")
    if "\x00" in model_name:
        raise RecordError("model", _NUL_MESSAGE)

    environment = raw.get("environment", "prod")
    if not isinstance(environment, str) or environment not in ENVIRONMENTS:
        raise RecordError("environment", f"Must be one of {', '.join(sorted(ENVIRONMENTS))}.")

    reservation_id = raw.get("reservation_id")
    if reservation_id is not None:
        try:
            reservation_id = str(uuid.UUID(str(reservation_id)))
        except ValueError:
            raise RecordError("reservation_id", "Must be the reservation id returned by preflight.") from None

    # The label as sent, not looked up: a plain bounded string keeps the hot path one comparison long.
    prompt_version = raw.get("prompt_version")
    if prompt_version is None:
        prompt_version = ""
    elif type(prompt_version) is not str or len(prompt_version) > PROMPT_VERSION_MAX or "\x00" in prompt_version:
        raise RecordError(
            "prompt_version", f"Must be a prompt version label: a string of at most {PROMPT_VERSION_MAX} characters."
        )

    candidate = Candidate(
        index=index,
        raw=raw,
        request_id=request_id,
        tenant_slug=tenant_slug,
        workflow_slug=workflow,
        model_name=model_name.strip(),
        environment=environment,
        occurred_at=_parse_occurred_at(raw.get("occurred_at"), limits),
        tags=_parse_tags(raw.get("tags"), limits.max_tags),
        reservation_id=reservation_id,
        prompt_version=prompt_version,
        service_tier=parse_service_tier(raw.get("service_tier")),
        channel=parse_channel(raw.get("channel"), model_name),
    )

    has_canonical = any(f in raw for f in TOKEN_FIELDS)
    has_usage = "usage" in raw
    has_text = any(f in raw for f in TEXT_FIELDS)
    if has_canonical + has_usage + has_text > 1:
        raise RecordError(
            "non_field_errors", "Give tokens one way: the *_tokens fields, a `usage` object, or prompt/messages text."
        )
    if "cache_write_1h_tokens" in raw and not has_canonical:
        raise RecordError("cache_write_1h_tokens", "Goes with the *_tokens fields, as the part of cache_write_tokens.")
    if has_canonical:
        candidate.buckets = TokenBuckets(
            input=_opt_int(raw, "input_tokens", "input_tokens"),
            cached_input=_opt_int(raw, "cached_input_tokens", "cached_input_tokens"),
            cache_write=_opt_int(raw, "cache_write_tokens", "cache_write_tokens"),
            output=_opt_int(raw, "output_tokens", "output_tokens"),
            reasoning=_opt_int(raw, "reasoning_tokens", "reasoning_tokens"),
            cache_write_1h=_opt_int(raw, "cache_write_1h_tokens", "cache_write_1h_tokens"),
        )
        if candidate.buckets.cache_write_1h > candidate.buckets.cache_write:
            raise RecordError(
                "cache_write_1h_tokens", "Is the part of cache_write_tokens written for 1 hour, so at most it."
            )
    elif has_usage:
        candidate.buckets = buckets_from_usage(raw["usage"])
        usage_tier = raw["usage"].get("service_tier")
        if usage_tier is not None and raw.get("service_tier") is None:
            candidate.service_tier = parse_service_tier(usage_tier, "usage.service_tier")
    elif has_text:
        if "prompt" in raw and "messages" in raw:
            raise RecordError("non_field_errors", "Send either prompt or messages, not both.")
        for name in ("prompt", "completion"):
            value = raw.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > _MAX_TEXT_CHARS):
                raise RecordError(name, f"Must be a string of at most {_MAX_TEXT_CHARS:,} characters.")
        if "messages" in raw and not isinstance(raw["messages"], list):
            raise RecordError("messages", "Must be a list of chat messages.")
    else:
        raise RecordError(
            "non_field_errors",
            "No token counts: send input_tokens/output_tokens (and the other *_tokens fields), "
            "a provider `usage` object, or the prompt/messages and completion text to count.",
        )
    return candidate


def count_text_tokens(c: Candidate, catalog: CatalogSnapshot) -> None:
    """Count prompt/messages and completion with tiktoken; the text itself is never stored."""
    entry = catalog.resolve(c.model_name)
    raw = c.raw
    if "messages" in raw:
        try:
            prompt = tokenizer.count_messages(entry, c.model_name, raw["messages"])
        except ValueError as exc:
            raise RecordError("messages", str(exc)) from None
    else:
        prompt = tokenizer.count_text(entry, c.model_name, raw.get("prompt") or "")
    completion = tokenizer.count_text(entry, c.model_name, raw.get("completion") or "")
    c.buckets = TokenBuckets(input=prompt.tokens, output=completion.tokens)
    c.tokens_counted = True
    c.tokens_estimated = prompt.estimated or completion.estimated
