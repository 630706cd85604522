"""The approvals page: runs preflight held for a person's go-ahead, open ones first, then the decided ones.

A tenant's approvers and admins, and operators, decide its approval requests (`Operation.DECIDE`).
Deciding goes through `approval_decide`, which is audited and refuses a request that is no longer pending.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from budgets.models import ApprovalRequest
from budgets.selectors import approval_get, approvals_visible
from budgets.services.approvals import approval_decide
from tenants.errors import ApplicationError
from tenants.scope import Actor, Operation
from tenants.scoping import tenant_page

from .layout import budget_layout_context

APPROVALS_SHOWN = 200
COMMENT_MAX = 2000  # as the API's decision serializer


@tenant_page
def approvals_list(request):
    scope = request.scope
    now = timezone.now()
    rows = list(
        approvals_visible(scope=scope, now=now)[: APPROVALS_SHOWN + 1]
    )
    pending = [a for a in rows[:APPROVALS_SHOWN] if a.closed == 0]
    context = budget_layout_context(request, scope)
    context.update(
        pending=pending,
        decided=[a for a in rows[:APPROVALS_SHOWN] if a.closed != 0],
        more=len(rows) > APPROVALS_SHOWN,
        # Four eyes: nobody sees decide buttons on a request they asked for (the service refuses it too).
        can_decide={
            a.pk
            for a in pending
            if scope.may(Operation.DECIDE, a.tenant_id) and a.requested_by_id != request.user.pk
        },
        comment_max=COMMENT_MAX,
        now=now,
    )
    return render(request, "budgets/approvals_list.html", context)


@tenant_page
@require_POST
def approval_approve(request, approval_id):
    return _decide(request, approval_id, approve=True)


@tenant_page
@require_POST
def approval_reject(request, approval_id):
    return _decide(request, approval_id, approve=False)


def _decide(request, approval_id, *, approve: bool):
    scope = request.scope
    approval = approval_get(approval_id=approval_id, scope=scope)
    if approval is None:
        raise Http404("No such approval request.")
    if not scope.may(Operation.DECIDE, approval.tenant_id):
        raise PermissionDenied("Only the tenant's approvers and admins, and operators, decide its approval requests.")
    back = redirect(reverse("approvals_list") + scope.query)
    comment = (request.POST.get("comment") or "").strip()
    if len(comment) > COMMENT_MAX:
        messages.error(request, f"The comment is longer than {COMMENT_MAX:,} characters; nothing was decided.")
        return back
    try:
        approval = approval_decide(approval=approval, approve=approve, actor=Actor(user=request.user), comment=comment)
    except ApplicationError as error:
        if error.code != "approval_not_pending":  # four eyes, or an increase whose window ended
            messages.error(request, f"{error.message} Nothing was decided.")
            return back
        messages.warning(
            request, f"Nothing changed: the request for {_what(approval)} is no longer pending ({_state(approval)})."
        )
        return back
    if approve and approval.kind != ApprovalRequest.Kind.WORKFLOW_RUN:
        messages.success(request, f"Approved {_what(approval)}: it applies now.")
    elif approve:
        messages.success(
            request,
            f"Approved {_what(approval)}: the service's next preflight with approval_id {approval.pk} will run "
            f"(once, until {approval.expires_at:%Y-%m-%d %H:%M} UTC).",
        )
    elif approval.kind != ApprovalRequest.Kind.WORKFLOW_RUN:
        messages.success(request, f"Rejected {_what(approval)}: nothing changes.")
    else:
        messages.success(
            request,
            f"Rejected {_what(approval)}: the service's next preflight with approval_id {approval.pk} is refused.",
        )
    return back


def _what(approval: ApprovalRequest) -> str:
    """ "the run of chat-assistant on gpt-4.1 for Northwind Traders", as far as the request says."""
    if approval.kind == ApprovalRequest.Kind.BUDGET_INCREASE:
        return f"the increase of {approval.budget.name if approval.budget else 'a budget'} for {approval.tenant.name}"
    if approval.kind == ApprovalRequest.Kind.PROMPT_CHANGE:
        label = approval.prompt_version.label if approval.prompt_version else "a new prompt"
        return f"prompt version {label} for {approval.tenant.name}"
    what = f"the run of {approval.workflow.slug}" if approval.workflow is not None else "the run"
    if approval.model is not None:
        what += f" on {approval.model.name}"
    return f"{what} for {approval.tenant.name}"


def _state(approval: ApprovalRequest) -> str:
    """Where a request that can no longer be decided stands, after `approval_decide` reloaded it."""
    if approval.status == ApprovalRequest.Status.PENDING:
        return "it expired; preflight opens a new one when the run is asked for again"
    state = f"already {approval.status}"
    if approval.decided_by is not None:
        state += f" by {approval.decided_by.get_username()}"
    return state
