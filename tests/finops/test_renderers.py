"""finops.renderers.OrjsonRenderer writes what DRF's JSONRenderer writes, byte for byte (preflight's answers
use it), and leaves to DRF's renderer what orjson would write differently."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.utils.translation import gettext_lazy
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.exceptions import ErrorDetail
from rest_framework.renderers import JSONRenderer

from finops.renderers import OrjsonRenderer

TIMES = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, ZoneInfo("UTC"), ZoneInfo("Europe/London"), ZoneInfo("Asia/Kolkata")]),
)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.text(),
    TIMES,
    st.uuids(),
)
DOCUMENTS = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(DOCUMENTS)
def test_the_same_bytes_as_drf(document):
    assert OrjsonRenderer().render(document) == JSONRenderer().render(document)


def test_a_preflight_answer_and_an_error_answer_render_as_drf_renders_them():
    answer = {
        "decision": "allow",
        "reservation_id": str(uuid.uuid4()),
        "reservation_expires_at": datetime(2026, 12, 6, 23, 25, 33, 699485, tzinfo=UTC),
        "budgets": [{"window_start": datetime(2026, 12, 1, tzinfo=timezone(timedelta(hours=1))), "remaining": 10**14}],
        "reasons": ["Compress the context to 1,250 input tokens: naïve \u2028 \u2029 <script>"],
        "input_safety_factor": None,
    }
    error = {"error": {"code": "invalid", "details": {"model": [ErrorDetail("This field is required.", "required")]}}}
    for document in (answer, error):
        assert OrjsonRenderer().render(document) == JSONRenderer().render(document)


def test_what_orjson_would_write_otherwise_is_left_to_drf():
    for document in ({"d": Decimal("1.5")}, {"lazy": gettext_lazy("Not found.")}, {"big": 2**70}, None):
        assert OrjsonRenderer().render(document) == JSONRenderer().render(document)
    indented = "application/json; indent=2"
    assert OrjsonRenderer().render({"a": 1}, indented) == JSONRenderer().render({"a": 1}, indented)
