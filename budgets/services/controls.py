"""Controls: which are in force for a call, and starting and ending them (always audited)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from budgets.models import Budget, BudgetWindow, Control, ControlKind
from budgets.policy import PRIORITIES, control_params_validate
from budgets.state import state_changed
from finops.models import Environment, ModelTier, Workflow
from tenants.errors import ApplicationError
from tenants.models import Tenant
from tenants.scope import Actor
from tenants.services import audit_record

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


def _invalid(field: str, message: str) -> ApplicationError:
    return ApplicationError("invalid", message, details={field: [message]}, status_code=400)


def control_start(
    *,
    kind: str,
    source: str,
    reason: str,
    tenant: Tenant | None = None,
    workflow: Workflow | None = None,
    environment: str = "",
    tier: ModelTier | None = None,
    priorities: list[str] | None = None,
    params: dict | None = None,
    budget: Budget | None = None,
    window: BudgetWindow | None = None,
    rung: str = "",
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    actor: Actor = Actor.system(),
) -> Control:
    """Create a control (starting now unless `starts_at` is given) and audit it in the same transaction.

    `params` are checked as preflight reads them (budgets.policy.control_params_validate), so a control
    that starts can always be applied."""
    if kind not in ControlKind.values:
        raise _invalid("kind", f"kind must be one of {', '.join(ControlKind.values)}.")
    if source not in Control.Source.values:
        raise _invalid("source", f"source must be one of {', '.join(Control.Source.values)}.")
    if environment not in ("", *Environment.values):
        raise _invalid("environment", f"environment must be one of {', '.join(Environment.values)}.")
    priorities = list(priorities or [])
    if any(p not in PRIORITIES for p in priorities):
        raise _invalid("priorities", f"priorities must be a list of {', '.join(PRIORITIES)}.")
    try:
        params = control_params_validate(params)
    except ValueError as exc:
        raise _invalid("params", str(exc)) from None
    if not isinstance(reason, str) or not reason.strip():
        raise _invalid("reason", "Say why: the reason is shown with the control.")
    from_now = starts_at is None
    starts_at = timezone.now() if starts_at is None else starts_at
    if ends_at is not None and ends_at <= starts_at:
        raise _invalid("ends_at", "The end must be in the future." if from_now else "The end must be after the start.")
    with transaction.atomic():
        control = Control.objects.create(
            kind=kind,
            source=source,
            reason=reason,
            tenant=tenant,
            workflow=workflow,
            environment=environment,
            tier=tier,
            priorities=priorities,
            params=params,
            budget=budget,
            window=window,
            rung=rung,
            starts_at=starts_at,
            ends_at=ends_at,
            created_by=actor.actor_user,
        )
        audit_record(
            action="control.start",
            tenant=control.tenant,
            actor=actor,
            target=control,
            after=control_summary(control),
        )
    return control


def control_end(
    *, control: Control, reason: str, actor: Actor = Actor.system(), now: datetime | None = None
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
                actor=actor,
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
                        # Never None here (filtered on ends_at__lte); the check is for the type.
                        "ended_at": control.ends_at.isoformat() if control.ends_at is not None else None,
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
