"""Anomaly detection and forecast quality, measured: what `docs/anomalies.md` reports.

Three parts, all with the product's own code and settings (`finops.anomalies.PRODUCT_SETTINGS`,
`finops.anomalies.new_names`, `budgets.forecasting.forecast_period_end`); no database:

1. Synthetic usage: 90 days x many tenants x workflows, hourly, with a daily and weekly rhythm, a
   time-zone shift per tenant, growth, day-level and hour-level noise, Poisson call counts, a tier
   mix, and one labelled incident on most series (sudden spike, slow drift, runaway loop, prompt
   bloat, tier shift, new expensive model). Every series is scored on the four metrics the hourly job
   scores (calls, cost, tokens per call, calls on a pricier tier than the usual one) plus the never-seen-model rule.
   `score_series` is causal (a point's result depends only on earlier points; a unit test and the
   check below prove it), so one pass over the whole series gives exactly the alerts the job would
   have raised running hour by hour. An alert is the first hour of an episode (or a new-model event);
   it detects an incident when it starts inside the incident. Delay = hours from the incident's first
   hour to the end of the hour that was flagged (1 = flagged in the incident's first hour, seen by the
   job minutes after that hour closed). False alerts are alerts starting outside every incident
   (and outside the 48 hours after one ends), per tenant-week of such clean time.
2. NAB `nyc_taxi` (../shared/anomaly-data): 30-minute counts summed to hourly points and scored as
   "calls per hour" with the calls settings. Windows hit, and false alert episodes per week.
3. Forecasts: the month-end total of each tenant's daily spend forecast at days 7, 14 and 21 of
   February and March, weekday-pattern forecast vs the linear run-rate; MAPE and p10-p90 coverage.

    .venv/bin/python bench/anomalies.py            # 40 tenants x 4 workflows, about a minute
    .venv/bin/python bench/anomalies.py --tenants 10 --seed 2
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from budgets.forecasting import forecast_period_end  # noqa: E402 - after the sys.path line above
from finops.anomalies import PRODUCT_SETTINGS, episodes, new_names, score_series  # noqa: E402

NAB_DIR = REPO.parent / "shared" / "anomaly-data" / "nab"
START = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday; 90 days = January to March
DAYS = 90
KINDS = ("spike", "slow_drift", "runaway_loop", "prompt_bloat", "tier_shift", "new_model")
# USD per million tokens (input, output) by tier
PRICES = {"economy": (0.15, 0.6), "standard": (2.5, 10.0), "premium": (15.0, 60.0)}
CLEAN_GRACE_HOURS = 48
LOUD_CALLS = 30


@dataclass
class Incident:
    kind: str
    start: int  # hour index
    end: int  # exclusive
    magnitude: float


@dataclass
class Series:
    tenant: int
    workflow: int
    calls: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    models: list[dict[str, float]] = field(default_factory=list)
    pricier: list[float] = field(default_factory=list)  # calls on a tier pricier than the main one
    incident: Incident | None = None


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _binomial(rng: random.Random, n: int, p: float) -> int:
    if n <= 0 or p <= 0:
        return 0
    if n > 40:
        return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))
    return sum(1 for _ in range(n) if rng.random() < p)


def _rhythm(hour_of_day: float, night: float) -> float:
    """Working-day curve: `night` at night, 1.0 mid-afternoon."""
    if 7 <= hour_of_day <= 21:
        return night + (1 - night) * math.sin(math.pi * (hour_of_day - 7) / 14) ** 1.5
    return night


def make_incident(rng: random.Random, kind: str) -> Incident:
    start = rng.randrange(35 * 24, 80 * 24)
    duration = {
        "spike": rng.randint(2, 6),
        "slow_drift": 7 * 24,
        "runaway_loop": rng.randint(6, 24),
        "prompt_bloat": rng.randint(24, 72),
        "tier_shift": rng.randint(24, 72),
        "new_model": rng.randint(24, 48),
    }[kind]
    magnitude = {
        "spike": rng.uniform(3, 6),
        "slow_drift": rng.uniform(2, 3),
        "runaway_loop": rng.uniform(2, 5),
        "prompt_bloat": rng.uniform(1.8, 3),
        "tier_shift": rng.uniform(0.4, 0.7),
        "new_model": 0.3,
    }[kind]
    return Incident(kind, start, start + duration, magnitude)


def synthesize(tenants: int, workflows: int, seed: int) -> list[Series]:
    rng = random.Random(seed)
    out: list[Series] = []
    kinds = [KINDS[i % len(KINDS)] for i in range(tenants * workflows)]
    rng.shuffle(kinds)
    n = 0
    for t in range(tenants):
        tz_shift = rng.uniform(-3, 8)
        growth = rng.uniform(0.0, 0.4)
        weekend = rng.uniform(0.25, 0.8)
        day_noise = [math.exp(rng.gauss(0, 0.08)) for _ in range(DAYS)]
        for w in range(workflows):
            peak = math.exp(rng.gauss(math.log(150), 1.0))
            night = rng.uniform(0.05, 0.35)
            in_tokens = math.exp(rng.gauss(math.log(1500), 0.8))
            out_tokens = math.exp(rng.gauss(math.log(300), 0.6))
            tier = rng.choice(["economy", "standard", "standard"])
            premium_share = rng.uniform(0.0, 0.15)
            models = {"economy": "mini-1", "standard": "std-2", "premium": "max-3"}
            s = Series(tenant=t, workflow=w)
            # three in four series get an incident, kinds balanced
            s.incident = make_incident(rng, kinds[n]) if n % 4 != 3 else None
            n += 1
            inc = s.incident
            for i in range(DAYS * 24):
                at = START + timedelta(hours=i)
                day = i // 24
                local = (at.hour + tz_shift) % 24
                wd_factor = weekend if at.weekday() >= 5 else 1.0
                rate = peak * _rhythm(local, night) * wd_factor * (1 + growth * i / (DAYS * 24)) * day_noise[day]
                rate *= math.exp(rng.gauss(0, 0.1))
                tokens_in, share = in_tokens, premium_share
                new_share = 0.0
                active = inc is not None and inc.start <= i < inc.end
                if active and inc is not None:
                    k = inc.kind
                    if k == "spike":
                        rate *= inc.magnitude
                    elif k == "slow_drift":
                        rate *= 1 + (inc.magnitude - 1) * min(1.0, (i - inc.start) / (5 * 24))
                    elif k == "runaway_loop":
                        rate += inc.magnitude * peak
                    elif k == "prompt_bloat":
                        tokens_in *= inc.magnitude
                    elif k == "tier_shift":
                        share = min(0.95, premium_share + inc.magnitude)
                    elif k == "new_model":
                        new_share = inc.magnitude
                calls = _poisson(rng, rate)
                n_new = _binomial(rng, calls, new_share)
                n_premium = _binomial(rng, calls - n_new, share)
                n_main = calls - n_new - n_premium
                per_call_cv = 0.7
                mean_in = tokens_in * (1 + rng.gauss(0, per_call_cv / math.sqrt(max(calls, 1))))
                mean_out = out_tokens * (1 + rng.gauss(0, per_call_cv / math.sqrt(max(calls, 1))))
                mean_in, mean_out = max(mean_in, 1.0), max(mean_out, 1.0)
                cost = 0.0
                for count, t_name in ((n_main, tier), (n_premium, "premium"), (n_new, "premium")):
                    p_in, p_out = PRICES[t_name]
                    if t_name == "premium" and count is n_new and n_new:
                        p_in, p_out = p_in * 2, p_out * 2  # the new model is pricier still
                    cost += count * (mean_in * p_in + mean_out * p_out) / 1e6
                s.calls.append(float(calls))
                s.cost.append(cost)
                s.tokens.append(calls * (mean_in + mean_out))
                hour_models = {models[tier]: float(n_main)}
                if n_premium:
                    hour_models[models["premium"]] = hour_models.get(models["premium"], 0.0) + n_premium
                if n_new:
                    hour_models["ultra-9"] = float(n_new)
                s.models.append(hour_models)
                s.pricier.append(float(n_premium + n_new))
            out.append(s)
    return out


def metric_series(s: Series) -> dict[str, tuple[list, list | None]]:
    """The four hourly metrics the job scores, as (points, volumes)."""
    hours = [START + timedelta(hours=i) for i in range(len(s.calls))]
    nan = float("nan")
    tpc = [(h, tok / c if c else nan) for h, tok, c in zip(hours, s.tokens, s.calls, strict=True)]
    return {
        "calls": (list(zip(hours, s.calls, strict=True)), None),
        "cost": (list(zip(hours, s.cost, strict=True)), s.calls),
        "tokens_per_call": (tpc, s.calls),
        "pricier_calls": (list(zip(hours, s.pricier, strict=True)), s.calls),
    }


def alerts_of(s: Series) -> list[tuple[int, str]]:
    """(hour index, metric) of every alert the job would have raised on this series."""
    out = []
    for name, (points, volumes) in metric_series(s).items():
        results = score_series(points, settings=PRODUCT_SETTINGS[name], volumes=volumes)
        for first, _ in episodes(results):
            out.append((int((first - START).total_seconds() // 3600), name))
    seen: set[str] = set()
    for i, hour_models in enumerate(s.models):
        fresh = new_names(seen, hour_models)
        if fresh and i >= 7 * 24:  # the job knows a tenant's models from before it started scoring
            out.append((i, "new_model"))
        seen.update(m for m, c in hour_models.items() if c)
    return sorted(out)


def check_causal(series: list[Series], rng: random.Random) -> int:
    """Score a few series again hour by hour (prefixes), as the job does, and compare."""
    checked = 0
    for s in rng.sample(series, min(3, len(series))):
        points, volumes = metric_series(s)["calls"]
        whole = score_series(points, settings=PRODUCT_SETTINGS["calls"])
        for k in rng.sample(range(8 * 24, len(points)), 20):
            assert score_series(points[: k + 1], settings=PRODUCT_SETTINGS["calls"])[-1] == whole[k]
            checked += 1
    return checked


def synthetic_quality(series: list[Series]) -> None:
    delays: dict[str, list[int]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    within2: dict[str, int] = defaultdict(int)
    loud: dict[str, int] = defaultdict(int)  # incidents whose first hour had at least 30 calls
    loud_within2: dict[str, int] = defaultdict(int)
    false_by_metric: dict[str, int] = defaultdict(int)
    busy_by_tenant: dict[int, set[int]] = defaultdict(set)
    alerts_by_tenant: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for s in series:
        alerts = alerts_of(s)
        alerts_by_tenant[s.tenant] += alerts
        inc = s.incident
        if inc is not None:
            counts[inc.kind] += 1
            is_loud = s.calls[inc.start] >= LOUD_CALLS
            loud[inc.kind] += is_loud
            hits = [i for i, _ in alerts if inc.start <= i < inc.end]
            if hits:
                delay = hits[0] - inc.start + 1
                delays[inc.kind].append(delay)
                within2[inc.kind] += delay <= 2
                loud_within2[inc.kind] += is_loud and delay <= 2
            busy_by_tenant[s.tenant].update(range(inc.start, inc.end + CLEAN_GRACE_HOURS))
    # Clean time of a tenant: scored hours when none of its workflows has an incident (or just had one).
    first_scored = 7 * 24
    clean_hours = 0
    false_alerts = 0
    for tenant, alerts in alerts_by_tenant.items():
        busy = busy_by_tenant[tenant]
        clean_hours += sum(1 for i in range(first_scored, DAYS * 24) if i not in busy)
        for i, metric in alerts:
            if i >= first_scored and i not in busy:
                false_alerts += 1
                false_by_metric[metric] += 1
    tenant_weeks = clean_hours / 168
    print(
        f"{'kind':<14}{'incidents':>10}{'recall':>8}{'recall<=2h':>12}{'median delay h':>16}"
        f"{'recall<=2h, >=30 calls/h at start':>36}"
    )
    for kind in KINDS:
        n = counts[kind]
        if not n:
            continue
        found = len(delays[kind])
        med = f"{median(delays[kind]):.1f}" if delays[kind] else "-"
        loud_recall = f"{loud_within2[kind] / loud[kind]:.2f} of {loud[kind]}" if loud[kind] else "-"
        print(f"{kind:<14}{n:>10}{found / n:>8.2f}{within2[kind] / n:>12.2f}{med:>16}{loud_recall:>36}")
    print(
        f"false alerts: {false_alerts} in {tenant_weeks:.0f} clean tenant-weeks = "
        f"{false_alerts / tenant_weeks:.3f} per tenant-week ({len(alerts_by_tenant)} tenants; by metric: "
        + ", ".join(f"{m} {n}" for m, n in sorted(false_by_metric.items()))
        + ")"
    )


def nab_quality() -> None:
    path = NAB_DIR / "nyc_taxi.csv"
    if not path.exists():
        print(f"NAB: {path} not found, skipped")
        return
    hourly: dict[datetime, float] = defaultdict(float)
    with path.open() as f:
        for row in csv.DictReader(f):
            at = datetime.fromisoformat(row["timestamp"]).replace(minute=0, second=0, tzinfo=UTC)
            hourly[at] += float(row["value"])
    hours = sorted(hourly)
    points = [(h, hourly[h]) for h in hours]
    results = score_series(points, settings=PRODUCT_SETTINGS["calls"])
    windows_raw = json.loads((NAB_DIR / "windows.json").read_text())["nyc_taxi.csv"]
    windows = [tuple(datetime.fromisoformat(x).replace(tzinfo=UTC) for x in w) for w in windows_raw]
    found = episodes(results)
    hit = 0
    for lo, hi in windows:
        starts = [a for a, b in found if lo <= a <= hi or (a < lo and b >= lo)]
        if starts:
            hit += 1
            first = min(max(a, lo) for a in starts)
            print(f"  window {lo:%Y-%m-%d %H:%M} .. {hi:%Y-%m-%d %H:%M}: hit, first alert {first:%Y-%m-%d %H:%M}")
        else:
            print(f"  window {lo:%Y-%m-%d %H:%M} .. {hi:%Y-%m-%d %H:%M}: missed")
    false = [a for a, b in found if not any(lo <= a <= hi or (a < lo and b >= lo) for lo, hi in windows)]
    scored_weeks = (len(points) - PRODUCT_SETTINGS["calls"].min_history_days * 24) / 168
    print(
        f"NAB nyc_taxi: {len(points)} hourly points, windows hit {hit}/{len(windows)}, "
        f"{len(false)} false episodes in {scored_weeks:.1f} weeks = {len(false) / scored_weeks:.2f} per week"
    )
    for a in false:
        print(f"  false episode starting {a:%Y-%m-%d %H:%M} ({a:%a})")


def forecast_quality(series: list[Series]) -> None:
    per_tenant: dict[int, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for s in series:
        for i, c in enumerate(s.cost):
            per_tenant[s.tenant][(START + timedelta(hours=i)).date()] += c
    months = [(date(2026, 2, 1), date(2026, 3, 1)), (date(2026, 3, 1), date(2026, 4, 1))]
    print(f"{'made on day':<12}{'weekday MAPE':>14}{'run-rate MAPE':>15}{'p10-p90 covers':>16}{'forecasts':>11}")
    for day in (7, 14, 21):
        ours, linear, inside, n = [], [], 0, 0
        for daily in per_tenant.values():
            for start, end in months:
                actual = sum(v for d, v in daily.items() if start <= d < end)
                today = start + timedelta(days=day)
                past = {d: v for d, v in daily.items() if d < today}
                f = forecast_period_end(daily=past, period_start=start, period_end=end, today=today)
                ours.append(abs(f.expected - actual) / actual)
                linear.append(abs(f.run_rate - actual) / actual)
                inside += f.p10 <= actual <= f.p90
                n += 1
        print(f"{day:<12}{100 * sum(ours) / n:>13.1f}%{100 * sum(linear) / n:>14.1f}%{100 * inside / n:>15.0f}%{n:>11}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=40)
    parser.add_argument("--workflows", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    t0 = time.perf_counter()
    series = synthesize(args.tenants, args.workflows, args.seed)
    print(
        f"synthetic: {args.tenants} tenants x {args.workflows} workflows, {DAYS} days hourly, seed {args.seed}, "
        f"{sum(1 for s in series if s.incident)} incidents; built in {time.perf_counter() - t0:.1f} s"
    )
    t1 = time.perf_counter()
    synthetic_quality(series)
    print(f"scored {len(series)} series x 4 metrics in {time.perf_counter() - t1:.1f} s")
    print(f"hour-by-hour check: {check_causal(series, random.Random(args.seed))} prefixes scored again, all equal")
    print()
    nab_quality()
    print()
    forecast_quality(series)


if __name__ == "__main__":
    main()
