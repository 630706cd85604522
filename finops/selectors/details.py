"""The tenant and workflow pages: daily spend by a breakdown, its split, and the token profile."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.db.models import Count, Sum

from finops.measures import MEASURES, TOKEN_BUCKETS, Measures
from finops.models import UsageRollup, Workflow
from finops.selectors.dashboard import (
    Series,
    SpendRow,
    bucket_of,
    day_start,
    query_fields,
    relabel,
    rows_by,
    stack,
    workflow_names,
)
from finops.selectors.spend import SpendGroup, SpendQuery, SpendResult, spend_query
from tenants.scope import TenantScope


@dataclass(kw_only=True)
class DayProfile(Measures):
    """One day of daily rollups summed: what `spend_query` does not split (token buckets, unpriced)."""

    day: date
    tenants: int = 0  # tenants with usage that day


def daily_profile(*, scope: TenantScope, days: list[date], workflow_id: int | None = None) -> list[DayProfile]:
    """Per day of `days` (every day, empty ones too): calls, cost and each token bucket; one query."""
    qs = UsageRollup.objects.filter(
        grain=UsageRollup.Grain.DAY,
        bucket_start__gte=day_start(days[0]),
        bucket_start__lt=day_start(days[-1] + timedelta(days=1)),
    )
    qs = scope.filter(qs)
    if workflow_id is not None:
        qs = qs.filter(workflow_id=workflow_id)
    # Mapping: the sum_* keys are built from MEASURES, which a typed row cannot name.
    rows: Iterable[Mapping[str, Any]] = (
        qs.values("bucket_start")
        .annotate(**{f"sum_{f}": Sum(f) for f in MEASURES}, tenants=Count("tenant_id", distinct=True))
        .order_by("bucket_start")
    )
    by_day = {
        bucket_of(r["bucket_start"], "day").date(): DayProfile(
            day=bucket_of(r["bucket_start"], "day").date(),
            tenants=r["tenants"],
            **{f: int(r[f"sum_{f}"] or 0) for f in MEASURES},
        )
        for r in rows
    }
    return [by_day.get(d) or DayProfile(day=d) for d in days]


@dataclass
class DetailDashboard:
    """A tenant's or a workflow's spend over `days`."""

    days: list[date]
    totals: SpendGroup
    stacks: list[Series]  # daily cost by the breakdown dimension
    breakdown: list[SpendRow]  # workflows (tenant page) or models (workflow page), costliest first
    second: list[SpendRow]  # models (tenant page) or tenants (workflow page)
    profile: list[DayProfile]

    @property
    def token_totals(self) -> list[tuple[str, int]]:
        return [(label, getattr(self.totals, f)) for f, label in TOKEN_BUCKETS]

    @property
    def active_days(self) -> int:
        return sum(1 for p in self.profile if p.calls)


def tenant_dashboard(*, scope: TenantScope, days: list[date]) -> DetailDashboard:
    """The scope's tenant's daily spend by workflow, top models and token profile: 7 queries (+1 for names)."""
    if scope.tenant is None:
        raise ValueError("tenant_dashboard needs a scope about one tenant")
    base = SpendQuery(start=day_start(days[0]), end=day_start(days[-1] + timedelta(days=1)), group_by=("workflow",))
    by_workflow = spend_query(scope=scope, query=base)
    monthly_by_model = SpendQuery(**{**query_fields(base), "granularity": "month", "group_by": ("model",)})
    by_model = spend_query(scope=scope, query=monthly_by_model, series_top=0)  # groups only
    total = by_workflow.totals.cost_nanos
    workflows = rows_by(by_workflow.groups, 0, total, {})
    names = workflow_names(r.key for r in workflows)
    workflows = [relabel(r, names) for r in workflows]
    return DetailDashboard(
        days=days,
        totals=by_workflow.totals,
        stacks=_daily_stacks(by_workflow, days, workflows),
        breakdown=workflows,
        second=rows_by(by_model.groups, 0, total, {}),
        profile=daily_profile(scope=scope, days=days),
    )


def workflow_dashboard(
    *, scope: TenantScope, workflow: Workflow, days: list[date], with_tenants: bool
) -> DetailDashboard:
    """A workflow's daily spend by model for the visible tenants, their split, and its token profile:
    4 queries, 7 with the tenant split."""
    tenant_names = scope.tenant_names
    base = SpendQuery(
        start=day_start(days[0]),
        end=day_start(days[-1] + timedelta(days=1)),
        group_by=("model",),
        filters={"workflow": (workflow.slug,)},
    )
    by_model = spend_query(scope=scope, query=base)
    total = by_model.totals.cost_nanos
    models = rows_by(by_model.groups, 0, total, {})
    tenants: list[SpendRow] = []
    if with_tenants:
        by_tenant = spend_query(
            scope=scope,
            query=SpendQuery(**{**query_fields(base), "granularity": "month", "group_by": ("tenant",)}),
            series_top=0,
        )
        tenants = rows_by(by_tenant.groups, 0, total, tenant_names)
    return DetailDashboard(
        days=days,
        totals=by_model.totals,
        stacks=_daily_stacks(by_model, days, models),
        breakdown=models,
        second=tenants,
        profile=daily_profile(scope=scope, days=days, workflow_id=workflow.pk),
    )


def _daily_stacks(result: SpendResult, days: list[date], rows: list[SpendRow]) -> list[Series]:
    x = [day_start(d) for d in days]
    points = [(bucket_of(p.bucket, "day"), p.key[0], p.cost_nanos) for p in result.series]
    return stack(points, x, [r.key for r in rows], {r.key: r.label for r in rows}, 8)
