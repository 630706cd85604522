"""Preflight's side of approvals: the approval a call presents (is it approved, live, and does it cover
this call?) and the request a held call opens, or reuses while one is open for the same call.

An approval is bound to what was approved: the tenant, the workflow (or none), the environment, the
model or one of a cheaper tier, and an amount (the estimate in USD when the call was priced, else its
tokens). A preflight outside any of these is not covered and asks for a new approval.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from budgets.models import ApprovalRequest
from finops.catalog import CatalogSnapshot, ModelEntry
from finops.pricing import nanos_to_usd
from tenants.scope import Actor

from .approvals import approval_open, approval_requester_id

if TYPE_CHECKING:
    from budgets.state import WorkflowEntry

    from .preflight import PreflightDecision, PreflightInput


def approval_presented(req: PreflightInput, out: PreflightDecision, now: datetime) -> ApprovalRequest | None:
    """The approved, unexpired request the call presents; otherwise say why not and return None."""
    if not req.approval_id:
        return None
    approval = ApprovalRequest.objects.filter(pk=req.approval_id, tenant=req.tenant).first()
    if approval is None:
        out.reasons.append("The approval_id is unknown for this tenant.")
        return None
    out.approval_id, out.approval_status = str(approval.pk), approval.status
    if approval.kind != ApprovalRequest.Kind.WORKFLOW_RUN:
        out.reasons.append(f"Approval {approval.pk} is a {approval.kind} request, not a run's.")
        return None
    if approval.status != ApprovalRequest.Status.APPROVED:
        out.reasons.append(f"Approval {approval.pk} is {approval.status}.")
        return None
    if approval.expires_at <= now:
        out.reasons.append(f"Approval {approval.pk} expired at {approval.expires_at:%Y-%m-%d %H:%M} UTC.")
        return None
    return approval


def approval_outside_binding(
    approval: ApprovalRequest,
    *,
    catalog: CatalogSnapshot,
    entry: ModelEntry | None,
    workflow: WorkflowEntry | None,
    environment: str,
    cost: int | None,
    tokens: int,
) -> str | None:
    """Why the approval does not cover this call (None: it does)."""
    name = f"Approval {approval.pk}"
    workflow_id = workflow.pk if workflow is not None else None
    if approval.workflow_id != workflow_id:
        return f"{name} is for another workflow than this call's."
    if approval.environment and approval.environment != environment:
        return f"{name} is for {approval.environment}, not {environment}."
    if approval.model_id is not None:
        approved = catalog.by_id.get(approval.model_id)
        same = entry is not None and entry.id == approval.model_id
        cheaper = entry is not None and approved is not None and entry.tier_rank < approved.tier_rank
        if not (same or cheaper):
            what = approved.name if approved is not None else "another model"
            return f"{name} is for {what} (or a cheaper tier), not {entry.name if entry else 'this model'}."
    elif entry is not None:
        return f"{name} was for a model the catalog did not know, not {entry.name}."
    if approval.estimated_cost_nanos is not None:
        if cost is None or cost > approval.estimated_cost_nanos:
            asked = f"${nanos_to_usd(cost)}" if cost is not None else "an unknown cost"
            return f"{name} covers up to ${nanos_to_usd(approval.estimated_cost_nanos)}; this call needs {asked}."
    elif approval.estimated_tokens is not None and tokens > approval.estimated_tokens:
        return f"{name} covers up to {approval.estimated_tokens:,} tokens; this call needs {tokens:,}."
    return None


def approval_pending_for(
    req: PreflightInput,
    *,
    out: PreflightDecision,
    entry: ModelEntry | None,
    workflow: WorkflowEntry | None,
    cost: int | None,
    tokens: int,
    now: datetime,
    rules: list[dict] | None = None,
) -> ApprovalRequest:
    """The pending request this held call waits on: the one it presented, or an open one for the same
    call by the same requester (a retrying service must not flood approvers), or a new one."""
    pending = None
    if out.approval_id and out.approval_status == ApprovalRequest.Status.PENDING:
        pending = ApprovalRequest.objects.filter(pk=out.approval_id, tenant=req.tenant).first()
    actor = Actor(user=req.requested_by, api_key=req.api_key)
    if pending is None:
        # Django reads `workflow_id=None` as IS NULL; django-stubs' lookup check wrongly rejects None for
        # this FK's _id (it accepts it for model_id).
        pending = (
            ApprovalRequest.objects.filter(  # type: ignore[misc]
                kind=ApprovalRequest.Kind.WORKFLOW_RUN,
                tenant=req.tenant,
                workflow_id=workflow.pk if workflow else None,
                model_id=entry.id if entry else None,
                environment=req.environment,
                status=ApprovalRequest.Status.PENDING,
                expires_at__gt=now,
                requested_by_key=req.api_key,
                requested_by_id=approval_requester_id(actor),
            )
            .order_by("-created_at")
            .first()
        )
        if pending is not None and (
            (cost is not None and (pending.estimated_cost_nanos or 0) < cost)
            or (cost is None and (pending.estimated_tokens or 0) < tokens)
        ):
            pending = None  # the open one would not cover this bigger call
    if pending is None:
        pending = approval_open(
            tenant=req.tenant,
            workflow_id=workflow.pk if workflow else None,
            model_id=entry.id if entry else None,
            environment=req.environment,
            estimated_cost_nanos=cost,
            estimated_tokens=tokens,
            reasons=list(out.reasons),
            actor=actor,
            now=now,
            held_by=rules or [],
        )
    return pending
