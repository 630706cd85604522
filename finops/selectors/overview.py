"""The overview page: period cards, the daily chart by environment, top workflows, models, tenants."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from finops.models import Environment, UsageRollup
from finops.selectors.dashboard import (
    TOP_ROWS,
    Series,
    SpendRow,
    acc_rows,
    day_start,
    days_between,
    query_fields,
    relabel,
    rows_by,
    stack,
    utc_today,
    workflow_names,
)
from finops.selectors.spend import SpendGroup, SpendQuery, spend_query
from finops.services.rollups import hourly_retention_start
from tenants.scope import TenantScope


@dataclass(frozen=True, slots=True)
class PeriodSpend:
    """Spend of a calendar period so far, beside the same number of days of the period before."""

    label: str
    previous_label: str
    first: date
    last: date
    previous_first: date
    previous_last: date
    cost_nanos: int = 0
    calls: int = 0
    tokens: int = 0
    previous_cost_nanos: int = -1  # -1 until summed: from daily rows unless set from hourly ones

    @property
    def change(self) -> Decimal | None:
        """(now - before) / before; None when there was nothing before to compare with."""
        if self.previous_cost_nanos <= 0:
            return None
        return Decimal(self.cost_nanos - self.previous_cost_nanos) / self.previous_cost_nanos


def overview_periods(today: date) -> list[PeriodSpend]:
    """Today, this calendar week (from Monday) and this month so far, each against the same number
    of days at the start of the period before (yesterday, last week, last month)."""
    yesterday = today - timedelta(days=1)
    monday = today - timedelta(days=today.weekday())
    last_monday = monday - timedelta(days=7)
    month_first = today.replace(day=1)
    last_month_last = month_first - timedelta(days=1)
    last_month_first = last_month_last.replace(day=1)
    return [
        PeriodSpend("Today", "yesterday", today, today, yesterday, yesterday),
        PeriodSpend("This week", "last week", monday, today, last_monday, last_monday + (today - monday)),
        PeriodSpend(
            "Month to date",
            "last month",
            month_first,
            today,
            last_month_first,
            min(last_month_first + (today - month_first), last_month_last),
        ),
    ]


@dataclass
class Overview:
    today: date
    periods: list[PeriodSpend]
    days: list[date]  # the chart's days, oldest first
    daily_by_environment: list[Series]
    window: SpendGroup  # totals over `days`
    tiers: list[SpendRow]
    environments: list[SpendRow]
    workflows: list[SpendRow]
    models: list[SpendRow]
    tenants: list[SpendRow]
    unpriced_models: list[SpendRow]  # models with unpriced calls in `days`, most calls first
    has_usage: bool  # any usage at all, even older than the periods

    @property
    def has_recent(self) -> bool:
        return self.window.calls > 0


def _today_so_far(scope: TenantScope, now: datetime, today: PeriodSpend) -> PeriodSpend:
    """Today against yesterday up to the same hour, from hourly rollups (3 queries): a whole
    yesterday against a morning would always read as a drop. Whole days when hours are not kept."""
    midnight = day_start(today.first)
    hour_end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    yesterday = midnight - timedelta(days=1)
    if yesterday < hourly_retention_start(now):
        return replace(today, previous_cost_nanos=-1)
    hourly = spend_query(scope=scope, query=SpendQuery(start=yesterday, end=hour_end, granularity="hour"))
    cut = yesterday + (hour_end - midnight)
    previous = sum(p.cost_nanos for p in hourly.series if p.bucket < cut)
    label = "yesterday" if hour_end - midnight == timedelta(days=1) else f"yesterday until {hour_end:%H:%M} UTC"
    return replace(today, previous_label=label, previous_cost_nanos=previous)


ENVIRONMENT_ORDER = ("prod", "stage", "dev")  # stacking order: where the money goes first
ENVIRONMENT_LABELS = dict(Environment.choices)


def overview_get(
    *,
    scope: TenantScope,
    with_tenants: bool,
    now: datetime | None = None,
    window_days: int = 30,
) -> Overview:
    """The overview in 9 spend queries (12 with the tenant breakdown), +1 for workflow names.

    One daily query by (tier, environment) from the start of last month gives the period cards, the
    daily chart and the tier and environment splits; one hourly query since yesterday compares today
    with yesterday up to the same hour; one by (workflow, model) over the window gives top workflows,
    top models and the unpriced models (month granularity: its series is not read).
    """
    now = now or timezone.now()
    tenant_names = scope.tenant_names
    today = utc_today(now)
    periods = overview_periods(today)
    periods[0] = _today_so_far(scope, now, periods[0])
    first_day = today - timedelta(days=window_days - 1)
    days = days_between(first_day, today)
    start = day_start(min(first_day, periods[-1].previous_first))
    end = day_start(today + timedelta(days=1))

    daily = spend_query(
        scope=scope,
        query=SpendQuery(start=start, end=end, granularity="day", group_by=("tier", "environment")),
    )
    per_day: dict[date, list[int]] = defaultdict(lambda: [0, 0, 0])
    tier_acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    env_acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    env_points = []
    for p in daily.series:
        day = p.bucket.date()
        acc = per_day[day]
        acc[0] += p.cost_nanos
        acc[1] += p.calls
        acc[2] += p.tokens
        if day >= first_day:
            tier, env = p.key
            for target in (tier_acc[tier], env_acc[env]):
                target[0] += p.cost_nanos
                target[1] += p.calls
                target[2] += p.tokens
            env_points.append((day, env, p.cost_nanos))

    def span(first: date, last: date) -> list[int]:
        out = [0, 0, 0]
        for d in days_between(first, last):
            for i, v in enumerate(per_day.get(d, ())):
                out[i] += v
        return out

    filled = []
    for period in periods:
        cost, calls, tokens = span(period.first, period.last)
        previous = (
            period.previous_cost_nanos
            if period.previous_cost_nanos >= 0
            else span(period.previous_first, period.previous_last)[0]
        )
        filled.append(
            replace(period, cost_nanos=cost, calls=calls, tokens=tokens, previous_cost_nanos=max(previous, 0))
        )

    window_query = SpendQuery(start=day_start(first_day), end=end, granularity="month", group_by=("workflow", "model"))
    by_workflow_model = spend_query(scope=scope, query=window_query, series_top=0)  # groups only
    window = by_workflow_model.totals
    total = window.cost_nanos
    workflows = rows_by(by_workflow_model.groups, 0, total, {})
    names = workflow_names(r.key for r in workflows[:TOP_ROWS])
    workflows = [relabel(r, names) for r in workflows]
    models = rows_by(by_workflow_model.groups, 1, total, {})

    tenants: list[SpendRow] = []
    if with_tenants:
        by_tenant = spend_query(
            scope=scope,
            query=SpendQuery(**{**query_fields(window_query), "group_by": ("tenant",)}),
            series_top=0,
        )
        tenants = rows_by(by_tenant.groups, 0, total, tenant_names)

    env_rows = acc_rows(env_acc, total, ENVIRONMENT_LABELS)
    env_rank = {e: i for i, e in enumerate(ENVIRONMENT_ORDER)}
    env_order = sorted(env_acc, key=lambda e: (env_rank.get(e, 99), e))
    has_usage = daily.totals.calls > 0 or _rollups_exist(scope)
    return Overview(
        today=today,
        periods=filled,
        days=days,
        daily_by_environment=stack(env_points, days, env_order, ENVIRONMENT_LABELS, len(env_order)),
        window=window,
        tiers=acc_rows(tier_acc, total, {k: k.capitalize() for k in tier_acc}),
        environments=env_rows,
        workflows=workflows[:TOP_ROWS],
        models=models[:TOP_ROWS],
        tenants=tenants[:TOP_ROWS],
        unpriced_models=sorted((m for m in models if m.unpriced_calls), key=lambda m: (-m.unpriced_calls, m.key)),
        has_usage=has_usage,
    )


def _rollups_exist(scope: TenantScope) -> bool:
    return scope.filter(UsageRollup.objects.filter(grain=UsageRollup.Grain.DAY)).exists()
