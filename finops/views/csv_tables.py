"""The spend pages' tables as CSV rows: the same rows and columns the page shows, with exact values
(USD as decimal strings with nine places, whole token counts, ISO times in UTC)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from finops.models import UsageRecord
from finops.pricing import nanos_to_usd
from finops.selectors.dashboard import SpendRow

USAGE_COLUMNS = (
    "occurred_at", "tenant", "workflow", "model", "environment", "input_tokens", "cached_input_tokens",
    "output_tokens", "reasoning_tokens", "cost_usd", "priced", "request_id",
)  # fmt: skip
SPEND_COLUMNS = ("key", "name", "calls", "tokens", "cost_usd", "unpriced_calls", "share")


def usage_rows(records: Iterable[UsageRecord]) -> Iterator[list[Any]]:
    for r in records:
        yield [
            r.occurred_at.isoformat(),
            r.tenant.slug,
            r.workflow.slug if r.workflow_id and r.workflow else "",
            r.model_name,
            r.environment,
            r.input_tokens,
            r.cached_input_tokens,
            r.output_tokens,
            r.reasoning_tokens,
            nanos_to_usd(r.cost_nanos) if r.priced else "",
            "yes" if r.priced else "no",
            r.request_id,
        ]


def spend_rows(rows: Iterable[SpendRow]) -> Iterator[list[Any]]:
    for row in rows:
        priced = row.unpriced_calls != row.calls
        yield [
            "" if row.is_none else row.key,
            "(none)" if row.is_none else row.label,
            row.calls,
            row.tokens,
            nanos_to_usd(row.cost_nanos) if priced else "",
            row.unpriced_calls,
            f"{row.share:.4f}",
        ]
