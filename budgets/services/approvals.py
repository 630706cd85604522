"""Approval requests: opened by preflight or asked for directly, decided once by someone else, bound to
what was approved, consumed once, cancelled by their requester, expired by the beat. All audited.

Four eyes: the person behind a request (the signed-in person, or the person who created the
requesting API key) is fixed when it opens and never decides it, whatever their role.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from budgets.models import ApprovalRequest
from finops.models import Workflow
from finops.services.prompts import prompt_version_decide
from tenants.errors import ApplicationError
from tenants.models import Tenant
from tenants.scope import Actor
from tenants.services import audit_record

from .approval_notices import approval_notify

JUSTIFICATION_MAX = 2000


def approval_requester_id(actor: Actor) -> int | None:
    """The person a request counts as made by: the person acting, or the person behind the key."""
    if actor.actor_user is not None:
        return actor.actor_user.pk
    if actor.api_key is not None:
        return actor.api_key.created_by_id
    return None


def approval_requesters(approval: ApprovalRequest) -> set[int]:
    """Who never decides this request: the requester as fixed when it opened (kept in its rules too, so
    it holds once the person's row was deleted and `requested_by` went NULL)."""
    ids = (approval.requested_by_id, (approval.rules or {}).get("requester_id"))
    return {int(i) for i in ids if i is not None}


def _snapshot(approval: ApprovalRequest) -> dict:
    return {
        "kind": approval.kind,
        "status": approval.status,
        "workflow_id": approval.workflow_id,
        "model_id": approval.model_id,
        "environment": approval.environment,
        "estimated_cost_nanos": approval.estimated_cost_nanos,
        "estimated_tokens": approval.estimated_tokens,
        "requested_by_id": approval.requested_by_id,
        "requested_by_key_id": approval.requested_by_key_id,
        "rules": approval.rules,
    }


def approval_open(
    *,
    tenant: Tenant,
    workflow_id: int | None,
    model_id: int | None,
    environment: str,
    estimated_cost_nanos: int | None,
    estimated_tokens: int | None,
    reasons: list[str],
    actor: Actor,
    justification: str = "",
    kind: str = ApprovalRequest.Kind.WORKFLOW_RUN,
    now: datetime | None = None,
    prompt_version_id: int | None = None,
    extra: Mapping[str, Any] | None = None,
    held_by: list[dict] | None = None,
) -> ApprovalRequest:
    """Open a pending request (audited) and tell the tenant's approvers through its channels. Preflight
    calls it when a run needs a person's go-ahead; `extra` holds a kind's own fields (an increase's),
    `held_by` the rules that held the run (a threshold, a control, a hard limit)."""
    now = now or timezone.now()
    requester_id = approval_requester_id(actor)
    rules = {
        "held_by": list(held_by or ()),
        # Four eyes, fixed now: this person never decides it, whoever created or holds the key later.
        "requester_id": requester_id,
        "deciders": "the tenant's approvers and admins, and operators; never the requester",
        "ttl_seconds": settings.APPROVAL_TTL_SECONDS,
    }
    if kind == ApprovalRequest.Kind.WORKFLOW_RUN:
        rules["binding"] = {
            "workflow_id": workflow_id,
            "environment": environment,
            "model_id": model_id,
            "cheaper_tiers": True,
            "max_cost_nanos": estimated_cost_nanos,
            "max_tokens": estimated_tokens if estimated_cost_nanos is None else None,
            "uses": 1,
        }
    with transaction.atomic():
        approval = ApprovalRequest.objects.create(
            kind=kind,
            tenant=tenant,
            workflow_id=workflow_id,
            model_id=model_id,
            environment=environment,
            estimated_cost_nanos=estimated_cost_nanos,
            estimated_tokens=estimated_tokens,
            reasons=reasons,
            justification=justification,
            requested_by_key=actor.api_key,
            requested_by_id=requester_id,
            prompt_version_id=prompt_version_id,
            rules=rules,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.APPROVAL_TTL_SECONDS),
            **(extra or {}),
        )
        audit_record(action="approval.open", tenant=tenant, actor=actor, target=approval, after=_snapshot(approval))
        approval_notify(approval, event="opened", now=now)
    return approval


def approval_ask(
    *,
    tenant: Tenant,
    workflow: Workflow | None,
    model_id: int,
    environment: str,
    max_cost_nanos: int | None,
    max_tokens: int | None,
    justification: str,
    actor: Actor,
) -> ApprovalRequest:
    """A run asked for ahead of time (a batch job), with a justification and the most it may cost."""
    justification = (justification or "").strip()
    errors: dict[str, list[str]] = {}
    if not justification:
        errors["justification"] = ["Say why this run is needed: approvers decide on it."]
    elif len(justification) > JUSTIFICATION_MAX:
        errors["justification"] = [f"At most {JUSTIFICATION_MAX:,} characters."]
    if max_cost_nanos is None and max_tokens is None:
        errors["max_cost_usd"] = ["Give the most the run may cost (max_cost_usd) or use (max_tokens)."]
    for name, value in (("max_cost_usd", max_cost_nanos), ("max_tokens", max_tokens)):
        if value is not None and value <= 0:
            errors[name] = ["Must be more than zero."]
    if errors:
        raise ApplicationError("invalid", "The approval request is not valid.", details=errors)
    return approval_open(
        tenant=tenant,
        workflow_id=workflow.pk if workflow is not None else None,
        model_id=model_id,
        environment=environment,
        estimated_cost_nanos=max_cost_nanos,
        estimated_tokens=max_tokens,
        reasons=["Asked for ahead of the run."],
        justification=justification,
        actor=actor,
    )


def approval_decide(*, approval: ApprovalRequest, approve: bool, actor: Actor, comment: str = "") -> ApprovalRequest:
    """Move a pending, unexpired request to approved or rejected, once; anything else is a 409 saying why.

    Only people decide (`Operation.DECIDE`), and never the person who asked (403), operators included.
    Two people deciding at the same moment yield one decision: the update is conditional on the status.
    """
    user = actor.actor_user
    if user is None:
        raise ApplicationError("permission_denied", "Only a signed-in person decides requests.", status_code=403)
    if user.pk in approval_requesters(approval):
        raise ApplicationError(
            "approval_own_request",
            "You asked for this run: another approver of the tenant must decide it (four eyes).",
            status_code=403,
        )
    now = timezone.now()
    status = ApprovalRequest.Status.APPROVED if approve else ApprovalRequest.Status.REJECTED
    with transaction.atomic():
        changed = ApprovalRequest.objects.filter(
            pk=approval.pk, status=ApprovalRequest.Status.PENDING, expires_at__gt=now
        ).update(status=status, decided_by=user, decided_at=now, comment=comment)
        approval.refresh_from_db()
        if not changed:
            state = "expired" if approval.status == ApprovalRequest.Status.PENDING else approval.status
            raise ApplicationError(
                "approval_not_pending", f"This request is {state}; it cannot be decided now.", status_code=409
            )
        audit_record(
            action=f"approval.{status}",
            tenant=approval.tenant,
            actor=actor,
            target=approval,
            before={"status": ApprovalRequest.Status.PENDING},
            after={"status": status, "comment": comment},
        )
        _apply_decision(approval, approve=approve, actor=actor)
        approval_notify(approval, event=status, now=now)
    return approval


def _apply_decision(approval: ApprovalRequest, *, approve: bool, actor: Actor) -> None:
    """What a decision changes besides the request, in its transaction (a failure undoes the decision)."""
    if approval.kind == ApprovalRequest.Kind.BUDGET_INCREASE and approve:
        from .budget_increases import budget_increase_apply  # it imports this module

        budget_increase_apply(approval=approval, actor=actor)
    if approval.kind == ApprovalRequest.Kind.PROMPT_CHANGE and approval.prompt_version_id is not None:
        prompt_version_decide(version_id=approval.prompt_version_id, approve=approve, actor=actor)


def approval_cancel(*, approval: ApprovalRequest, actor: Actor) -> ApprovalRequest:
    """The requester withdraws a pending or approved-but-unused request (audited); others get 403."""
    requester = approval_requester_id(actor)
    own_key = actor.api_key is not None and actor.api_key.pk == approval.requested_by_key_id
    if not own_key and (requester is None or requester != approval.requested_by_id):
        raise ApplicationError(
            "permission_denied", "Only whoever asked for this request can cancel it.", status_code=403
        )
    now = timezone.now()
    with transaction.atomic():
        before = approval.status
        changed = ApprovalRequest.objects.filter(_LIVE, pk=approval.pk).update(
            status=ApprovalRequest.Status.CANCELLED, decided_at=now
        )
        approval.refresh_from_db()
        if not changed:
            raise ApplicationError(
                "approval_not_pending", f"This request is {approval.status}; it cannot be cancelled.", status_code=409
            )
        audit_record(
            action="approval.cancel",
            tenant=approval.tenant,
            actor=actor,
            target=approval,
            before={"status": before},
            after={"status": ApprovalRequest.Status.CANCELLED},
        )
        _withdrawn(approval, actor=actor)
        approval_notify(approval, event=ApprovalRequest.Status.CANCELLED, now=now)
    return approval


# What can still be cancelled or expire: a pending request, or an approved run not used yet (an approved
# budget increase or prompt change was applied when it was decided; it is history, not a hold).
_LIVE = Q(status=ApprovalRequest.Status.PENDING) | Q(
    status=ApprovalRequest.Status.APPROVED, kind=ApprovalRequest.Kind.WORKFLOW_RUN
)


def _withdrawn(approval: ApprovalRequest, *, actor: Actor) -> None:
    """A prompt version whose review was cancelled or expired is not left waiting forever: it is rejected
    (register the prompt again under a new label to ask once more)."""
    if approval.kind == ApprovalRequest.Kind.PROMPT_CHANGE and approval.prompt_version_id is not None:
        prompt_version_decide(version_id=approval.prompt_version_id, approve=False, actor=actor)


def approval_consume(*, approval: ApprovalRequest, actor: Actor, now: datetime) -> bool:
    """Use an approved request for the run it was approved for, once (audited). False: used meanwhile."""
    changed = ApprovalRequest.objects.filter(
        pk=approval.pk, status=ApprovalRequest.Status.APPROVED, expires_at__gt=now
    ).update(status=ApprovalRequest.Status.CONSUMED)
    if changed:
        audit_record(
            action="approval.consume",
            tenant_id=approval.tenant_id,
            actor=actor,
            target=approval,
            before={"status": ApprovalRequest.Status.APPROVED},
            after={"status": ApprovalRequest.Status.CONSUMED},
        )
    return bool(changed)


def approvals_expire(*, now: datetime | None = None) -> int:
    """Mark pending and approved-but-unused requests past their expiry as expired, one audit event each."""
    now = now or timezone.now()
    expired = 0
    for approval in ApprovalRequest.objects.filter(_LIVE, expires_at__lte=now).only(
        "pk", "tenant_id", "status", "kind", "prompt_version_id"
    ):
        with transaction.atomic():
            if ApprovalRequest.objects.filter(_LIVE, pk=approval.pk).update(status=ApprovalRequest.Status.EXPIRED):
                expired += 1
                _withdrawn(approval, actor=Actor.system())
                audit_record(
                    action="approval.expire",
                    tenant_id=approval.tenant_id,
                    target=approval,
                    before={"status": approval.status},
                    after={"status": ApprovalRequest.Status.EXPIRED},
                )
    return expired
