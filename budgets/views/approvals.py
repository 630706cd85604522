"""The approvals queue, one request's page, and the decide and cancel endpoints they post to.

A tenant's approvers and admins, and operators, decide its approval requests (`Operation.DECIDE`).
Deciding goes through `approval_decide`, which is audited and refuses a request that is no longer pending
or that the deciding person asked for (four eyes); the requester may withdraw it (`approval_cancel`).
"""

from __future__ import annotations

from decimal import Decimal

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from budgets.forms import ApprovalFilterForm
from budgets.models import ApprovalRequest, Budget
from budgets.selectors import (
    APPROVAL_EVENTS,
    approval_budget_burns,
    approval_get,
    approval_history,
    approval_workflows,
    approvals_queue,
    approvals_visible,
    budget_burn,
    workflow_recent_usage,
)
from budgets.services.approvals import approval_cancel as approval_withdraw
from budgets.services.approvals import approval_decide, approval_requesters
from budgets.views.csv_tables import APPROVAL_COLUMNS, approval_rows
from finops.selectors.catalog import catalog_model_get
from finops.selectors.prompts import prompt_projection, prompt_version_baseline, prompt_version_text
from finops.views.prompts import prompt_diff
from tenants.csv_safe import csv_download, wants_csv
from tenants.errors import ApplicationError
from tenants.scope import Actor, Operation, TenantScope
from tenants.scoping import tenant_page

from .layout import budget_layout_context

APPROVALS_SHOWN = 200
COMMENT_MAX = 2000  # as the API's decision serializer


@tenant_page
def approvals_list(request):
    scope = request.scope
    now = timezone.now()
    form = ApprovalFilterForm(request.GET, workflows=approval_workflows(scope=scope))
    filters = form.filters()
    rows = list(approvals_queue(scope=scope, filters=filters, now=now)[: APPROVALS_SHOWN + 1])
    pending = [a for a in rows[:APPROVALS_SHOWN] if a.closed == 0]
    if wants_csv(request):
        shown = pending + [a for a in rows[:APPROVALS_SHOWN] if a.closed != 0]
        return csv_download(name="approvals", scope=scope, header=APPROVAL_COLUMNS, rows=approval_rows(shown))
    context = budget_layout_context(request, scope)
    context.update(
        pending=pending,
        decided=[a for a in rows[:APPROVALS_SHOWN] if a.closed != 0],
        more=len(rows) > APPROVALS_SHOWN,
        # Four eyes: nobody sees decide buttons on a request they asked for (the service refuses it too).
        can_decide={
            a.pk
            for a in pending
            if scope.may(Operation.DECIDE, a.tenant_id) and request.user.pk not in approval_requesters(a)
        },
        comment_max=COMMENT_MAX,
        now=now,
        form=form,
        filtered=filters.any,
        switcher_keep=form.given,
        # What the filters left out, said only when they left nothing (one COUNT).
        filter_words=form.described() if filters.any and not rows else [],
        unfiltered_count=approvals_visible(scope=scope, now=now).count() if filters.any and not rows else 0,
        here=request.get_full_path(),
    )
    return render(request, "budgets/approvals_list.html", context)


RECENT_DAYS = 7  # "the recent cost per call" a run's estimate is set against


def _visible(scope: TenantScope, approval_id) -> ApprovalRequest:
    approval = approval_get(approval_id=approval_id, scope=scope)
    if approval is None:
        raise Http404("No such approval request.")
    return approval


@tenant_page
@require_GET
def approval_detail(request, approval_id):
    """What a person needs to decide one request: what it is for, what it would cost against what,
    the budgets it counts against, and what happened to it so far."""
    scope = request.scope
    approval = _visible(scope, approval_id)
    now = timezone.now()
    is_open = approval.status == ApprovalRequest.Status.PENDING and approval.expires_at > now
    is_requester = request.user.pk in approval_requesters(approval)
    # What `approval_cancel` still withdraws: a pending request, or an approved run not used yet.
    live = is_open or (
        approval.status == ApprovalRequest.Status.APPROVED
        and approval.kind == ApprovalRequest.Kind.WORKFLOW_RUN
        and approval.expires_at > now
    )
    context = budget_layout_context(request, scope, switcher_action=reverse("approvals_list"))
    context.update(
        approval=approval,
        now=now,
        is_open=is_open,
        is_requester=is_requester,
        can_decide=is_open and not is_requester and scope.may(Operation.DECIDE, approval.tenant_id),
        can_cancel=live and is_requester,
        comment_max=COMMENT_MAX,
        here=request.get_full_path(),
        burns=approval_budget_burns(approval=approval, scope=scope, now=now),
        history=[(event, APPROVAL_EVENTS[event.action]) for event in approval_history(approval=approval, scope=scope)],
        rules=_rules_lines(approval),
    )
    if approval.kind == ApprovalRequest.Kind.WORKFLOW_RUN:
        context.update(_run_context(approval, now))
    elif approval.kind == ApprovalRequest.Kind.BUDGET_INCREASE and approval.budget is not None:
        context.update(_increase_context(approval, approval.budget, now))
    elif approval.kind == ApprovalRequest.Kind.PROMPT_CHANGE and approval.prompt_version is not None:
        context.update(_prompt_context(approval))
    return render(request, "budgets/approval_detail.html", context)


def _rules_lines(approval: ApprovalRequest) -> list[str]:
    """The rules kept on the request when it opened, in words (older requests kept none)."""
    rules = approval.rules or {}
    lines = []
    for held in rules.get("held_by", ()):
        above = f" above ${Decimal(held['above_usd']).normalize():,f}" if held.get("above_usd") else ""
        lines.append(
            {
                "workflow_threshold": f"Held by the workflow's approval threshold{above}.",
                "tenant_threshold": f"Held by the tenant's own threshold for this workflow{above}.",
                "control": f"Held by require-approval control #{held.get('control_id')}{above}.",
                "hard_limit": f"Held by the hard limit of budget #{held.get('budget_id')}, whose action is to ask.",
            }.get(held.get("rule"), f"Held by {held.get('rule')}.")
        )
    if "requester_id" in rules:
        who = approval.requested_by.get_username() if approval.requested_by is not None else None
        lines.append(
            f"Four eyes: {who} never decides it, whatever their role."
            if who
            else "Four eyes: whoever asked never decides it; a request from a key nobody created may be decided "
            "by any approver of the tenant."
        )
    if rules.get("ttl_seconds"):
        lines.append(f"Open for {int(rules['ttl_seconds']) // 3600} hours, then it expires undecided.")
    return lines


def _run_context(approval: ApprovalRequest, now) -> dict:
    """A run's estimate beside its model's price, the workflow's envelope and its recent calls."""
    catalog = catalog_model_get(name=approval.model.name, now=now) if approval.model is not None else None
    recent = None
    if approval.workflow is not None:
        # The request's own tenant: the scope sees it, and the figures are about that tenant alone.
        recent = workflow_recent_usage(
            scope=TenantScope.for_tenant(approval.tenant), workflow=approval.workflow, days=RECENT_DAYS, now=now
        )
    calls = recent.calls if recent is not None else 0
    per_call = recent.cost_per_call_nanos if recent is not None else None
    return {
        "price": catalog.current if catalog is not None else None,
        "recent": recent,
        "recent_days": RECENT_DAYS,
        # Means over the recent calls, beside the envelope's expectations.
        "recent_input_per_call": recent.prompt_tokens // calls if recent is not None and calls else None,
        "recent_output_per_call": recent.output_tokens // calls if recent is not None and calls else None,
        "recent_calls_per_day": round(calls / RECENT_DAYS, 1) if calls else None,
        # "as much as 240 typical calls": how far the run is from the workflow's everyday calls.
        "calls_worth": approval.estimated_cost_nanos // per_call
        if approval.estimated_cost_nanos is not None and per_call
        else None,
    }


def _increase_context(approval: ApprovalRequest, budget: Budget, now) -> dict:
    """An increase's limits now against the asked ones, beside the budget's current period."""
    burn = budget_burn(budget=budget, now=now)
    # A period-only increase is measured against the current window's limits, a lasting one the budget's.
    if approval.current_window_only:
        soft, hard = burn.soft_limit, burn.hard_limit
    else:
        soft, hard = budget.soft_limit, budget.hard_limit
    rows = [
        (label, current, asked, asked - current if asked is not None and current is not None else None)
        for label, current, asked in (
            ("Soft limit", soft, approval.new_soft_limit),
            ("Hard limit", hard, approval.new_hard_limit),
        )
    ]
    return {"increase": burn, "increase_rows": rows}


def _prompt_context(approval: ApprovalRequest) -> dict:
    """The prompt version page's diff and projection (finops/views/prompts.py), for the version under review."""
    version = approval.prompt_version
    assert version is not None
    own = TenantScope.for_tenant(approval.tenant)
    baseline = prompt_version_baseline(scope=own, workflow=version.workflow, before=version)
    projection = prompt_projection(
        scope=own,
        workflow=version.workflow,
        baseline=baseline,
        new_tokens=version.input_tokens,
        new_cost_nanos=version.estimated_cost_per_call_nanos,
    )
    diff = prompt_diff(
        prompt_version_text(baseline) if baseline is not None else "",
        prompt_version_text(version),
        old_name=baseline.label if baseline is not None else "(none)",
        new_name=version.label,
    )
    return {"version": version, "baseline": baseline, "projection": projection, "diff": diff}


@tenant_page
@require_POST
def approval_approve(request, approval_id):
    return _decide(request, approval_id, approve=True)


@tenant_page
@require_POST
def approval_reject(request, approval_id):
    return _decide(request, approval_id, approve=False)


@tenant_page
@require_POST
def approval_cancel(request, approval_id):
    """The requester withdraws their request (the service refuses anyone else); back to where they were."""
    scope = request.scope
    approval = _visible(scope, approval_id)
    back = _back(request, reverse("approval_detail", kwargs={"approval_id": approval.pk}) + scope.query)
    try:
        approval = approval_withdraw(approval=approval, actor=Actor(user=request.user))
    except ApplicationError as error:
        messages.error(request, f"{error.message} Nothing was cancelled.")
        return back
    if approval.kind == ApprovalRequest.Kind.WORKFLOW_RUN:
        messages.success(
            request,
            f"Cancelled {_what(approval)}: a preflight presenting approval_id {approval.pk} "
            "answers needs_approval again.",
        )
    elif approval.kind == ApprovalRequest.Kind.PROMPT_CHANGE:
        messages.success(
            request, f"Cancelled {_what(approval)}: the version is rejected; register the prompt again to ask anew."
        )
    else:
        messages.success(request, f"Cancelled {_what(approval)}: nothing changes.")
    return back


def _back(request, default: str) -> HttpResponseRedirect:
    """Where a form came from (`next`, this site only), else `default`."""
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect(default)


def _decide(request, approval_id, *, approve: bool):
    scope = request.scope
    approval = _visible(scope, approval_id)
    if not scope.may(Operation.DECIDE, approval.tenant_id):
        raise PermissionDenied("Only the tenant's approvers and admins, and operators, decide its approval requests.")
    back = _back(request, reverse("approvals_list") + scope.query)
    # The request page asks the person to confirm they read the estimate (the queue decides in one step).
    if request.POST.get("confirm") == "required" and not request.POST.get("confirmed"):
        messages.error(request, "Tick “I have read the estimate and the budget state” to decide; nothing was decided.")
        return back
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
