"""Budget evaluation: where each budget stands in its window, and the ladder rungs that follow (DESIGN.md 8).

`budgets_evaluate` runs every minute (budgets.tasks.evaluate_budgets). For every active budget it opens
the current window and computes three levels, each a percentage:

- soft: spent as a share of the soft limit;
- hard: spent as a share of the hard limit;
- forecast: the period-end forecast as a share of the hard limit.

The forecast is the weekday-pattern one (budgets/forecasting.py: level x weekday factor for each day
left, from the rollups of the budget's scope) when the budget has the history for it: at least
PATTERN_MIN_DAYS days with spend in the four weeks before today. A weekday-heavy tenant's Friday then
does not extrapolate its busy week over the quiet weekend, and a month that started on a weekend is not
under-forecast. Without that history (a new budget scope, a new tenant) it falls back to the linear
run-rate: spent + run rate × time left, with run rate = spent / elapsed time, where the elapsed time
counts as at least FORECAST_MIN_ELAPSED_SHARE of the window (a tenth: 2.4 hours of a day, about 3 days
of a month). Without that floor, a burst in the first minutes of a period would be extrapolated over the
whole period and trip the forecast rung on noise; with it, the forecast of a young window understates
rather than overstates, and the soft and hard rungs still act on what was really spent. Which one was
used is in `BudgetLevels.forecast_method`, and said in the forecast alert and the control's reason.
Reservations are not counted: they are estimates that mostly settle for less.

Each control rung of the budget's policy starts one `Control` when its level reaches the rung's
percent, at most one active per (window, rung), ending by itself with the window (`ends_at`). It ends
early only when the level falls below percent × (1 − CONTROL_HYSTERESIS_PERCENT/100) *and* the control
has run CONTROL_MIN_SECONDS, so a level wobbling around a threshold (forecasts move; spent drops after
a reconciliation or a price correction) does not switch a control on and off every minute. Alerts are
raised here too (services/alerts.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from budgets.forecasting import WindowForecast, window_forecasts_weekday
from budgets.models import Budget, BudgetWindow, Control, Metric
from budgets.periods import period_bounds
from budgets.policy import HARD_ACTION_CONTROL, policy_effective, rung_key
from finops.templatetags.money import usd_sentence
from tenants.errors import ApplicationError

from .alerts import alerts_raise
from .controls import active_controls_q, control_end, control_start, controls_audit_lapsed
from .unreserved import unreserved_alert_raise
from .windows import windows_open

logger = logging.getLogger(__name__)

FORECAST_MIN_ELAPSED_SHARE = Decimal("0.1")
_BASIS_LABEL = {"soft": "soft limit", "hard": "hard limit", "forecast": "hard limit by the period-end forecast"}


@dataclass(frozen=True)
class BudgetLevels:
    """Where one budget stands in one window at one moment; percentages are None without the limit."""

    budget: Budget
    window: BudgetWindow
    at: datetime
    spent: int
    forecast: int
    soft: Decimal | None
    hard: Decimal | None
    forecast_pct: Decimal | None
    forecast_method: str = "run_rate"  # "weekday" (the pattern, with enough history) or "run_rate"
    run_rate: int | None = None  # the linear run-rate forecast, also when the weekday one is used
    weekday: WindowForecast | None = None  # the weekday-pattern forecast, when it was computed

    @property
    def forecast_method_label(self) -> str:
        return "with the weekday pattern" if self.forecast_method == "weekday" else "at the linear run-rate"

    def level(self, basis: str) -> Decimal | None:
        return {"soft": self.soft, "hard": self.hard, "forecast": self.forecast_pct}[basis]

    def limit(self, basis: str) -> int | None:
        return self.window.soft_limit if basis == "soft" else self.window.hard_limit

    def fmt(self, amount: int | None) -> str:
        return amount_label(self.budget.metric, amount)

    def describe(self, basis: str) -> str:
        """E.g. "Budget 'Acme monthly' at 103% of its $500.00 soft limit ($515.20 spent)"."""
        pct = int(self.level(basis) or 0)  # floored: 99.6% is not yet "100%"
        name = f"Budget '{self.budget.name}'"
        if basis == "forecast":
            return (
                f"{name} is forecast to reach {pct}% of its {self.fmt(self.limit('hard'))} hard limit by "
                f"the end of the period ({self.fmt(self.forecast)} forecast {self.forecast_method_label}, "
                f"{self.fmt(self.spent)} spent)"
            )
        limit = f"{self.fmt(self.limit(basis))} {_BASIS_LABEL[basis]}"
        return f"{name} at {pct}% of its {limit} ({self.fmt(self.spent)} spent)"


def amount_label(metric: str, amount: int | None) -> str:
    if amount is None:
        return "no"
    if metric == Metric.TOKENS:
        return f"{amount:,} tokens"
    # Sub-cent amounts keep their significant digits: a $0.0008 limit never reads "$0.00".
    return usd_sentence(amount)


def _percent(amount: int, limit: int | None) -> Decimal | None:
    if limit is None:
        return None
    if limit <= 0:
        # A zero limit is crossed by the first unit spent (and stands at 0% before it).
        return Decimal(0) if amount <= 0 else Decimal(100_000)
    return Decimal(amount) * 100 / Decimal(limit)


def run_rate_forecast(window: BudgetWindow, *, now: datetime) -> int:
    """The linear period-end forecast (see the module docstring): the fallback without history."""
    length = (window.ends_at - window.starts_at).total_seconds()
    elapsed = min(max((now - window.starts_at).total_seconds(), 0.0), length)
    remaining = Decimal(length - elapsed)
    floor = Decimal(length) * FORECAST_MIN_ELAPSED_SHARE
    rate = Decimal(max(window.spent, 0)) / max(Decimal(elapsed), floor, Decimal(1))
    return window.spent + int(rate * remaining)


def budget_levels(
    budget: Budget, window: BudgetWindow, *, now: datetime, weekday: WindowForecast | None = None
) -> BudgetLevels:
    """The soft, hard and forecast levels of a window at `now` (see the module docstring for the forecast).

    `weekday` is the window's weekday-pattern forecast (`levels_forecasts` reads them for many windows
    at once); the forecast level uses it when it has the history for it, the run-rate otherwise.
    """
    run_rate = run_rate_forecast(window, now=now)
    if weekday is not None and weekday.has_pattern and window.ends_at > now:
        forecast, method = max(weekday.expected, window.spent), "weekday"
    else:
        forecast, method = run_rate, "run_rate"
    return BudgetLevels(
        budget=budget,
        window=window,
        at=now,
        spent=window.spent,
        forecast=forecast,
        soft=_percent(window.spent, window.soft_limit),
        hard=_percent(window.spent, window.hard_limit),
        forecast_pct=_percent(forecast, window.hard_limit),
        forecast_method=method,
        run_rate=run_rate,
        weekday=weekday,
    )


def levels_forecasts(pairs: list[tuple[Budget, BudgetWindow]], *, now: datetime) -> dict[int, WindowForecast]:
    """The weekday forecasts the forecast level needs, by budget id, in a fixed number of queries: only
    for current windows with a hard limit (the forecast level is a share of it) that were saved."""
    wanted = [
        (b, w) for b, w in pairs if w.pk is not None and w.hard_limit is not None and w.starts_at <= now < w.ends_at
    ]
    return window_forecasts_weekday(wanted, now=now)


def budgets_evaluate(*, now: datetime | None = None) -> dict:
    """Evaluate every active budget: start and end ladder controls, raise alerts, audit lapsed controls.

    Safe to run twice or concurrently with itself at worst for a duplicate start within the same second
    (the beat entry expires before the next run, so runs do not overlap in practice). Returns counts.
    """
    now = now or timezone.now()
    summary = {"budgets": 0, "controls_started": 0, "controls_ended": 0, "alerts": 0, "lapsed_audited": 0}
    budgets = list(Budget.objects.filter(is_active=True).select_related("tenant", "workflow", "tier").order_by("id"))
    keys = []
    for budget in budgets:
        start, end = period_bounds(budget.period, budget.time_zone, now)
        keys.append((budget, start, end))
    windows = windows_open(keys)  # Budget rows carry the id and limits windows_open reads.
    weekday = levels_forecasts([(budget, windows[(budget.pk, start)]) for budget, start, _ in keys], now=now)
    for budget, start, _ in keys:
        window = windows[(budget.pk, start)]
        levels = budget_levels(budget, window, now=now, weekday=weekday.get(budget.pk))
        started, ended = _ladder_apply(levels, now=now)
        summary["controls_started"] += started
        summary["controls_ended"] += ended
        summary["alerts"] += len(alerts_raise(levels))
        summary["alerts"] += unreserved_alert_raise(budget=budget, window=window, now=now) is not None
        summary["budgets"] += 1
    summary["controls_ended"] += _controls_end_for_inactive_budgets(now=now)
    summary["lapsed_audited"] = controls_audit_lapsed(now=now)
    if summary["controls_started"] or summary["controls_ended"] or summary["alerts"]:
        logger.info("budgets evaluated: %s", summary)
    return summary


def _rung_control_kind(rung: dict, budget: Budget) -> str | None:
    if rung["kind"] == "alert":
        return None
    if rung["kind"] == "hard_action":
        return HARD_ACTION_CONTROL[budget.hard_action]
    return rung["kind"]


def _scope_of(obj) -> tuple:
    return (obj.tenant_id, obj.workflow_id, obj.environment, obj.tier_id)


def _ladder_apply(levels: BudgetLevels, *, now: datetime) -> tuple[int, int]:
    budget, window = levels.budget, levels.window
    rungs = {}
    for rung in policy_effective(budget.policy):
        kind = _rung_control_kind(rung, budget)
        if kind is not None:
            rungs[rung_key(rung)] = (rung, kind)
    active = {
        c.rung: c
        for c in Control.objects.filter(active_controls_q(now), window=window, source=Control.Source.BUDGET)
        .select_related("tenant")
        .order_by("starts_at", "id")
    }
    started = ended = 0
    hysteresis = Decimal(1) - Decimal(settings.CONTROL_HYSTERESIS_PERCENT) / 100
    min_run = timedelta(seconds=settings.CONTROL_MIN_SECONDS)

    for key, control in active.items():
        entry = rungs.get(key)
        if entry is None or _stale(control, budget, *entry):
            # The budget was edited: its policy, hard action or scope no longer says this control.
            control_end(control=control, reason="The budget's policy or scope changed.", now=now)
            ended += 1
            continue
        rung, _ = entry
        level = levels.level(rung["at"]) or Decimal(0)
        if level < rung["percent"] * hysteresis and now - control.starts_at >= min_run:
            control_end(
                control=control,
                reason=f"{levels.describe(rung['at'])}: below {rung['percent'] * hysteresis:.0f}%, "
                f"the rung's {rung['percent']}% less {settings.CONTROL_HYSTERESIS_PERCENT}% hysteresis.",
                now=now,
            )
            ended += 1

    still_active = {
        c.rung for c in Control.objects.filter(active_controls_q(now), window=window, source=Control.Source.BUDGET)
    }
    for key, (rung, kind) in rungs.items():
        reached = levels.level(rung["at"])
        if key in still_active or reached is None or reached < rung["percent"]:
            continue
        try:
            control_start(
                kind=kind,
                tenant=budget.tenant,
                workflow=budget.workflow,
                environment=budget.environment,
                tier=budget.tier,
                priorities=list(rung.get("priorities") or []),
                params=dict(rung.get("params") or {}),
                source=Control.Source.BUDGET,
                budget=budget,
                window=window,
                rung=key,
                reason=levels.describe(rung["at"]),
                starts_at=now,
                ends_at=window.ends_at,
            )
        except ApplicationError as error:
            # Only a policy stored before its params were checked gets here: skip its rung, not every budget.
            logger.error("budget %s: rung %s not started: %s", budget.pk, key, error.message)
            continue
        started += 1
    return started, ended


def _stale(control: Control, budget: Budget, rung: dict, kind: str) -> bool:
    return (
        control.kind != kind
        or _scope_of(control) != _scope_of(budget)
        or sorted(control.priorities or []) != sorted(rung.get("priorities") or [])
        or (control.params or {}) != (rung.get("params") or {})
    )


def _controls_end_for_inactive_budgets(*, now: datetime) -> int:
    ended = 0
    rows = Control.objects.filter(active_controls_q(now), source=Control.Source.BUDGET).filter(
        Q(budget__isnull=True) | Q(budget__is_active=False)
    )
    for control in rows.select_related("tenant"):
        control_end(control=control, reason="The budget was deactivated.", now=now)
        ended += 1
    return ended
