"""The "variance from baseline" panel the overview, tenant and workflow pages share."""

from __future__ import annotations

from django.conf import settings

from finops.selectors.variance import variance_now
from tenants.scope import TenantScope


def variance_context(scope: TenantScope, *, tenant_id: int | None = None, workflow_id: int | None = None) -> dict:
    variance = variance_now(scope=scope, tenant_id=tenant_id, workflow_id=workflow_id)
    return {
        "variance": variance,
        "variance_rows": [variance.hour, variance.today],
        "variance_days": settings.ROLLUP_HOURLY_RETENTION_DAYS,
    }
