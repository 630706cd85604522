"""A demo that lives: usage keeps arriving through the real ingest API while `make run` runs, with a
scripted incident every so often, and what the demo expects a budget window to cost.

- Normal traffic follows the seeded data set's own model (finops/services/seed/demo_usage.py): every
  (tenant, workflow) pair calls at its daily rhythm (business-day curve in the tenant's time zone,
  quieter weekends, nightly batches), priced by the catalog the ingest API prices with. Each tick
  sends what `interval` seconds of that rhythm produce (times DEMO_TRAFFIC_SPEED), and a quiet minute
  still gets one call, so the overview's "today" moves every minute even at night.
- Every `incident_every` seconds an incident runs for `incident_seconds`, alternating:
  a *runaway loop* (an agent on Northwind's SQL copilot re-sends its growing conversation many times a
  second, three normal days of Northwind's spend in a couple of minutes: its daily budget crosses its
  hard limit, the ladder reacts and alerts are raised), and a *growing prompt* (Initech's chat
  assistant's prompt grows with every call).
- `demo_expected_spend` is what a scope is expected to spend over a whole budget window at the normal
  rhythm; the demo budgets are sized from it, so the budgets page makes sense at any hour.

The records go out as JSON for `POST /api/v1/usage` (a platform key names each record's tenant), so
they take exactly the path a real service's do. Request ids start with the demo prefix, so a later
`seed_demo` continues after them instead of generating the same hours again.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

from django.db.models import Avg, F

from finops.catalog import get_catalog
from finops.measures import TOKEN_FIELDS
from finops.models import UsageRecord, Workflow
from finops.pricing import TokenBuckets, cost_nanos
from tenants.errors import ApplicationError
from tenants.models import ApiKey, Tenant

from .demo_specs import (
    DEMO_API_KEY,
    DEMO_PLATFORM_KEY,
    DEMO_REQUEST_PREFIX,
    DEMO_TENANT_SLUG,
    RELEASE_DAYS_AGO,
    TENANTS,
    WORKFLOWS,
)
from .demo_usage import Pair, demo_record, expected_calls, is_spiking, poisson

LIVE_PREFIX = f"{DEMO_REQUEST_PREFIX}live-"
RUNAWAY_TENANT, RUNAWAY_WORKFLOW, RUNAWAY_MODEL = DEMO_TENANT_SLUG, "sql-copilot", "gpt-4.1"
PROMPT_TENANT, PROMPT_WORKFLOW = "initech", "chat-assistant"
# What a runaway loop costs, in days of its tenant's spend (the release included): past the spiking
# tenant's daily hard limit (at most 1.25 such days, budgets/services/demo.py) from any point of its day.
RUNAWAY_SHARE_OF_DAY = 3.0
MAX_CALLS_PER_TICK = 400
HEARTBEAT_SECONDS = 55.0  # a quiet minute still gets one call
NO_RELEASE = datetime.max.replace(tzinfo=UTC)  # expected_calls without the spiking release


def demo_pairs() -> list[Pair]:
    """The seeded (tenant, workflow) pairs, read from the database (nothing is created)."""
    tenants = {t.slug: t for t in Tenant.objects.filter(slug__in=[s.slug for s in TENANTS])}
    workflows = {w.slug: w for w in Workflow.objects.filter(slug__in=[w.slug for w in WORKFLOWS])}
    keys = dict(
        ApiKey.objects.filter(prefix__in=[k.split("_")[1] for k in (DEMO_API_KEY, DEMO_PLATFORM_KEY)]).values_list(
            "prefix", "pk"
        )
    )
    if len(tenants) < len(TENANTS) or len(keys) < 2:
        raise ApplicationError("demo_not_seeded", "Load the demo data set first (manage.py seed_demo).")
    tenant_key, platform_key = keys[DEMO_API_KEY.split("_")[1]], keys[DEMO_PLATFORM_KEY.split("_")[1]]
    pairs = []
    for spec in TENANTS:
        for slug in spec.workflows:
            wf = next(w for w in WORKFLOWS if w.slug == slug)
            choices = spec.models.get(slug, wf.models)
            pairs.append(
                Pair(
                    tenant=tenants[spec.slug],
                    spec=spec,
                    workflow=workflows[slug],
                    wf=wf,
                    api_key_id=tenant_key if spec.slug == DEMO_TENANT_SLUG else platform_key,
                    names=tuple(name for name, _ in choices),
                    cum_weights=tuple(accumulate(weight for _, weight in choices)),
                )
            )
    return pairs


def release_at(now: datetime) -> datetime:
    """When the spiking tenant's release happened, as the seed places it."""
    return datetime.combine(now.date() - timedelta(days=RELEASE_DAYS_AGO), datetime.min.time(), tzinfo=UTC)


# --- what a window is expected to cost ---------------------------------------------------------------


def _per_call(pairs: Iterable[Pair], *, metric: str, since: datetime) -> dict[tuple[int, int], float]:
    """Mean cost (nano-USD) or tokens of one call of each pair, from its stored usage."""
    measure = F("cost_nanos") if metric == "cost" else sum((F(f) for f in TOKEN_FIELDS[1:]), F(TOKEN_FIELDS[0]))
    rows = (
        UsageRecord.objects.filter(
            tenant__in={p.tenant.pk for p in pairs}, occurred_at__gte=since, priced=True, workflow__isnull=False
        )
        .exclude(tags__has_key="incident")  # the scripted incidents are not the normal rhythm
        .values("tenant_id", "workflow_id")
        .annotate(mean=Avg(measure))
        .order_by()
    )
    return {(r["tenant_id"], r["workflow_id"]): float(r["mean"] or 0) for r in rows}


def demo_expected_spend(
    *,
    start: datetime,
    end: datetime,
    metric: str = "cost",
    tenant_id: int | None = None,
    workflow_id: int | None = None,
    now: datetime | None = None,
    pairs: list[Pair] | None = None,
    with_release: bool = False,
) -> int:
    """What the demo's normal rhythm (no release spike, no incident) spends in [start, end) within the
    scope (a tenant, a workflow, or both; None: all), in nano-USD or tokens. `with_release`: the rhythm
    the seeded and live traffic actually follow, the spiking tenant's release included."""
    now = now or datetime.now(UTC)
    released = release_at(now) if with_release else NO_RELEASE
    pairs = [
        p
        for p in (pairs if pairs is not None else demo_pairs())
        if (tenant_id is None or p.tenant.pk == tenant_id) and (workflow_id is None or p.workflow.pk == workflow_id)
    ]
    if not pairs:
        return 0
    per_call = _per_call(pairs, metric=metric, since=now - timedelta(days=7))
    total = 0.0
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour < end:
        # The part of this hour inside the window (the window may start or end mid-hour).
        inside = (min(end, hour + timedelta(hours=1)) - max(start, hour)) / timedelta(hours=1)
        for pair in pairs:
            mean = per_call.get((pair.tenant.pk, pair.workflow.pk), 0.0)
            if mean:
                total += expected_calls(pair, hour, today=now.date(), release_at=released) * mean * inside
        hour += timedelta(hours=1)
    return int(total)


# --- live traffic ------------------------------------------------------------------------------------


@dataclass
class DemoTraffic:
    """Builds each tick's records. `started_at` anchors the incident schedule: the first incident starts
    `first_incident_after` seconds after it, then one every `incident_every` seconds."""

    pairs: list[Pair]
    interval: float = 5.0
    speed: float = 1.0
    incident_every: float = 600.0
    incident_seconds: float = 120.0
    first_incident_after: float = 60.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.catalog = get_catalog()
        self.resolved = {name: self.catalog.resolve(name) for pair in self.pairs for name in pair.names}
        self._day_expected: dict = {}
        self._last_call_at: datetime | None = None

    # -- the incident schedule ------------------------------------------------------------------------

    def incident(self, now: datetime) -> tuple[str, float] | None:
        """("runaway" | "prompt_growth", seconds into it) while one runs, else None."""
        since = (now - self.started_at).total_seconds() - self.first_incident_after
        if since < 0 or self.incident_every <= 0:
            return None
        number, into = divmod(since, self.incident_every)
        if into >= self.incident_seconds:
            return None
        return ("runaway" if int(number) % 2 == 0 else "prompt_growth"), into

    # -- one tick -------------------------------------------------------------------------------------

    def batch(self, now: datetime) -> list[dict[str, Any]]:
        hour = now.replace(minute=0, second=0, microsecond=0)
        released = release_at(now)
        records: list[dict[str, Any]] = []
        incident = self.incident(now)
        rates = [expected_calls(pair, hour, today=now.date(), release_at=released) for pair in self.pairs]
        counts = [poisson(self.rng, lam * self.interval / 3600 * self.speed) for lam in rates]
        quiet = self._last_call_at is None or (now - self._last_call_at).total_seconds() >= HEARTBEAT_SECONDS
        if not any(counts) and quiet and sum(rates) > 0:
            # At least one call a minute, from a pair drawn by its rate: the overview moves even at night.
            counts[self.rng.choices(range(len(self.pairs)), weights=rates)[0]] = 1
        for pair, n in zip(self.pairs, counts, strict=True):
            spiking = is_spiking(pair, hour, released)
            flags = (pair.wf.flags_after_release or pair.wf.flags) if hour >= released else pair.wf.flags
            growth = (
                incident is not None
                and incident[0] == "prompt_growth"
                and self._is(pair, PROMPT_TENANT, PROMPT_WORKFLOW)
            )
            if growth:
                n = max(n, 1)
            for i in range(n):
                row = demo_record(pair, hour, i, self.rng, self.resolved, self.catalog, flags, spiking)
                record = self._as_api(pair, row, now)
                if growth:
                    assert incident is not None
                    factor = 1 + incident[1] / self.incident_seconds * 3  # up to 4x the prompt by the end
                    record["input_tokens"] = int(record["input_tokens"] * factor)
                    record["tags"] = {**record["tags"], "incident": "prompt-growth"}
                records.append(record)
        if incident is not None and incident[0] == "runaway":
            records += self._runaway(now, incident[1])
        if records:
            self._last_call_at = now
        return records

    @staticmethod
    def _is(pair: Pair, tenant: str, workflow: str) -> bool:
        return pair.spec.slug == tenant and pair.wf.slug == workflow

    def _as_api(self, pair: Pair, row: UsageRecord, now: datetime) -> dict[str, Any]:
        occurred = now - timedelta(milliseconds=self.rng.randint(50, int(self.interval * 1000)))
        return {
            "tenant": pair.spec.slug,
            "request_id": f"{LIVE_PREFIX}{uuid.uuid4().hex}",
            "workflow": pair.wf.slug,
            "model": row.model_name,
            "environment": row.environment,
            "occurred_at": occurred.isoformat(),
            **{f: getattr(row, f) for f in TOKEN_FIELDS},
            "tags": dict(row.tags),
        }

    def _runaway(self, now: datetime, into: float) -> list[dict[str, Any]]:
        """An agent loop: the same task re-sent with its whole, growing conversation, many times a tick,
        sized so the whole incident costs RUNAWAY_SHARE_OF_DAY normal days of the tenant's spend."""
        pair = next((p for p in self.pairs if self._is(p, RUNAWAY_TENANT, RUNAWAY_WORKFLOW)), None)
        entry = self.catalog.resolve(RUNAWAY_MODEL)
        if pair is None or entry is None:
            return []
        price = self.catalog.price_at(entry.id, now)
        if price is None:
            return []
        day = self._day_expected.get(now.date())
        if day is None:  # once a day: one query and a day of hours
            # Its day as it runs, the release included: what the daily hard limit leaves room for.
            day = demo_expected_spend(
                start=now - timedelta(days=1),
                end=now,
                tenant_id=pair.tenant.pk,
                now=now,
                pairs=self.pairs,
                with_release=True,
            )
            self._day_expected = {now.date(): day}
        ticks = max(1.0, self.incident_seconds / self.interval)
        budget = RUNAWAY_SHARE_OF_DAY * max(day, 10_000_000) / ticks
        step = int(into / self.interval)
        records: list[dict[str, Any]] = []
        spent = 0
        while spent < budget and len(records) < MAX_CALLS_PER_TICK:
            turn = step * 20 + len(records)
            prompt = min(12_000 + 900 * turn, (entry.context_window or 128_000) * 8 // 10)
            tokens = TokenBuckets(input=prompt, output=350)
            spent += cost_nanos(price, tokens)
            records.append(
                {
                    "tenant": pair.spec.slug,
                    "request_id": f"{LIVE_PREFIX}{uuid.uuid4().hex}",
                    "workflow": pair.wf.slug,
                    "model": RUNAWAY_MODEL,
                    "environment": "prod",
                    "occurred_at": (now - timedelta(milliseconds=self.rng.randint(1, 999))).isoformat(),
                    "input_tokens": tokens.input,
                    "output_tokens": tokens.output,
                    "tags": {"feature_flag": "agent_loop", "region": pair.spec.region, "incident": "runaway-loop"},
                }
            )
        return records


def incident_name(kind: str) -> str:
    return {
        "runaway": f"a runaway agent loop on {RUNAWAY_TENANT}'s {RUNAWAY_WORKFLOW}",
        "prompt_growth": f"a growing prompt on {PROMPT_TENANT}'s {PROMPT_WORKFLOW}",
    }[kind]


def ticks_between(start: datetime, end: datetime, interval: float) -> list[datetime]:
    """The tick times from start to end (tests replay a stretch of the demo without waiting)."""
    count = int(math.floor((end - start).total_seconds() / interval))
    return [start + timedelta(seconds=interval * i) for i in range(count + 1)]
