"""Token envelopes from rollups: log-spaced histograms of tokens per call, kept in the daily rollup rows.

Each daily `UsageRollup` row carries `token_hist`: for every edge in `EDGES`, how many of its calls
sent fewer prompt tokens than the edge (`"in"`) and produced fewer output tokens (`"out"`); cumulative
counts, so the histograms of many rows (days, models, tenants) add up element by element and a
percentile needs no raw record: the first edge whose count reaches q x calls, interpolated
geometrically inside its half-octave: the answer lies in the right bucket, so it is off by at most a factor
of 1.41 (a point mass at a bucket edge), and by much less for spread-out values.

Prompt tokens = uncached input + cache reads + cache writes; output = visible output (reasoning is
billed as output but is not what a prompt change moves).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from django.db.models import Count, F, Q

# Half-octave edges from 8 to 2^19 (524,288) tokens: 33 edges.
EDGES: tuple[int, ...] = tuple(round(2 ** (k / 2)) for k in range(6, 39))
PROMPT_EXPR = F("input_tokens") + F("cached_input_tokens") + F("cache_write_tokens")
OUTPUT_EXPR = F("output_tokens") + 0  # its own name: the rollup's Sum("output_tokens") shadows the field


def hist_annotations() -> dict:
    """Per-edge cumulative counts, as aggregates over usage records annotated with `prompt_total` and
    `output_total` (PROMPT_EXPR, OUTPUT_EXPR)."""
    aggs = {}
    for i, edge in enumerate(EDGES):
        aggs[f"hin_{i}"] = Count("id", filter=Q(prompt_total__lt=edge))
        aggs[f"hout_{i}"] = Count("id", filter=Q(output_total__lt=edge))
    return aggs


def _hist_sql(column: str) -> str:
    return "jsonb_build_array(" + ", ".join(f"COUNT(*) FILTER (WHERE {column} < {e})" for e in EDGES) + ")"


# The same histogram as one PostgreSQL aggregate over raw records that carry `prompt_total` and
# `output_tokens` columns: the `token_hist` value itself, for `INSERT ... SELECT` (services/rollups.py).
HIST_SQL = f"jsonb_build_object('in', {_hist_sql('prompt_total')}, 'out', {_hist_sql('output_tokens')})"


def hist_pop(row: dict) -> dict:
    """Take the per-edge counts out of an aggregated row, as the `token_hist` value."""
    return {
        "in": [row.pop(f"hin_{i}") for i in range(len(EDGES))],
        "out": [row.pop(f"hout_{i}") for i in range(len(EDGES))],
    }


def hist_add(total: dict | None, hist: dict | None) -> dict | None:
    if not hist:
        return total
    if total is None:
        return {"in": list(hist["in"]), "out": list(hist["out"])}
    for key in ("in", "out"):
        total[key] = [a + b for a, b in zip(total[key], hist[key], strict=True)]
    return total


def percentile(cumulative: Sequence[int], calls: int, q: float) -> int | None:
    """The q-quantile (0..1) of tokens per call from cumulative counts below each edge."""
    if calls <= 0:
        return None
    target = q * calls
    previous_edge, previous_count = EDGES[0] / math.sqrt(2), 0
    for edge, count in zip(EDGES, cumulative, strict=True):
        if count >= target:
            inside = count - previous_count
            share = (target - previous_count) / inside if inside else 1.0
            return round(previous_edge * (edge / previous_edge) ** share)
        previous_edge, previous_count = edge, count
    return EDGES[-1]  # beyond the last edge: reported as the last edge
