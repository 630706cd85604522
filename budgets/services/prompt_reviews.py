"""Prompt-change reviews on budgets' side: a grown prompt version (finops.services.prompts) waits on a
`prompt_change` approval request, and preflight answers for a version that is under review or rejected.

The reviewer is registered into finops' `prompt_reviewer` hook (budgets/apps.py), since finops never
imports budgets. Deciding the request (`approval_decide`, four eyes) activates or rejects the version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import OuterRef, Subquery

from budgets.models import ApprovalRequest
from finops.catalog import get_catalog
from finops.hooks import PromptReview
from finops.models import PromptVersion
from tenants.scope import Actor

from .approvals import approval_open

if TYPE_CHECKING:
    from budgets.state import WorkflowEntry

    from .preflight import PreflightDecision, PreflightInput


class ApprovalPromptReviewer:
    """finops' PromptReviewer: a review is a `prompt_change` approval request naming the version."""

    def open(self, *, version: PromptVersion, reasons: list[str], actor: Actor) -> PromptReview:
        entry = get_catalog().resolve(version.model_name)
        commit = f" (commit {version.git_commit})" if version.git_commit else ""
        approval = approval_open(
            tenant=version.tenant,
            workflow_id=version.workflow_id,
            model_id=entry.id if entry is not None else None,
            environment="",
            estimated_cost_nanos=version.estimated_cost_per_call_nanos,
            estimated_tokens=version.input_tokens,
            reasons=reasons,
            actor=actor,
            justification=f"Prompt version {version.label} of {version.workflow.slug}{commit}.",
            kind=ApprovalRequest.Kind.PROMPT_CHANGE,
            prompt_version_id=version.pk,
            now=version.created_at,
        )
        return PromptReview(id=str(approval.pk), status=approval.status)

    def latest(self, *, version_ids: list[int]) -> dict[int, PromptReview]:
        rows = (
            ApprovalRequest.objects.filter(kind=ApprovalRequest.Kind.PROMPT_CHANGE, prompt_version_id__in=version_ids)
            .order_by("prompt_version_id", "-created_at")
            .values_list("prompt_version_id", "pk", "status")
        )
        found: dict[int, PromptReview] = {}
        for version_id, pk, status in rows:
            if version_id is not None:
                found.setdefault(version_id, PromptReview(id=str(pk), status=status))
        return found


PROMPT_REVIEWER = ApprovalPromptReviewer()


def preflight_prompt_verdict(req: PreflightInput, workflow: WorkflowEntry | None, out: PreflightDecision) -> str | None:
    """For a preflight naming `prompt_version`: "needs_approval" while the version is under review (with
    its review request's id), "deny" once it was rejected, None otherwise (active, or not registered).

    One query on the (tenant, workflow, label) unique index, its review request found in the same statement.
    """
    if workflow is None:
        out.reasons.append(f"Prompt version '{req.prompt_version}' is not checked: the workflow is not registered.")
        return None
    latest = ApprovalRequest.objects.filter(
        prompt_version=OuterRef("pk"), kind=ApprovalRequest.Kind.PROMPT_CHANGE
    ).order_by("-created_at")
    row = (
        PromptVersion.objects.filter(tenant_id=req.tenant.pk, workflow_id=workflow.pk, label=req.prompt_version)
        .annotate(review_id=Subquery(latest.values("pk")[:1]), review_status=Subquery(latest.values("status")[:1]))
        .values_list("status", "review_id", "review_status")
        .first()
    )
    if row is None:
        out.reasons.append(f"Prompt version '{req.prompt_version}' of {workflow.slug} is not registered.")
        return None
    status, review_id, review_status = row
    name = f"Prompt version '{req.prompt_version}' of {workflow.slug}"
    if status == PromptVersion.Status.REJECTED:
        out.reasons.append(f"{name} was rejected in review: send an approved version.")
        return "deny"
    if status != PromptVersion.Status.UNDER_REVIEW:
        return None
    if review_id is not None:
        out.approval_id, out.approval_status = str(review_id), review_status
    if review_status == ApprovalRequest.Status.PENDING:
        out.reasons.append(f"{name} is under review: it runs once an approver approves request {review_id}.")
    else:
        out.reasons.append(
            f"{name} is under review but its request is {review_status or 'missing'}: register the prompt again "
            "under a new label to ask anew."
        )
    return "needs_approval"
