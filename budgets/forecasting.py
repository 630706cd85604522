"""Period-end forecasts with the weekday pattern and a p10-p90 range: a pure function over daily totals.

`forecast_period_end` answers "where will this window end?" from the amounts spent per day before it
and so far in it. The linear run-rate (spent / elapsed x period, what the ladder's forecast rung used
alone) over-forecasts a month that started on busy weekdays and under-forecasts one that started on a
weekend. Here the days left are forecast one by one:

    expected(day) = level x factor(weekday(day))

- `factor` is the median daily amount of that weekday over the last `pattern_days` divided by the
  median over all days (1.0 everywhere when there is less than two weeks of history);
- `level` is the median of amount / factor over the last `level_days`: robust to one odd day;
- today counts for the share of the day still ahead.

The range comes from the spread of the past days around that model: with s the standard deviation
of log(actual / expected) over the level days, the days left vary independently around a level
that can itself move by s for all the days left (growth, a new customer, an incident: days are
not independent), and p10 / p90 are expected -/+ 1.2816 sigma of the sum
(never below what is already spent). `bench/anomalies.py` measures its error against the run-rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from statistics import median

_Z90 = 1.2816


@dataclass(frozen=True)
class PeriodForecast:
    spent: float
    expected: float  # period-end total
    p10: float
    p90: float
    run_rate: float  # the linear run-rate forecast, for comparison
    method: str  # "weekday" or "run_rate" (too little history for a pattern)


def weekday_factors(daily: Mapping[date, float], *, until: date, days: int = 28) -> dict[int, float]:
    """Median amount per weekday over the `days` before `until`, relative to the median of all of them."""
    window = [(d, v) for d, v in daily.items() if until - timedelta(days=days) <= d < until]
    overall = median([v for _, v in window]) if len(window) >= 14 else 0
    if overall <= 0:
        return {wd: 1.0 for wd in range(7)}
    out = {}
    for wd in range(7):
        vals = [v for d, v in window if d.weekday() == wd]
        out[wd] = max(median(vals) / overall, 0.05) if vals else 1.0
    return out


def forecast_period_end(
    *,
    daily: Mapping[date, float],
    period_start: date,
    period_end: date,
    today: date,
    today_spent: float = 0.0,
    today_elapsed: float = 0.0,
    level_days: int = 14,
    pattern_days: int = 28,
) -> PeriodForecast:
    """Forecast of the total from `period_start` to `period_end` (exclusive) made during `today`.

    `daily` holds complete days before `today` (earlier periods included: they carry the pattern);
    `today_spent` is what today has spent so far and `today_elapsed` the share of today gone (0..1).
    """
    if not period_start <= today < period_end:
        raise ValueError("today must fall inside the period")
    spent = sum(v for d, v in daily.items() if period_start <= d < today) + today_spent
    period_days = (period_end - period_start).days
    elapsed_days = (today - period_start).days + today_elapsed
    run_rate = spent / elapsed_days * period_days if elapsed_days > 0 else spent

    factors = weekday_factors(daily, until=today, days=pattern_days)
    recent = [(d, v) for d, v in daily.items() if today - timedelta(days=level_days) <= d < today]
    if len(recent) < 3:
        return PeriodForecast(spent, run_rate, run_rate, run_rate, run_rate, "run_rate")
    level = median([v / factors[d.weekday()] for d, v in recent])
    logs = [math.log(max(v, 1e-9) / max(level * factors[d.weekday()], 1e-9)) for d, v in recent]
    mean_log = sum(logs) / len(logs)
    sd = math.sqrt(sum((x - mean_log) ** 2 for x in logs) / max(len(logs) - 1, 1))

    ahead = [(today, 1.0 - today_elapsed)]
    ahead += [(today + timedelta(days=k), 1.0) for k in range(1, (period_end - today).days)]
    expected_days = [level * factors[d.weekday()] * share for d, share in ahead]
    rest = sum(expected_days)
    # independent day-to-day noise, plus a level that can move by a day's spread for the whole rest
    # (growth, a new customer, an incident): days are not independent of each other
    var = sum((e * sd) ** 2 for e in expected_days) + (rest * sd) ** 2
    sigma = math.sqrt(var)
    expected = spent + rest
    return PeriodForecast(
        spent=spent,
        expected=expected,
        p10=max(spent, expected - _Z90 * sigma),
        p90=expected + _Z90 * sigma,
        run_rate=run_rate,
        method="weekday",
    )
