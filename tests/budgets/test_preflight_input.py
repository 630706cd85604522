"""Preflight's plain-Python check of the common body (budgets.apis.preflight.preflight_input_fast) against
its serializer: whatever the fast check accepts, PreflightInputSerializer accepts with the same validated
data; everything else goes to the serializer, so the API's errors stay the serializer's."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budgets.apis.preflight import PreflightInputSerializer, preflight_input_fast
from finops.services.usage_validation import MAX_TOKENS

FIELDS = [
    "tenant",
    "workflow",
    "model",
    "environment",
    "input_tokens",
    "prompt",
    "messages",
    "max_output_tokens",
    "approval_id",
    "prompt_version",
    "service_tier",
    "channel",
    "may_write_cache",
    "unknown",
]
TEXTS = st.sampled_from(["gpt-4o", "acme", "support-reply", "prod", "dev", "batch", "default", "vertex", "v2", "x"])
VALUES = st.one_of(
    TEXTS,
    st.text(max_size=8),
    st.text(alphabet=" \t\x00a-é\u2028", max_size=4),
    st.sampled_from(["a" * 64, "a" * 65, "b" * 100, "b" * 101, "c" * 200, "c" * 201, " gpt-4o", "gpt-4o ", ""]),
    st.integers(min_value=-2, max_value=3),
    st.sampled_from([MAX_TOKENS, MAX_TOKENS + 1, 2**63, 1.0, 2.5, "12", True, False, None, [], {}, ["x"]]),
)
USUAL = st.fixed_dictionaries(
    {"model": TEXTS, "input_tokens": st.integers(min_value=0, max_value=MAX_TOKENS)},
    optional={
        "tenant": TEXTS,
        "workflow": TEXTS,
        "environment": st.sampled_from(["dev", "stage", "prod"]),
        "max_output_tokens": st.integers(min_value=1, max_value=MAX_TOKENS),
        "service_tier": st.sampled_from(["standard", "default", "batch", "flex", "priority"]),
        "channel": st.sampled_from(["api", "vertex", "bedrock", "azure"]),
        "may_write_cache": st.booleans(),
        "prompt_version": TEXTS,
    },
)
# Random bodies, and usual ones with one to three fields changed to anything.
BODIES = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=8),
    st.builds(
        lambda usual, changed: {**usual, **changed},
        USUAL,
        st.dictionaries(st.sampled_from(FIELDS), VALUES, min_size=1, max_size=3),
    ),
)


def _serializer(data):
    serializer = PreflightInputSerializer(data=data)
    return serializer.is_valid(), dict(serializer.validated_data) if serializer.is_valid() else serializer.errors


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(BODIES)
def test_what_the_fast_check_accepts_the_serializer_accepts_the_same_way(body):
    fast = preflight_input_fast(body)
    if fast is not None:
        ok, validated = _serializer(body)
        assert ok, (body, validated)
        assert fast == validated


@settings(max_examples=300, deadline=None, derandomize=True)
@given(USUAL)
def test_the_usual_counted_call_takes_the_fast_path(body):
    if body.get("prompt_version") and not body.get("workflow"):
        return  # the serializer's own error
    fast = preflight_input_fast(body)
    assert fast is not None and fast == _serializer(body)[1]


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-4o", "input_tokens": 10, "prompt": "hi"},  # two inputs: the serializer's error
        {"model": "gpt-4o", "prompt": "hi"},  # text to count
        {"model": "gpt-4o", "input_tokens": 10, "prompt_version": "v2"},  # a version needs its workflow
        {"model": "gpt-4o", "input_tokens": True},
        {"model": "gpt-4o", "input_tokens": 10, "may_write_cache": 1},
        {"model": " gpt-4o", "input_tokens": 10},  # the serializer trims
        {"model": "gpt-4o", "input_tokens": 10, "environment": None},
        [{"model": "gpt-4o", "input_tokens": 10}],
    ],
)
def test_anything_else_is_left_to_the_serializer(body):
    assert preflight_input_fast(body) is None
