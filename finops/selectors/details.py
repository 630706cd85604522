"""The tenant and workflow pages: daily spend by a breakdown, its split, and the token profile."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import Count, Sum

from finops.models import UsageRollup, Workflow
from finops.pricing import cost_per_priced_call
from finops.selectors.dashboard import (
    Series,
    SpendRow,
    TenantIds,
    bucket_of,
    day_start,
    query_fields,
    relabel,
    rows_by,
    stack,
    workflow_names,
)
from finops.selectors.spend import SpendGroup, SpendQuery, SpendResult, spend_query
from tenants.models import Tenant


@dataclass(frozen=True, slots=True)
class DayProfile:
    """One day of daily rollups summed: what `spend_query` does not split (token buckets, unpriced)."""

    day: date
    calls: int = 0
    unpriced_calls: int = 0
    cost_nanos: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    tenants: int = 0  # tenants with usage that day

    @property
    def prompt_tokens(self) -> int:
        """Everything sent: uncached, cache-read and cache-write input (what an input envelope counts)."""
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    @property
    def cost_per_call_nanos(self) -> int | None:
        return cost_per_priced_call(self.cost_nanos, self.calls, self.unpriced_calls)


TOKEN_BUCKETS = (
    ("input_tokens", "Input"),
    ("cached_input_tokens", "Cached input"),
    ("cache_write_tokens", "Cache write"),
    ("output_tokens", "Output"),
    ("reasoning_tokens", "Reasoning"),
)


def daily_profile(*, tenant_ids: TenantIds, days: list[date], workflow_id: int | None = None) -> list[DayProfile]:
    """Per day of `days` (every day, empty ones too): calls, cost and each token bucket; one query."""
    qs = UsageRollup.objects.filter(
        grain=UsageRollup.Grain.DAY,
        bucket_start__gte=day_start(days[0]),
        bucket_start__lt=day_start(days[-1] + timedelta(days=1)),
    )
    if tenant_ids is not None:
        qs = qs.filter(tenant_id__in=tenant_ids)
    if workflow_id is not None:
        qs = qs.filter(workflow_id=workflow_id)
    sums = [f for f, _ in TOKEN_BUCKETS] + ["calls", "unpriced_calls", "cost_nanos"]
    rows = (
        qs.values("bucket_start")
        .annotate(**{f"sum_{f}": Sum(f) for f in sums}, tenants=Count("tenant_id", distinct=True))
        .order_by("bucket_start")
    )
    by_day = {
        bucket_of(r["bucket_start"], "day").date(): DayProfile(
            day=bucket_of(r["bucket_start"], "day").date(),
            tenants=r["tenants"],
            **{f: int(r[f"sum_{f}"] or 0) for f in sums},
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


def tenant_dashboard(*, tenant: Tenant, days: list[date]) -> DetailDashboard:
    """A tenant's daily spend by workflow, top models and token profile: 7 queries (+1 for names)."""
    base = SpendQuery(start=day_start(days[0]), end=day_start(days[-1] + timedelta(days=1)), group_by=("workflow",))
    by_workflow = spend_query(tenant_ids=[tenant.pk], query=base)
    monthly_by_model = SpendQuery(**{**query_fields(base), "granularity": "month", "group_by": ("model",)})
    by_model = spend_query(tenant_ids=[tenant.pk], query=monthly_by_model, series_top=0)  # groups only
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
        profile=daily_profile(tenant_ids=[tenant.pk], days=days),
    )


def workflow_dashboard(
    *, tenant_ids: TenantIds, workflow: Workflow, days: list[date], tenant_names: Mapping[str, str], with_tenants: bool
) -> DetailDashboard:
    """A workflow's daily spend by model for the visible tenants, their split, and its token profile:
    4 queries, 7 with the tenant split."""
    base = SpendQuery(
        start=day_start(days[0]),
        end=day_start(days[-1] + timedelta(days=1)),
        group_by=("model",),
        filters={"workflow": (workflow.slug,)},
    )
    by_model = spend_query(tenant_ids=tenant_ids, query=base)
    total = by_model.totals.cost_nanos
    models = rows_by(by_model.groups, 0, total, {})
    tenants: list[SpendRow] = []
    if with_tenants:
        by_tenant = spend_query(
            tenant_ids=tenant_ids,
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
        profile=daily_profile(tenant_ids=tenant_ids, days=days, workflow_id=workflow.pk),
    )


def _daily_stacks(result: SpendResult, days: list[date], rows: list[SpendRow]) -> list[Series]:
    x = [day_start(d) for d in days]
    points = [(bucket_of(p.bucket, "day"), p.key[0], p.cost_nanos) for p in result.series]
    return stack(points, x, [r.key for r in rows], {r.key: r.label for r in rows}, 8)


def workflow_seen_by(*, workflow: Workflow, tenant_ids: TenantIds) -> bool:
    """Registered workflows are shared product data; an auto-discovered one was named by some tenant's
    service, so people see it only when one of their tenants has used it."""
    if tenant_ids is None or workflow.status == Workflow.Status.REGISTERED:
        return True
    return UsageRollup.objects.filter(
        grain=UsageRollup.Grain.DAY, tenant_id__in=tenant_ids, workflow_id=workflow.pk
    ).exists()
