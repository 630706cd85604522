"""Exact cost arithmetic, with the rules providers bill by.

Prices are Decimal USD per 1M tokens with at most 6 decimal places, so one token costs a whole
number of pico-USD (price x 10^6). A record's cost is summed exactly in pico-USD with integers and
rounded once, half to even, to the stored nano-USD. No float ever touches money.

Billing rules a `PriceRow` carries (DESIGN.md section 4, issue 11):
- cache writes at two prices: 5-minute writes (`cache_write`) and 1-hour writes (`cache_write_1h`,
  Anthropic bills them at 2x input against 1.25x). `TokenBuckets.cache_write` counts every write and
  `cache_write_1h` the part of it written for one hour;
- a long-context rule: when the prompt (uncached + cache reads + cache writes) exceeds
  `long_context_threshold` tokens, the whole request is billed at the `long_context` rates;
- a service tier (batch, flex, priority) either has its own price row or is a multiplier of the
  standard row, held in per-mille so the arithmetic stays in integers;
- a channel (the provider's own API, Vertex, Bedrock, Azure) selects which rows apply (catalog.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import overload

NANOS_PER_USD = 10**9
_PICO_PER_USD_PER_MTOK = Decimal(10**6)  # USD per 1M tokens -> pico-USD per token
PERMILLE = 1000

STANDARD = "standard"
SERVICE_TIERS = (STANDARD, "batch", "flex", "priority")
API = "api"
CHANNELS = (API, "vertex", "bedrock", "azure")


@dataclass(frozen=True, slots=True)
class TokenBuckets:
    """Non-overlapping token counts of one call; `cache_write_1h` is the 1-hour part of `cache_write`."""

    input: int = 0
    cached_input: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0
    cache_write_1h: int = 0

    @property
    def total(self) -> int:
        return self.input + self.cached_input + self.cache_write + self.output + self.reasoning

    @property
    def prompt(self) -> int:
        """Every input token of the request: what a long-context threshold is compared with."""
        return self.input + self.cached_input + self.cache_write


@dataclass(frozen=True, slots=True)
class Rates:
    """Pico-USD per token for each bucket."""

    input: int
    cached_input: int
    cache_write: int
    cache_write_1h: int
    output: int
    reasoning: int


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
    cache_write_1h: int | None = None  # None: 1-hour writes cost what 5-minute writes cost
    channel: str = API
    service_tier: str = STANDARD
    long_context_threshold: int | None = None
    long_context: Rates | None = None
    # Per-mille multipliers this (standard) row gives other service tiers, e.g. (("batch", 500),).
    tier_multipliers: tuple[tuple[str, int], ...] = ()
    # Set when the row was derived from a standard row for another tier: 500 = half price.
    multiplier_permille: int = PERMILLE
    # Why this row applies when it is not the exact (channel, tier) row, e.g. "no vertex price: api".
    fallback: str = ""
    # The bucket rates below the long-context threshold, built once (ingest prices every record with them).
    base_rates: Rates | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.base_rates is None:
            rates = Rates(
                input=self.input,
                cached_input=self.cached_input,
                cache_write=self.cache_write,
                cache_write_1h=self.cache_write if self.cache_write_1h is None else self.cache_write_1h,
                output=self.output,
                reasoning=self.reasoning,
            )
            object.__setattr__(self, "base_rates", rates)

    @property
    def rates(self) -> Rates:
        assert self.base_rates is not None  # set by __post_init__
        return self.base_rates

    def multiplier_for(self, tier: str) -> int | None:
        return next((m for t, m in self.tier_multipliers if t == tier), None)

    def is_long_context(self, tokens: TokenBuckets) -> bool:
        return (
            self.long_context is not None
            and self.long_context_threshold is not None
            and (tokens.prompt > self.long_context_threshold)
        )

    def rates_for(self, tokens: TokenBuckets) -> Rates:
        if self.is_long_context(tokens):
            assert self.long_context is not None
            return self.long_context
        return self.rates

    def rule(self, tokens: TokenBuckets) -> str:
        """What priced `tokens`, short enough for a column: e.g. 'vertex batch x0.5 long>200000'."""
        parts = [] if self.channel == API else [self.channel]
        if self.service_tier != STANDARD:
            parts.append(self.service_tier)
        if self.multiplier_permille != PERMILLE:
            parts.append(f"x{Decimal(self.multiplier_permille) / PERMILLE:f}")
        if self.is_long_context(tokens):
            parts.append(f"long>{self.long_context_threshold}")
        if tokens.cache_write_1h:
            parts.append("1h-writes")
        if self.fallback:
            parts.append(f"({self.fallback})")
        return (" ".join(parts) or STANDARD)[:100]

    def derived(self, *, service_tier: str | None = None, multiplier_permille: int | None = None, fallback: str = ""):
        return dataclasses.replace(
            self,
            service_tier=self.service_tier if service_tier is None else service_tier,
            multiplier_permille=self.multiplier_permille if multiplier_permille is None else multiplier_permille,
            fallback=fallback or self.fallback,
        )

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
        cache_write_1h=None,
        channel: str = API,
        service_tier: str = STANDARD,
        long_context_threshold: int | None = None,
        long_context: dict | None = None,
        tier_multipliers: dict | None = None,
    ) -> PriceRow:
        out = usd_per_mtok_to_pico(output)
        lc = None
        if long_context_threshold is not None and long_context:
            # A long-context bucket left empty costs what it costs below the threshold.
            def pick(key, fallback):
                value = long_context.get(key)
                return fallback if value is None else usd_per_mtok_to_pico(value)

            lc_write = pick("cache_write", usd_per_mtok_to_pico(cache_write))
            lc_out = pick("output", out)
            lc = Rates(
                input=pick("input", usd_per_mtok_to_pico(input)),
                cached_input=pick("cached_input", usd_per_mtok_to_pico(cached_input)),
                cache_write=lc_write,
                cache_write_1h=pick(
                    "cache_write_1h", lc_write if cache_write_1h is None else usd_per_mtok_to_pico(cache_write_1h)
                ),
                output=lc_out,
                reasoning=pick("reasoning", lc_out if reasoning is None else usd_per_mtok_to_pico(reasoning)),
            )
        return cls(
            id=id,
            model_id=model_id,
            effective_from=effective_from,
            input=usd_per_mtok_to_pico(input),
            cached_input=usd_per_mtok_to_pico(cached_input),
            cache_write=usd_per_mtok_to_pico(cache_write),
            output=out,
            reasoning=usd_per_mtok_to_pico(output if reasoning is None else reasoning),
            cache_write_1h=None if cache_write_1h is None else usd_per_mtok_to_pico(cache_write_1h),
            channel=channel,
            service_tier=service_tier,
            long_context_threshold=long_context_threshold if lc is not None else None,
            long_context=lc,
            tier_multipliers=tuple(
                sorted((str(t), multiplier_to_permille(m)) for t, m in (tier_multipliers or {}).items())
            ),
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
            cache_write_1h=getattr(price, "cache_write_1h", None),
            channel=getattr(price, "channel", API) or API,
            service_tier=getattr(price, "service_tier", STANDARD) or STANDARD,
            long_context_threshold=getattr(price, "long_context_threshold", None),
            long_context={
                key: getattr(price, f"long_context_{key}", None)
                for key in ("input", "cached_input", "cache_write", "cache_write_1h", "output", "reasoning")
            },
            tier_multipliers=getattr(price, "tier_multipliers", None),
        )


def usd_per_mtok_to_pico(value) -> int:
    scaled = Decimal(value) * _PICO_PER_USD_PER_MTOK
    if scaled != scaled.to_integral_value():
        raise ValueError(f"Price {value} has more than 6 decimal places per 1M tokens.")
    return int(scaled)


def multiplier_to_permille(value) -> int:
    """'0.5' -> 500; a multiplier has at most 3 decimal places so that tier costs stay integers."""
    scaled = Decimal(str(value)) * PERMILLE
    if scaled != scaled.to_integral_value() or scaled < 0:
        raise ValueError(f"Multiplier {value} must be non-negative with at most 3 decimal places.")
    return int(scaled)


def cost_pico_per_mille(price: PriceRow, tokens: TokenBuckets) -> int:
    """The cost in pico-USD times 1000 (so a tier multiplier in per-mille stays exact)."""
    r = price.rates_for(tokens)
    five_minute_writes = tokens.cache_write - tokens.cache_write_1h
    pico = (
        tokens.input * r.input
        + tokens.cached_input * r.cached_input
        + five_minute_writes * r.cache_write
        + tokens.cache_write_1h * r.cache_write_1h
        + tokens.output * r.output
        + tokens.reasoning * r.reasoning
    )
    return pico * price.multiplier_permille


def worst_case_nanos(
    price: PriceRow, *, input_tokens: int, max_output_tokens: int, may_write_cache: bool = False
) -> int:
    """An upper bound of a call's cost before it runs (preflight's estimate).

    - Output is priced at the dearer of output and reasoning (reasoning counts against the output limit).
    - A call that may write cache has every input token priced at the dearest of input and the 5-minute
      and 1-hour write prices.
    - When input alone, or input plus output, can cross the long-context threshold, the premium
      prices bill the whole request.
    """

    def bound(r: Rates) -> int:
        per_input = max(r.input, r.cache_write, r.cache_write_1h) if may_write_cache else r.input
        return input_tokens * per_input + max_output_tokens * max(r.output, r.reasoning)

    pico = bound(price.rates)
    threshold = price.long_context_threshold
    if price.long_context is not None and threshold is not None and input_tokens + max_output_tokens > threshold:
        pico = max(pico, bound(price.long_context))
    return _round_half_even(pico * price.multiplier_permille, 1000 * PERMILLE)


def cost_pico(price: PriceRow, tokens: TokenBuckets) -> int:
    """Pico-USD, exact when no tier multiplier applies (otherwise truncated; use cost_nanos)."""
    return cost_pico_per_mille(price, tokens) // PERMILLE


def _round_half_even(value: int, divisor: int) -> int:
    q, r = divmod(value, divisor)
    if 2 * r > divisor or (2 * r == divisor and q % 2 == 1):
        q += 1
    return q


def pico_to_nanos(pico: int) -> int:
    """Round half to even from pico- to nano-USD, in integers."""
    return _round_half_even(pico, 1000)


def pico_per_mille_to_nanos(value: int) -> int:
    """Round half to even from thousandths of a pico-USD (cost_pico_per_mille's unit) to nano-USD."""
    return _round_half_even(value, 1000 * PERMILLE)


def cost_nanos(price: PriceRow, tokens: TokenBuckets) -> int:
    """Exact cost in nano-USD, rounded once half to even: cost_pico_per_mille's arithmetic, inlined
    because ingest calls it for every record."""
    r = price.base_rates
    threshold = price.long_context_threshold
    if (
        threshold is not None
        and price.long_context is not None
        and tokens.input + tokens.cached_input + tokens.cache_write > threshold
    ):
        r = price.long_context
    assert r is not None  # set by PriceRow.__post_init__
    pico = (
        tokens.input * r.input
        + tokens.cached_input * r.cached_input
        + tokens.cache_write * r.cache_write
        + tokens.output * r.output
        + tokens.reasoning * r.reasoning
    )
    if tokens.cache_write_1h:  # part of cache_write: add what a 1-hour write costs beyond a 5-minute one
        pico += tokens.cache_write_1h * (r.cache_write_1h - r.cache_write)
    multiplier = price.multiplier_permille
    if multiplier == PERMILLE:
        q, rem = divmod(pico, 1000)
        if rem > 500 or (rem == 500 and q & 1):
            q += 1
        return q
    return _round_half_even(pico * multiplier, 1000 * PERMILLE)


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
