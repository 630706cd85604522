"""What usage is measured in, written once: the token buckets, the sums every rollup row and spend
read carries, and the two metrics a budget counts.

The buckets do not overlap (DESIGN.md section 5), so a call's tokens are their plain sum. The rollup
tables hold exactly `MEASURES` as columns (`finops.models.RollupMeasures`), in this order.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import F, Sum
from django.db.models.expressions import Combinable

from finops.pricing import cost_per_priced_call

# Each token bucket's field (on usage records, rollup rows and `Measures`) and its label.
TOKEN_BUCKETS: tuple[tuple[str, str], ...] = (
    ("input_tokens", "Input"),
    ("cached_input_tokens", "Cached input"),
    ("cache_write_tokens", "Cache write"),
    ("output_tokens", "Output"),
    ("reasoning_tokens", "Reasoning"),
)
TOKEN_FIELDS: tuple[str, ...] = tuple(name for name, _ in TOKEN_BUCKETS)

# What a rollup row sums, in column order: calls, each token bucket, priced cost (nano-USD), unpriced calls.
MEASURES: tuple[str, ...] = ("calls", *TOKEN_FIELDS, "cost_nanos", "unpriced_calls")

# What a budget (or an exact spend read) counts: nano-USD of priced calls, or tokens of every bucket.
COST = "cost"
TOKENS = "tokens"
METRICS = (COST, TOKENS)


@dataclass
class Measures:
    """Usage summed over some calls: fields in `MEASURES` order. Unpriced calls carry no cost."""

    calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nanos: int = 0
    unpriced_calls: int = 0

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.cached_input_tokens
            + self.cache_write_tokens
            + self.output_tokens
            + self.reasoning_tokens
        )

    @property
    def prompt_tokens(self) -> int:
        """Everything sent: uncached, cache-read and cache-write input (what an input envelope counts)."""
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    @property
    def cost_per_call_nanos(self) -> int | None:
        return cost_per_priced_call(self.cost_nanos, self.calls, self.unpriced_calls)


def tokens_expression() -> Combinable:
    """A row's tokens over every bucket, for a query (`Sum(tokens_expression())`)."""
    total: Combinable = F(TOKEN_FIELDS[0])
    for name in TOKEN_FIELDS[1:]:
        total = total + F(name)
    return total


def metric_sum(metric: str) -> Sum:
    """The sum of `metric` over a queryset's rows (NULL when there are none; unpriced cost counts 0)."""
    if metric == TOKENS:
        return Sum(tokens_expression())
    if metric == COST:
        return Sum("cost_nanos")
    raise ValueError(f"Unknown metric {metric!r}; use one of {', '.join(METRICS)}.")
