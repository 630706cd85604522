"""Exact cost arithmetic.

Prices are Decimal USD per 1M tokens with at most 6 decimal places, so one token costs a whole
number of pico-USD (price x 10^6). A record's cost is summed exactly in pico-USD with integers and
rounded once, half to even, to the stored nano-USD. No float ever touches money.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import overload

NANOS_PER_USD = 10**9
_PICO_PER_USD_PER_MTOK = Decimal(10**6)  # USD per 1M tokens -> pico-USD per token


@dataclass(frozen=True, slots=True)
class TokenBuckets:
    """Non-overlapping token counts of one call."""

    input: int = 0
    cached_input: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0

    @property
    def total(self) -> int:
        return self.input + self.cached_input + self.cache_write + self.output + self.reasoning


@dataclass(frozen=True, slots=True)
class PriceRow:
    """A price in force from `effective_from`, held as integer pico-USD per token per bucket."""

    id: int
    model_id: int
    effective_from: datetime
    input: int
    cached_input: int
    cache_write: int
    output: int
    reasoning: int

    @classmethod
    def from_usd_per_mtok(
        cls,
        *,
        id: int,
        model_id: int,
        effective_from: datetime,
        input,
        cached_input,
        cache_write,
        output,
        reasoning=None,
    ) -> PriceRow:
        return cls(
            id=id,
            model_id=model_id,
            effective_from=effective_from,
            input=usd_per_mtok_to_pico(input),
            cached_input=usd_per_mtok_to_pico(cached_input),
            cache_write=usd_per_mtok_to_pico(cache_write),
            output=usd_per_mtok_to_pico(output),
            reasoning=usd_per_mtok_to_pico(output if reasoning is None else reasoning),
        )

    @classmethod
    def from_model_price(cls, price) -> PriceRow:
        return cls.from_usd_per_mtok(
            id=price.pk,
            model_id=price.model_id,
            effective_from=price.effective_from,
            input=price.input,
            cached_input=price.cached_input,
            cache_write=price.cache_write,
            output=price.output,
            reasoning=price.reasoning,
        )


def usd_per_mtok_to_pico(value) -> int:
    scaled = Decimal(value) * _PICO_PER_USD_PER_MTOK
    if scaled != scaled.to_integral_value():
        raise ValueError(f"Price {value} has more than 6 decimal places per 1M tokens.")
    return int(scaled)


def cost_pico(price: PriceRow, tokens: TokenBuckets) -> int:
    return (
        tokens.input * price.input
        + tokens.cached_input * price.cached_input
        + tokens.cache_write * price.cache_write
        + tokens.output * price.output
        + tokens.reasoning * price.reasoning
    )


def pico_to_nanos(pico: int) -> int:
    """Round half to even from pico- to nano-USD, in integers."""
    q, r = divmod(pico, 1000)
    if r > 500 or (r == 500 and q % 2 == 1):
        q += 1
    return q


def cost_nanos(price: PriceRow, tokens: TokenBuckets) -> int:
    return pico_to_nanos(cost_pico(price, tokens))


@overload
def nanos_to_usd(nanos: int) -> str: ...
@overload
def nanos_to_usd(nanos: None) -> None: ...
@overload
def nanos_to_usd(nanos: int | None) -> str | None: ...
def nanos_to_usd(nanos: int | None) -> str | None:
    """Decimal string in USD with nine places, e.g. 1234 -> '0.000001234'."""
    if nanos is None:
        return None
    # Integer formatting: exact like Decimal, and several times faster on 1,000-item responses.
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), NANOS_PER_USD)
    return f"{sign}{whole}.{frac:09d}"


def nanos_to_decimal(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-9)


def cost_per_priced_call(cost_nanos: int, calls: int, unpriced_calls: int) -> int | None:
    """Average nano-USD per priced call (unpriced calls carry no cost); None when none is priced."""
    priced = calls - unpriced_calls
    return cost_nanos // priced if priced > 0 else None
