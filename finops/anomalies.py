"""Anomaly scoring: one pure function over an hourly series, no database (DESIGN.md 4, issue 10).

`score_series(points)` takes an hourly series `[(datetime, float), ...]` (one point per hour, in
order; the caller fills hours without usage with 0) and returns one `ScoredPoint` per point with the
expected value, the band, a robust score and whether the point is anomalous. The hourly anomaly job
(`budgets.services.anomalies`) and `bench/anomalies.py` both call it with `PRODUCT_SETTINGS`.

How the expected value is formed, for the point at hour t:

- Seasonal, hour-of-day x weekday. The candidates are the values at the same hour on earlier days of
  the same day type (weekdays for a weekday, weekend days for a weekend day) within `history_days`,
  each scaled by the ratio of the weekday levels (a Monday's 10:00 seen from a Friday's 10:00 is
  multiplied by Monday's level / Friday's level, where a weekday's level is the median daily mean of
  that weekday in the history). The same weekday a week earlier has ratio 1: the hour-of-week value.
  With three or more weeks of history (`history_days` >= 21), the same weekday's values alone are used
  once there are `min_same_weekday` of them: a Friday night is not a Tuesday night.
- Robust: the expected value is the median of the candidates. The spread is the expected value times
  1.4826 x the median relative deviation of the series' own recent unflagged hours from what was
  expected of them (`spread_hours`), floored at `rel_floor` x expected and at `abs_floor`; for counts
  at least sqrt(expected) (Poisson), and for means over `volumes` items scaled by 1/sqrt(volume).
- It does not learn an incident. The history is a *cleaned* copy of the series: a point that was
  flagged (or that the caller excludes, e.g. a period people marked as planned or a false alarm) is
  replaced by its expected value before later points look at it. Only the first `relearn_after_hours`
  of an episode are replaced: a level that stays up for days is then learned as the new normal, so a
  lasting legitimate change stops alerting on its own.

The score is (value - expected) / spread. Hysteresis: an episode opens when the score reaches
`open_z`, the value is at least `min_rel_change` above the expected value and the point's volume
reaches `min_volume`; it stays open until the score has been below `clear_z` for `clear_hours`
consecutive hours. `is_anomaly` is true for every point of an open episode.

The function is causal: a point's result depends only on the points before and at it, so scoring the
whole series at once gives the same results as scoring it again each hour as the job does
(`tests/finops/test_anomaly_scoring.py` checks this).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from statistics import median

_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class ScoreSettings:
    # How far back candidates are taken: the hourly rollups' retention (ROLLUP_HOURLY_RETENTION_DAYS,
    # 14 by default) is all the history the job has, so the bench uses no more.
    history_days: int = 14
    min_history_days: int = 7  # no score before this much history (the point is still learned)
    open_z: float = 5.0  # score that opens an episode
    clear_z: float = 2.5  # score under which an open episode counts hours towards clearing
    clear_hours: int = 2  # consecutive in-range hours that clear an episode
    min_rel_change: float = 0.5  # value must be at least this share above expected to open
    rel_floor: float = 0.08  # spread is at least this share of the expected value
    abs_floor: float = 1.0  # spread is at least this, in the series' unit
    min_volume: float = 20.0  # volume (the value itself unless `volumes` is given) needed to open
    relearn_after_hours: int = 72  # episode hours beyond this are learned as normal
    detect_drops: bool = False  # also open episodes on values far *below* expected
    min_same_weekday: int = 3  # same-weekday candidates needed to use them alone (history_days >= 21)
    spread_hours: int = 168  # recent hours whose relative residuals give the spread
    counts: bool = False  # the value is a count: the spread is at least poisson_k x sqrt(expected)
    poisson_k: float = 1.0
    mean_of_volume: bool = False  # the value is a mean over `volumes` items: its noise shrinks with sqrt(volume)


# The settings the product uses, per metric of a tenant x workflow hourly series. The bench uses them.
PRODUCT_SETTINGS: dict[str, ScoreSettings] = {
    # Calls per hour: runaway loops and volume spikes. Volume gate in calls.
    "calls": ScoreSettings(abs_floor=3.0, min_volume=30.0, counts=True),
    # Spend per hour in USD: spikes. Volume gate: calls in the hour (passed as `volumes`). Spend is
    # heavy-tailed (a few calls on a premium model move it), so it opens only on a doubling.
    "cost": ScoreSettings(open_z=6.0, min_rel_change=1.0, abs_floor=0.05, min_volume=30.0),
    # Input + output tokens per call: prompt bloat. A per-call mean is steadier than a sum.
    "tokens_per_call": ScoreSettings(
        rel_floor=0.05, abs_floor=20.0, min_volume=15.0, min_rel_change=0.3, mean_of_volume=True
    ),
    # Calls on a tier pricier than the workflow's usual one: a model mix moving up. A count, gated by
    # the hour's calls.
    "pricier_calls": ScoreSettings(abs_floor=2.0, min_volume=15.0, counts=True),
}


@dataclass(frozen=True)
class ScoredPoint:
    at: datetime
    value: float | None
    expected: float | None  # None while there is too little history
    low: float | None  # expected -/+ open_z x spread: outside it a point can open an episode
    high: float | None
    score: float | None
    is_anomaly: bool
    episode_start: datetime | None = None  # first hour of the open episode this point belongs to


def _missing(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def score_series(
    points: Sequence[tuple[datetime, float | None]],
    *,
    settings: ScoreSettings | None = None,
    volumes: Sequence[float] | None = None,
    exclude: Iterable[datetime] = (),
) -> list[ScoredPoint]:
    """Score an hourly series. A value of None or NaN is an hour without an observation (e.g. tokens
    per call in an hour with no calls): it is neither scored nor learned. `volumes` (same length) gates
    opening by `min_volume` when the value is a ratio. Hours in `exclude` are not flagged and not
    learned."""
    s = settings or ScoreSettings()
    if volumes is not None and len(volumes) != len(points):
        raise ValueError("volumes must have one entry per point")
    excluded = set(exclude)
    n = len(points)
    if n == 0:
        return []
    t0 = points[0][0]
    for i in range(1, n):
        if points[i][0] - points[i - 1][0] != timedelta(hours=1):
            raise ValueError(f"points must be consecutive hours (gap or disorder at {points[i][0].isoformat()})")

    clean: list[float | None] = [None] * n  # the history later points learn from
    day_sum: dict[int, float] = {}  # day index -> sum / count of clean values (for weekday levels)
    day_cnt: dict[int, int] = {}
    # Offset of the first point's hour within its day, so day indexes follow calendar days.
    first_hour = t0.hour
    results: list[ScoredPoint] = []
    open_start: datetime | None = None
    open_len = 0
    below = 0
    level_cache: dict[int, dict[int, float]] = {}
    residuals: list[float] = []  # |value / expected - 1| of recent unflagged hours

    def levels_for(day: int) -> dict[int, float]:
        # Median daily mean per weekday over complete earlier days of the history window.
        if day in level_cache:
            return level_cache[day]
        per_wd: dict[int, list[float]] = {}
        for d in range(max(0, day - s.history_days), day):
            if day_cnt.get(d, 0) >= 12:
                wd = (t0 + timedelta(hours=d * 24 - first_hour)).weekday()
                per_wd.setdefault(wd, []).append(day_sum[d] / day_cnt[d])
        out = {wd: median(vs) for wd, vs in per_wd.items()}
        level_cache[day] = out
        return out

    for i, (at, raw) in enumerate(points):
        value = None if _missing(raw) else float(raw)  # type: ignore[arg-type]
        day = (i + first_hour) // 24
        expected = spread = None
        if i >= s.min_history_days * 24:
            weekday = at.weekday()
            weekend = weekday >= 5
            levels = levels_for(day)
            here = levels.get(weekday)
            same_weekday: list[float] = []
            candidates: list[float] = []
            for j in range(1, s.history_days + 1):
                k = i - 24 * j
                if k < 0:
                    break
                past = clean[k]
                if past is None:
                    continue
                past_wd = points[k][0].weekday()
                if past_wd == weekday:
                    same_weekday.append(past)
                if (past_wd >= 5) != weekend:
                    continue
                there = levels.get(past_wd)
                if here and there and past_wd != weekday:
                    past = past * here / there
                candidates.append(past)
            # The same hour of the same weekday carries the hour-of-week shape (a Friday night is not a
            # Tuesday night); other days of the same type stand in while there are fewer than three.
            basis = same_weekday if len(same_weekday) >= s.min_same_weekday else candidates
            if len(basis) >= 2:
                expected = median(basis)
                recent = residuals[-s.spread_hours :]
                rel_spread = _MAD_TO_SIGMA * median(recent) if len(recent) >= 24 else s.rel_floor * 2
                if s.mean_of_volume and volumes is not None:
                    rel_spread /= math.sqrt(max(float(volumes[i] or 0), 1.0))
                spread = max(rel_spread * abs(expected), s.rel_floor * abs(expected), s.abs_floor)
                if s.counts:
                    spread = max(spread, s.poisson_k * math.sqrt(max(expected, 0.0)))

        score = None
        if expected is not None and spread is not None and value is not None:
            score = (value - expected) / spread

        is_anomaly = False
        if at in excluded:
            open_start, open_len, below = None, 0, 0
        elif score is not None and value is not None and expected is not None:
            volume = value if volumes is None else float(volumes[i] or 0)
            if open_start is None:
                up = score >= s.open_z and value >= expected * (1 + s.min_rel_change)
                down = (
                    s.detect_drops
                    and score <= -s.open_z
                    and value <= expected * (1 - s.min_rel_change)
                    and (expected if volumes is None else volume) >= s.min_volume
                )
                if (up and volume >= s.min_volume) or down:
                    open_start, open_len, below = at, 0, 0
            else:
                below = below + 1 if abs(score) < s.clear_z else 0
                if below >= s.clear_hours:
                    open_start, open_len, below = None, 0, 0
            if open_start is not None:
                is_anomaly = True
                open_len += 1

        # What later points learn: the expected value in place of a flagged or excluded hour.
        learned = value
        if (at in excluded or (is_anomaly and open_len <= s.relearn_after_hours)) and expected is not None:
            learned = expected if value is not None else None
        elif at in excluded:
            learned = None
        clean[i] = learned
        if not is_anomaly and at not in excluded and value is not None and expected:
            residual = abs(value / expected - 1)
            if s.mean_of_volume and volumes is not None:
                residual *= math.sqrt(max(float(volumes[i] or 0), 1.0))
            residuals.append(residual)
            if len(residuals) > 4 * s.spread_hours:
                del residuals[: -s.spread_hours]
        if learned is not None:
            day_sum[day] = day_sum.get(day, 0.0) + learned
            day_cnt[day] = day_cnt.get(day, 0) + 1

        low = high = None
        if expected is not None and spread is not None:
            low, high = max(expected - s.open_z * spread, 0.0), expected + s.open_z * spread
        results.append(
            ScoredPoint(
                at=at,
                value=value,
                expected=expected,
                low=low,
                high=high,
                score=score,
                is_anomaly=is_anomaly,
                episode_start=open_start if is_anomaly else None,
            )
        )
    return results


def episodes(results: Sequence[ScoredPoint]) -> list[tuple[datetime, datetime]]:
    """(first hour, last hour) of each run of anomalous points."""
    out: list[tuple[datetime, datetime]] = []
    start = prev = None
    for r in results:
        if r.is_anomaly:
            if start is None:
                start = r.at
            prev = r.at
        elif start is not None and prev is not None:
            out.append((start, prev))
            start = prev = None
    if start is not None and prev is not None:
        out.append((start, prev))
    return out


def with_settings(name: str, **overrides) -> ScoreSettings:
    """The product's settings for one metric, optionally with a field changed (tests, what-ifs)."""
    return replace(PRODUCT_SETTINGS[name], **overrides)


# A model (or workflow) never seen before for a tenant opens an anomaly once it has this many calls in
# an hour: one stray test call is not an incident.
NEW_NAME_MIN_CALLS = 5


def new_names(seen: Iterable[str], hour_calls: dict[str, float]) -> list[str]:
    """Names with at least NEW_NAME_MIN_CALLS calls this hour that are not in `seen`, sorted."""
    known = set(seen)
    return sorted(name for name, calls in hour_calls.items() if name not in known and calls >= NEW_NAME_MIN_CALLS)
