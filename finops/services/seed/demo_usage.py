"""The demo's usage generator: how many calls each (tenant, workflow, hour) makes, and what each costs.

Deterministic: every (tenant, workflow, hour) draws from its own seeded random generator, so a rerun
produces the same request ids and content, and the unique (tenant, request_id) constraint turns it
into a no-op.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db.models import Max, Min

from finops.catalog import CatalogSnapshot, ModelEntry
from finops.models import UsageRecord, Workflow
from finops.pricing import TokenBuckets, cost_nanos
from finops.usage_identity import usage_content_hash
from tenants.models import Tenant

from .demo_specs import (
    BATCH_CURVE,
    DAY_CURVE,
    DEMO_REQUEST_PREFIX,
    ENVIRONMENT_CUM,
    ENVIRONMENTS,
    REASONING,
    SPIKE_TENANT,
    SPIKE_WORKFLOW,
    WEEKEND_FACTOR,
    TenantSpec,
    WorkflowSpec,
)


@dataclass
class Pair:
    tenant: Tenant
    spec: TenantSpec
    workflow: Workflow
    wf: WorkflowSpec
    api_key_id: int
    names: tuple[str, ...]
    cum_weights: tuple[float, ...]


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _draw(rng: random.Random, p50: int, p95: int) -> int:
    sigma = math.log(p95 / p50) / 1.645
    return max(1, min(int(p50 * math.exp(sigma * rng.gauss(0.0, 1.0))), p95 * 4))


def hours_to_fill(*, pairs: list[Pair], start: datetime, end: datetime) -> list[datetime]:
    """The hours in [start, end] not yet stored, nearest to the stored range first.

    Stored demo hours always form one run: hours are written outwards from it (backwards before
    the first stored hour, forwards after the last, from the last even when that is before `start`)
    and committed in that order, so an interrupted run leaves a contiguous range whose two edge
    hours may be partial; those are regenerated, and the unique request ids make their existing
    rows no-ops.
    """
    stored = UsageRecord.objects.filter(
        tenant__in={p.tenant.pk for p in pairs}, request_id__startswith=DEMO_REQUEST_PREFIX
    ).aggregate(lo=Min("occurred_at"), hi=Max("occurred_at"))
    if stored["lo"] is None:
        return _hour_range(start, end)
    lo = stored["lo"].astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hi = stored["hi"].astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    every = _hour_range(min(start, hi), end)
    backwards = [h for h in reversed(every) if h <= lo]
    forwards = [h for h in every if h >= hi and h > lo]
    return backwards + forwards


def _hour_range(start: datetime, end: datetime) -> list[datetime]:
    return [start + timedelta(hours=i) for i in range(int((end - start) / timedelta(hours=1)) + 1)]


def expected_calls(pair: Pair, hour: datetime, *, today: date, release_at: datetime) -> float:
    local = hour + timedelta(hours=pair.spec.utc_offset)
    if pair.wf.batch:
        share, weekday_factor = BATCH_CURVE[local.hour], 1.0
    else:
        share = DAY_CURVE[local.hour]
        weekday_factor = WEEKEND_FACTOR if local.weekday() >= 5 else 1.0
    # Slow organic growth: usage 75 days ago ran about 20% below today's.
    trend = max(0.5, 1.0 - 0.0025 * (today - hour.date()).days)
    lam = pair.wf.calls_per_day * pair.spec.scale * share * weekday_factor * trend
    if is_spiking(pair, hour, release_at):
        lam *= 3
    return lam


def is_spiking(pair: Pair, hour: datetime, release_at: datetime) -> bool:
    return pair.spec.slug == SPIKE_TENANT and pair.wf.slug == SPIKE_WORKFLOW and hour >= release_at


def seed_for(pair: Pair, hour: datetime) -> str:
    return f"{pair.spec.slug}|{pair.wf.slug}|{hour:%Y%m%d%H}"


def demo_record(
    pair: Pair,
    hour: datetime,
    i: int,
    rng: random.Random,
    resolved: dict[str, ModelEntry | None],
    catalog: CatalogSnapshot,
    flags: tuple[str, ...],
    spiking: bool,
) -> UsageRecord:
    # Every draw happens on every call, whatever the branch, so a call's values never depend on the
    # catalog's state (a model added later must not shift the random stream of the calls after it).
    model_name = pair.names[bisect_right(pair.cum_weights, rng.random() * pair.cum_weights[-1])]
    environment = ENVIRONMENTS[bisect_right(ENVIRONMENT_CUM, rng.random())]
    prompt = _draw(rng, pair.wf.input_p50, pair.wf.input_p95)
    output = _draw(rng, pair.wf.output_p50, pair.wf.output_p95) * (2 if spiking else 1)
    cache_roll, cache_share, write_roll, think = rng.random(), rng.uniform(0.35, 0.85), rng.random(), rng.random()
    occurred = hour + timedelta(microseconds=rng.randrange(3_600_000_000))
    received = occurred + timedelta(milliseconds=rng.randint(200, 6000))
    tags = {"feature_flag": flags[rng.randrange(len(flags))], "region": pair.spec.region}

    entry = resolved[model_name]
    cached = cache_write = reasoning = 0
    if entry is not None:
        if entry.context_window:
            prompt = min(prompt, entry.context_window * 8 // 10)
        if entry.max_output_tokens:
            output = min(output, entry.max_output_tokens)
        if cache_roll < pair.wf.cache_share:
            portion = int(prompt * cache_share)
            if entry.provider == "anthropic" and write_roll < 0.12:
                cache_write = portion  # Anthropic caches only what the client marks, paying for the write
            elif entry.provider != "openai" or prompt >= 1024:  # OpenAI caches prompts from 1,024 tokens
                cached = portion
        low_high = REASONING.get(entry.name)
        if low_high:
            reasoning = int(output * (low_high[0] + think * (low_high[1] - low_high[0])))
    tokens = TokenBuckets(
        input=prompt - cached - cache_write,
        cached_input=cached,
        cache_write=cache_write,
        output=output,
        reasoning=reasoning,
    )
    price = catalog.price_at(entry.id, occurred) if entry is not None else None
    return UsageRecord(
        tenant_id=pair.tenant.pk,
        workflow_id=pair.workflow.pk,
        model_id=entry.id if entry is not None else None,
        model_name=model_name,
        environment=environment,
        input_tokens=tokens.input,
        cached_input_tokens=tokens.cached_input,
        cache_write_tokens=tokens.cache_write,
        output_tokens=tokens.output,
        reasoning_tokens=tokens.reasoning,
        cost_nanos=cost_nanos(price, tokens) if price is not None else None,
        priced=price is not None,
        price_id=price.id if price is not None else None,
        occurred_at=occurred,
        received_at=received,
        request_id=f"{DEMO_REQUEST_PREFIX}{pair.spec.slug}-{pair.wf.slug}-{hour:%Y%m%d%H}-{i}",
        content_hash=usage_content_hash(
            workflow=pair.wf.slug,
            model_name=model_name,
            environment=environment,
            occurred_at=occurred,
            input_tokens=tokens.input,
            cached_input_tokens=tokens.cached_input,
            cache_write_tokens=tokens.cache_write,
            output_tokens=tokens.output,
            reasoning_tokens=tokens.reasoning,
            tags=tags,
        ),
        api_key_id=pair.api_key_id,
        tags=tags,
    )
