"""The hourly series the anomaly job scores, read from the hourly rollups (never raw usage): one per tenant x
workflow and metric, zero-filled from the workflow's first hour in the retention period; and what a tenant
used before an hour (for never-seen models and workflows)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import F, Sum

from finops.measures import TOKEN_FIELDS
from finops.models import LlmModel, TenantWorkflowRollup, UsageRollup
from finops.services.rollups import hourly_retention_start
from tenants.models import Tenant


@dataclass
class WorkflowSeries:
    """One tenant x workflow's hourly sums from its first hour with usage to the scored hour."""

    workflow_id: int | None
    start: datetime
    calls: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    pricier: list[float] = field(default_factory=list)

    def hours(self) -> list[datetime]:
        return [self.start + timedelta(hours=i) for i in range(len(self.calls))]

    def metrics(self) -> dict[str, tuple[list, list | None]]:
        hours = self.hours()
        nan = float("nan")
        tpc = [(h, t / c if c else nan) for h, t, c in zip(hours, self.tokens, self.calls, strict=True)]
        return {
            "calls": (list(zip(hours, self.calls, strict=True)), None),
            "cost": (list(zip(hours, self.cost, strict=True)), self.calls),
            "tokens_per_call": (tpc, self.calls),
            "pricier_calls": (list(zip(hours, self.pricier, strict=True)), self.calls),
        }


@dataclass
class TenantHours:
    series: dict[int | None, WorkflowSeries]
    last_hour_models: dict[int | None, dict[str, float]]  # workflow -> model name -> calls in the scored hour


def hour_floor(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def tenant_hours(*, tenant: Tenant, hour: datetime) -> TenantHours:
    """The tenant's hourly rollups from the retention start to `hour` (inclusive), per workflow."""
    start = hourly_retention_start(hour + timedelta(hours=1))
    tokens = sum((F(f) for f in TOKEN_FIELDS[1:]), F(TOKEN_FIELDS[0]))
    rows = (
        UsageRollup.objects.filter(
            grain=UsageRollup.Grain.HOUR, tenant=tenant, bucket_start__gte=start, bucket_start__lte=hour
        )
        .values("workflow_id", "bucket_start", "model_id", "unknown_model_name")
        .annotate(calls=Sum("calls"), tokens=Sum(tokens), cost=Sum("cost_nanos"))
        .order_by()
    )
    models = {m.pk: (m.name, m.tier.rank) for m in LlmModel.objects.select_related("tier")}
    per_wf: dict[int | None, list] = defaultdict(list)
    for row in rows:
        per_wf[row["workflow_id"]].append(row)
    series: dict[int | None, WorkflowSeries] = {}
    last_models: dict[int | None, dict[str, float]] = defaultdict(dict)
    for wf_id, wf_rows in per_wf.items():
        first = min(r["bucket_start"] for r in wf_rows)
        n = int((hour - first).total_seconds() // 3600) + 1
        s = WorkflowSeries(workflow_id=wf_id, start=first, calls=[0.0] * n, cost=[0.0] * n, tokens=[0.0] * n)
        tier_calls: dict[int, float] = defaultdict(float)
        by_hour_tier: list[dict[int, float]] = [defaultdict(float) for _ in range(n)]
        for r in wf_rows:
            i = int((r["bucket_start"] - first).total_seconds() // 3600)
            s.calls[i] += r["calls"]
            s.tokens[i] += r["tokens"] or 0
            s.cost[i] += (r["cost"] or 0) / 1e9
            name, rank = models.get(r["model_id"], (r["unknown_model_name"] or "unknown", 0))
            tier_calls[rank] += r["calls"]
            by_hour_tier[i][rank] += r["calls"]
            if r["bucket_start"] == hour:
                last_models[wf_id][name] = last_models[wf_id].get(name, 0.0) + r["calls"]
        main = max(tier_calls, key=lambda rank: tier_calls[rank]) if tier_calls else 0
        s.pricier = [sum(c for rank, c in h.items() if rank > main) for h in by_hour_tier]
        series[wf_id] = s
    return TenantHours(series=series, last_hour_models=dict(last_models))


def tenant_seen_before(
    *, tenant: Tenant, hour: datetime, min_history: timedelta
) -> tuple[set[str], set[int | None]] | None:
    """The model names and workflow ids the tenant used before `hour` (daily rollups before its day, hourly
    rows of its day), or None when the tenant's usage is younger than `min_history` (all would be new)."""
    day_start = hour.replace(hour=0)
    earliest = (
        UsageRollup.objects.filter(grain=UsageRollup.Grain.DAY, tenant=tenant)
        .order_by("bucket_start")
        .values_list("bucket_start", flat=True)
        .first()
    )
    if earliest is None or earliest > hour - min_history:
        return None
    names = dict(LlmModel.objects.values_list("pk", "name"))
    seen_models: set[str] = set()
    for model_id, unknown in (
        UsageRollup.objects.filter(grain=UsageRollup.Grain.DAY, tenant=tenant, bucket_start__lt=day_start)
        .values_list("model_id", "unknown_model_name")
        .distinct()
    ):
        seen_models.add(names.get(model_id, unknown or "unknown"))
    for model_id, unknown in (
        UsageRollup.objects.filter(
            grain=UsageRollup.Grain.HOUR, tenant=tenant, bucket_start__gte=day_start, bucket_start__lt=hour
        )
        .values_list("model_id", "unknown_model_name")
        .distinct()
    ):
        seen_models.add(names.get(model_id, unknown or "unknown"))
    seen_workflows: set[int | None] = set()
    seen_workflows.update(
        TenantWorkflowRollup.objects.filter(tenant=tenant, bucket_start__lt=day_start)
        .values_list("workflow_id", flat=True)
        .distinct()
    )
    seen_workflows.update(
        UsageRollup.objects.filter(
            grain=UsageRollup.Grain.HOUR, tenant=tenant, bucket_start__gte=day_start, bucket_start__lt=hour
        )
        .values_list("workflow_id", flat=True)
        .distinct()
    )
    return seen_models, seen_workflows
