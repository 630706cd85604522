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
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from statistics import median
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from budgets.models import Budget, BudgetWindow

_Z90 = 1.2816
PATTERN_MIN_DAYS = 14  # days with spend in the pattern window before the weekday factors are learned


@dataclass(frozen=True)
class PeriodForecast:
    spent: float
    expected: float  # period-end total
    p10: float
    p90: float
    run_rate: float  # the linear run-rate forecast, for comparison
    method: str  # "weekday" or "run_rate" (too little history for a pattern)
    history_days: int = 0  # days with spend in the pattern window (the weekday factors need PATTERN_MIN_DAYS)


def weekday_factors(daily: Mapping[date, float], *, until: date, days: int = 28) -> dict[int, float]:
    """Median amount per weekday over the `days` before `until`, relative to the median of all of them."""
    window = [(d, v) for d, v in daily.items() if until - timedelta(days=days) <= d < until]
    overall = median([v for _, v in window]) if len(window) >= PATTERN_MIN_DAYS else 0
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
    history_days = sum(1 for d in daily if today - timedelta(days=pattern_days) <= d < today)
    recent = [(d, v) for d, v in daily.items() if today - timedelta(days=level_days) <= d < today]
    if len(recent) < 3:
        return PeriodForecast(spent, run_rate, run_rate, run_rate, run_rate, "run_rate", history_days)
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
        history_days=history_days,
    )


# How far back before now the rollups are read: the 28 days before (local) today carry the weekday
# pattern and the 14 before it the level (`forecast_period_end` reads nothing older but the window's own
# days); one more covers any time zone's offset from the UTC days of the daily rollups.
HISTORY_DAYS = 29


@dataclass(frozen=True)
class WindowForecast:
    """A budget window's period-end forecast in the budget's unit (nano-USD or tokens)."""

    expected: int
    p10: int
    p90: int
    run_rate: int
    method: str
    history_days: int = 0

    @property
    def has_pattern(self) -> bool:
        """Enough history for the weekday pattern (the ladder acts on it then, on the run-rate otherwise)."""
        return self.method == "weekday" and self.history_days >= PATTERN_MIN_DAYS

    def as_dict(self) -> dict:
        return {"expected": self.expected, "p10": self.p10, "p90": self.p90, "method": self.method}


def window_forecast_weekday(*, budget: Budget, window: BudgetWindow, now: datetime) -> WindowForecast:
    """The window's forecast with the weekday pattern, from the rollups of the budget's scope (the days
    before the window and the window so far), anchored on what the window has spent (`window.spent`)."""
    return window_forecasts_weekday([(budget, window)], now=now)[budget.pk]


def window_forecasts_weekday(
    pairs: Sequence[tuple[Budget, BudgetWindow]], *, now: datetime
) -> dict[int, WindowForecast]:
    """`window_forecast_weekday` for many budgets at once, by budget id, in a fixed number of queries
    (one over the daily rollups, one over the hourly ones per time zone among the budgets), whatever
    the number of budgets: the budgets list, its API and the ladder's minute run read it for all.

    The rollups are read grouped by tenant and only the dimensions some budget narrows to (workflow,
    environment, tier), the hourly ones already summed per local day; each budget then adds up the
    groups of its scope, exactly what `spend_series` would have given it bucket by bucket.
    """
    # Imported here: the pure part of this module runs without Django (bench/anomalies.py).
    from django.db.models import Sum
    from django.db.models.functions import TruncDate

    from finops.measures import TOKENS, tokens_expression
    from finops.models import UsageRollup
    from finops.services.rollups import hourly_retention_start

    out: dict[int, WindowForecast] = {}
    live = []
    for budget, window in pairs:
        tz = ZoneInfo(budget.time_zone)
        if window.ends_at.astimezone(tz).date() <= now.astimezone(tz).date():  # over (or ends at midnight now)
            spent = window.spent
            out[budget.pk] = WindowForecast(spent, spent, spent, spent, "final")
        else:
            live.append((budget, window))
    if not live:
        return out

    dims = ["tenant_id"]
    if any(b.workflow_id for b, _ in live):
        dims.append("workflow_id")
    if any(b.environment for b, _ in live):
        dims.append("environment")
    if any(b.tier_id for b, _ in live):
        dims.append("model__tier_id")
    sums = {"cost": Sum("cost_nanos")}
    if any(b.metric == TOKENS for b, _ in live):
        sums["tokens"] = Sum(tokens_expression())
    rows = UsageRollup.objects.all()
    if all(b.tenant_id is not None for b, _ in live):
        rows = rows.filter(tenant_id__in={b.tenant_id for b, _ in live})

    def history_start(window: BudgetWindow) -> datetime:
        return min(window.starts_at, now - timedelta(days=HISTORY_DAYS))

    start = min(history_start(w) for _, w in live)
    first_day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    hourly_from = max(start, hourly_retention_start())  # as spend_series reads them
    end = min(now, max(w.ends_at for _, w in live))

    # (dims..., bucket start or local day, amounts); daily rows are UTC days placed by their start.
    daily_rows = []
    if first_day < hourly_from:
        daily_rows = list(
            rows.filter(
                grain=UsageRollup.Grain.DAY, bucket_start__gte=first_day, bucket_start__lt=min(hourly_from, end)
            )
            .values(*dims, "bucket_start")
            .annotate(**sums)
            .order_by()
        )
    hourly_by_zone: dict[str, list[dict]] = {}
    for zone in sorted({b.time_zone for b, _ in live}):
        hourly_by_zone[zone] = list(
            rows.filter(grain=UsageRollup.Grain.HOUR, bucket_start__gte=hourly_from, bucket_start__lt=end)
            .annotate(local_day=TruncDate("bucket_start", tzinfo=ZoneInfo(zone)))
            .values(*dims, "local_day")
            .annotate(**sums)
            .order_by()
        )

    def matches(budget: Budget, row: dict) -> bool:
        return (
            (budget.tenant_id is None or row["tenant_id"] == budget.tenant_id)
            and (not budget.workflow_id or row["workflow_id"] == budget.workflow_id)
            and (not budget.environment or row["environment"] == budget.environment)
            and (not budget.tier_id or row["model__tier_id"] == budget.tier_id)
        )

    by_tenant: dict[int, list[dict]] = defaultdict(list)
    for row in daily_rows:
        by_tenant[row["tenant_id"]].append(row)
    hourly_by_tenant: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for zone, zone_rows in hourly_by_zone.items():
        for row in zone_rows:
            hourly_by_tenant[(zone, row["tenant_id"])].append(row)

    for budget, window in live:
        tz = ZoneInfo(budget.time_zone)
        metric = "tokens" if budget.metric == TOKENS else "cost"
        budget_first_day = history_start(window).astimezone(UTC)
        budget_first_day = budget_first_day.replace(hour=0, minute=0, second=0, microsecond=0)
        if budget.tenant_id is None:
            day_rows = daily_rows
            hour_rows = hourly_by_zone[budget.time_zone]
        else:
            day_rows = by_tenant.get(budget.tenant_id, [])
            hour_rows = hourly_by_tenant.get((budget.time_zone, budget.tenant_id), [])
        local_now = now.astimezone(tz)
        today = local_now.date()
        daily: dict[date, float] = defaultdict(float)
        today_spent = 0.0
        amounts = [
            (row["bucket_start"].astimezone(tz).date(), row[metric] or 0)
            for row in day_rows
            if row["bucket_start"] >= budget_first_day and matches(budget, row)
        ]
        amounts += [(row["local_day"], row[metric] or 0) for row in hour_rows if matches(budget, row)]
        for day, amount in amounts:
            if day == today:
                today_spent += amount
            elif day < today:
                daily[day] += amount
        out[budget.pk] = _window_forecast(window, tz, local_now, daily, today_spent)
    return out


def _window_forecast(
    window: BudgetWindow, tz: ZoneInfo, local_now: datetime, daily: dict[date, float], today_spent: float
) -> WindowForecast:
    today = local_now.date()
    period_start = window.starts_at.astimezone(tz).date()
    period_end = window.ends_at.astimezone(tz).date()
    midnight = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed = (local_now - midnight).total_seconds() / 86400
    f = forecast_period_end(
        daily=daily,
        period_start=period_start,
        period_end=period_end,
        today=today,
        today_spent=today_spent,
        today_elapsed=elapsed,
    )
    shift = window.spent - f.spent  # the window's own count is what limits act on
    return WindowForecast(
        expected=max(window.spent, round(f.expected + shift)),
        p10=max(window.spent, round(f.p10 + shift)),
        p90=max(window.spent, round(f.p90 + shift)),
        run_rate=round(f.run_rate + shift),
        method=f.method,
        history_days=f.history_days,
    )
