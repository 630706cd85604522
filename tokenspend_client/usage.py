"""The token usage of an LLM SDK response, as the ingest API takes it (OpenAI and Anthropic shapes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_USAGE_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
_USAGE_DETAILS = {
    "prompt_tokens_details": "cached_tokens",
    "input_tokens_details": "cached_tokens",
    "completion_tokens_details": "reasoning_tokens",
    "output_tokens_details": "reasoning_tokens",
}


def usage_from_response(response: Any) -> dict | None:
    """The `usage` of an LLM SDK response as a plain dict the ingest API accepts, or None if it has none.

    Takes an object with a `.usage` attribute (OpenAI and Anthropic SDK responses) or a dict with a
    "usage" key (their JSON); the usage itself may be an object or a dict. Only token fields are kept.
    """
    usage = response.get("usage") if isinstance(response, Mapping) else getattr(response, "usage", None)
    if usage is None:
        return None
    out: dict[str, Any] = {}
    for name in _USAGE_FIELDS:
        value = field_of(usage, name)
        if isinstance(value, int) and not isinstance(value, bool):
            out[name] = value
    for name, inner in _USAGE_DETAILS.items():
        details = field_of(usage, name)
        value = field_of(details, inner) if details is not None else None
        if isinstance(value, int) and not isinstance(value, bool):
            out[name] = {inner: value}
    return out or None


def field_of(container: Any, name: str) -> Any:
    if isinstance(container, Mapping):
        return container.get(name)
    return getattr(container, name, None)


def response_model(response: Any) -> str | None:
    model = field_of(response, "model")
    return model if isinstance(model, str) and model else None
