"""Controls: which are in force for a call, and starting and ending them (always audited)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from budgets.models import Control, ControlKind
from tenants.services import audit_record

from .state import state_changed

# Most restrictive first: the order preflight reports and applies them in.
RESTRICTIVENESS = [
    ControlKind.DENY,
    ControlKind.REQUIRE_APPROVAL,
    ControlKind.DOWNGRADE_TIER,
    ControlKind.COMPRESS_CONTEXT,
    ControlKind.CAP_OUTPUT_TOKENS,
]
_RANK = {kind: i for i, kind in enumerate(RESTRICTIVENESS)}


@dataclass(frozen=True, slots=True)
class CallScope:
    tenant_id: int
    workflow_id: int | None
    environment: str
    tier_id: int | None
    priority: str


def active_controls_q(now: datetime) -> Q:
    return Q(starts_at__lte=now) & (Q(ends_at__isnull=True) | Q(ends_at__gt=now))


def controls_for_call(call: CallScope, *, now: datetime, controls: Iterable) -> list:
    """Of `controls` (preflight's cached list, budgets.services.state), those in force at `now` whose
    scope matches the call, most restrictive first."""
    matched = [
        c
        for c in controls
        if c.starts_at <= now
        and (c.ends_at is None or c.ends_at > now)
        and (c.tenant_id is None or c.tenant_id == call.tenant_id)
        and (c.workflow_id is None or c.workflow_id == call.workflow_id)
        and (not c.environment or c.environment == call.environment)
        and (c.tier_id is None or c.tier_id == call.tier_id)
        and (not c.priorities or call.priority in c.priorities)
    ]
    matched.sort(key=lambda c: (_RANK[c.kind], c.starts_at, c.pk))
    return matched


def control_start(*, actor_user=None, actor_key=None, **fields) -> Control:
    """Create a control (starting now unless `starts_at` is given) and audit it in the same transaction."""
    fields.setdefault("starts_at", timezone.now())
    with transaction.atomic():
        control = Control.objects.create(created_by=actor_user if getattr(actor_user, "pk", None) else None, **fields)
        audit_record(
            action="control.start",
            tenant=control.tenant,
            actor_user=actor_user,
            actor_key=actor_key,
            target=control,
            after=control_summary(control),
        )
    return control


def control_end(
    *, control: Control, reason: str, actor_user=None, actor_key=None, now: datetime | None = None
) -> Control:
    """End an active control now, with a reason, audited. Ending an ended control changes nothing."""
    now = now or timezone.now()
    with transaction.atomic():
        updated = (
            Control.objects.filter(pk=control.pk)
            .filter(Q(ends_at__isnull=True) | Q(ends_at__gt=now))
            .update(ends_at=now, ended_reason=reason, end_audited=True, updated_at=now)
        )
        control.refresh_from_db()
        state_changed()
        if updated:
            audit_record(
                action="control.end",
                tenant=control.tenant,
                actor_user=actor_user,
                actor_key=actor_key,
                target=control,
                after={"reason": reason, "ended_at": now.isoformat()},
            )
    return control


def controls_audit_lapsed(*, now: datetime | None = None) -> int:
    """Audit the end of controls that ended by themselves (their window reset) and were not yet audited."""
    now = now or timezone.now()
    count = 0
    for control in Control.objects.filter(ends_at__lte=now, end_audited=False).select_related("tenant"):
        with transaction.atomic():
            if Control.objects.filter(pk=control.pk, end_audited=False).update(
                end_audited=True, ended_reason=control.ended_reason or "The budget window ended."
            ):
                audit_record(
                    action="control.end",
                    tenant=control.tenant,
                    target=control,
                    after={
                        "reason": control.ended_reason or "The budget window ended.",
                        "ended_at": control.ends_at.isoformat(),
                    },
                )
                count += 1
    return count


def control_summary(control: Control) -> dict:
    return {
        "kind": control.kind,
        "scope": control.scope_label(),
        "priorities": control.priorities,
        "params": control.params,
        "source": control.source,
        "budget_id": control.budget_id,
        "reason": control.reason,
        "starts_at": control.starts_at.isoformat(),
        "ends_at": control.ends_at.isoformat() if control.ends_at else None,
    }
