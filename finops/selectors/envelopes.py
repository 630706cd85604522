"""Observed envelopes: tokens per call (p50, p95), calls per day and cost per call of a workflow, over
every tenant the scope covers or one tenant, from the daily rollups' histograms (finops/envelopes.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from django.utils import timezone

from finops.envelopes import hist_add, percentile
from finops.models import UsageRollup, Workflow
from tenants.scope import TenantScope

ENVELOPE_DAYS = 28


@dataclass(frozen=True)
class ObservedEnvelope:
    days: int  # days in the window (complete UTC days before today)
    active_days: int  # days with calls
    tenants: int  # tenant-days are averaged per tenant using it
    calls: int
    input_p50: int | None
    input_p95: int | None
    output_p50: int | None
    output_p95: int | None
    calls_per_day: int | None  # per tenant using the workflow, on days it was used
    cost_per_call_nanos: int | None

    @property
    def has_calls(self) -> bool:
        return self.calls > 0


def envelope_observed(
    *,
    scope: TenantScope,
    workflow: Workflow,
    tenant_id: int | None = None,
    days: int = ENVELOPE_DAYS,
    now: datetime | None = None,
) -> ObservedEnvelope:
    """The envelope observed over the `days` complete UTC days before today."""
    now = now or timezone.now()
    end = datetime.combine(now.astimezone(UTC).date(), time.min, tzinfo=UTC)
    rows = scope.filter(
        UsageRollup.objects.filter(
            grain=UsageRollup.Grain.DAY,
            workflow=workflow,
            bucket_start__gte=end - timedelta(days=days),
            bucket_start__lt=end,
        )
    )
    if tenant_id is not None:
        rows = rows.filter(tenant_id=tenant_id)
    hist = None
    calls = cost = priced_calls = hist_calls = 0
    tenant_days: set[tuple[int, datetime]] = set()
    active: set[datetime] = set()
    tenants: set[int] = set()
    for row in rows.values_list("tenant_id", "bucket_start", "calls", "cost_nanos", "unpriced_calls", "token_hist"):
        t, day, n, c, unpriced, h = row
        calls += n
        cost += c
        priced_calls += n - unpriced
        hist = hist_add(hist, h)
        hist_calls += n if h else 0  # rows from before histograms were kept have none
        if n:
            tenant_days.add((t, day))
            active.add(day)
            tenants.add(t)
    counted = hist_calls
    return ObservedEnvelope(
        days=days,
        active_days=len(active),
        tenants=len(tenants),
        calls=calls,
        input_p50=percentile(hist["in"], counted, 0.5) if hist else None,
        input_p95=percentile(hist["in"], counted, 0.95) if hist else None,
        output_p50=percentile(hist["out"], counted, 0.5) if hist else None,
        output_p95=percentile(hist["out"], counted, 0.95) if hist else None,
        calls_per_day=round(calls / len(tenant_days)) if tenant_days else None,
        cost_per_call_nanos=cost // priced_calls if priced_calls else None,
    )
