"""A tenant's own rules for a shared workflow: today its approval threshold.

The workflow's threshold is the platform's rule; a tenant may only be stricter. A tenant threshold at
or above the workflow's would change nothing, so it is refused with the workflow's value in the
message instead of being stored and silently ignored. Every change is audited in its transaction.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.db import transaction

from finops.models import TenantWorkflowPolicy, Workflow
from finops.templatetags.money import usd_rate
from tenants.errors import ApplicationError
from tenants.models import Tenant
from tenants.scope import Actor
from tenants.services import audit_record

THRESHOLD_MAX = Decimal("99999999.9999")  # what the column (12 digits, 4 decimals) holds


def threshold_parse(raw: object) -> Decimal | None:
    """A threshold in USD from a form or a JSON body: None (or "") clears it; otherwise a finite,
    non-negative amount with at most 4 decimals that the column can hold."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise _invalid('Send the amount in USD as a string, e.g. "0.25", or null to clear it.')
    try:
        value = Decimal(raw.strip() if isinstance(raw, str) else raw)
    except InvalidOperation:
        raise _invalid(f"{raw!r} is not an amount in USD.") from None
    if not value.is_finite() or value < 0:
        raise _invalid("The threshold must be an amount of zero or more USD.")
    if value > THRESHOLD_MAX:
        raise _invalid(f"The threshold can be at most ${THRESHOLD_MAX:,}.")
    if value != value.quantize(Decimal("0.0001")):
        raise _invalid("The threshold has at most 4 decimals (a hundredth of a cent).")
    return value


def workflow_threshold_set(
    *, tenant: Tenant, workflow: Workflow, threshold: Decimal | None, actor: Actor
) -> TenantWorkflowPolicy | None:
    """Set (or with None clear) the tenant's approval threshold for the workflow; returns the policy row,
    or None once cleared. Preflight sees the change at once in this process (the row's signals)."""
    platform = workflow.approval_threshold_usd
    if threshold is not None:
        threshold = threshold.quantize(Decimal("0.0001"))  # as the column stores it
    if threshold is not None and platform is not None and threshold >= platform:
        raise _invalid(
            f"Workflow {workflow.slug} already holds runs above {usd_rate(platform)} for every tenant; "
            "a tenant's own threshold can only be lower."
        )
    rows = TenantWorkflowPolicy.objects.filter(tenant=tenant, workflow=workflow)
    with transaction.atomic():
        if threshold is None:
            policy = rows.select_for_update().first()
            if policy is None:
                return None
            audit_record(
                action="workflow_policy.clear", tenant=tenant, actor=actor, target=policy, before=_snapshot(policy)
            )
            policy.delete()
            return None
        # get_or_create absorbs a concurrent first set (the unique constraint); the row is then locked.
        _row, created = rows.get_or_create(tenant=tenant, workflow=workflow)
        policy = rows.select_for_update().get()
        before = None if created else _snapshot(policy)
        policy.approval_threshold_usd = threshold
        policy.updated_by = actor.actor_user
        policy.save()
        audit_record(
            action="workflow_policy.set",
            tenant=tenant,
            actor=actor,
            target=policy,
            before=before,
            after=_snapshot(policy),
        )
    return policy


def _snapshot(policy: TenantWorkflowPolicy | None) -> dict | None:
    if policy is None:
        return None
    threshold = policy.approval_threshold_usd
    return {
        "workflow_id": policy.workflow_id,
        "approval_threshold_usd": str(threshold) if threshold is not None else None,
    }


def _invalid(message: str) -> ApplicationError:
    return ApplicationError("invalid", message, details={"approval_threshold_usd": [message]})
