"""Demo anomalies: the spiking tenant's chat assistant runs into a loop in the last closed hour, and the
hourly job opens its anomaly and starts its control, so /anomalies/ has something to show right after
`seed_demo` (a demo seeder registered in budgets/apps.py, after the demo budgets).

The demo's release-day tripling began before the hourly history the job keeps (ROLLUP_HOURLY_RETENTION_DAYS)
had a week of baseline, so it is, by now, that workflow's normal; the loop comes on top of it: the hour's
calls again four times over (at least 300), copies of that hour's own records. Idempotent: the loop's
records are added once (request ids `demo-northwind-chat-assistant-loop-...`, shaped like the demo's
own), and the job's run changes nothing when repeated.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta

from django.db import transaction

from budgets.services.anomalies import anomalies_detect_tenant
from finops.models import UsageRecord
from finops.services.ingest import usage_bulk_insert_new
from finops.services.rollups import rollup_recompute_day
from finops.services.seed.demo_specs import SPIKE_TENANT, SPIKE_WORKFLOW
from finops.usage_identity import usage_content_hash
from tenants.models import Tenant

# Shaped like the demo's own request ids (demo-<tenant>-<workflow>-<hour>-<n>), under a name no workflow has.
LOOP_PREFIX = f"demo-{SPIKE_TENANT}-{SPIKE_WORKFLOW}-loop-"
LOOP_FACTOR = 4
LOOP_MIN_CALLS = 300


def anomalies_demo_seed(*, now: datetime) -> int:
    """Add the loop (once) and run the anomaly job for the spiking tenant; returns the records added."""
    tenant = Tenant.objects.filter(slug=SPIKE_TENANT).first()
    if tenant is None:
        return 0
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    added = 0
    if not UsageRecord.objects.filter(tenant=tenant, request_id__startswith=LOOP_PREFIX).exists():
        templates = list(
            UsageRecord.objects.filter(
                tenant=tenant,
                workflow__slug=SPIKE_WORKFLOW,
                occurred_at__gte=hour,
                occurred_at__lt=hour + timedelta(hours=1),
            ).order_by("occurred_at", "id")[:500]
        )
        if templates:
            n = max(len(templates) * LOOP_FACTOR, LOOP_MIN_CALLS)
            rows = []
            for i in range(n):
                row = copy.copy(templates[i % len(templates)])
                row.pk = None
                row.request_id = f"{LOOP_PREFIX}{hour:%Y%m%d%H}-{i}"
                row.occurred_at = hour + timedelta(seconds=(i * 3590) // n)
                row.received_at = row.occurred_at + timedelta(seconds=1 + i % 8)
                row.reservation_id = None
                # Tagged like the live demo's incidents, so the demo's "normal rhythm" leaves it out.
                row.tags = {**(row.tags or {}), "incident": "runaway-loop"}
                row.content_hash = usage_content_hash(
                    workflow=SPIKE_WORKFLOW,
                    model_name=row.model_name,
                    environment=row.environment,
                    occurred_at=row.occurred_at,
                    input_tokens=row.input_tokens,
                    cached_input_tokens=row.cached_input_tokens,
                    cache_write_tokens=row.cache_write_tokens,
                    output_tokens=row.output_tokens,
                    reasoning_tokens=row.reasoning_tokens,
                    tags=row.tags,
                )
                rows.append(row)
            with transaction.atomic():
                added = usage_bulk_insert_new(rows)
                rollup_recompute_day(tenant_id=tenant.pk, day=hour.date())
    anomalies_detect_tenant(tenant=tenant, hour=hour, now=now)
    return added
