"""Telling people about approval requests through the notification channels alerts already use.

When a request opens, the tenant's channels (and the operators' platform-wide ones) get a notice for
its approvers with a link to the queue; when it is decided or cancelled, a notice for the requester.
Each notice is an `Alert` of kind `approval`, stored as already acknowledged (the approvals page is
where people act, so it does not count as an open alert) and delivered with the alerts' retries.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from budgets.models import Alert, ApprovalRequest
from finops.pricing import nanos_to_usd

from .alerts import notifications_create

_EVENTS = {
    "opened": "waits for an approver",
    ApprovalRequest.Status.APPROVED: "was approved",
    ApprovalRequest.Status.REJECTED: "was rejected",
    ApprovalRequest.Status.CANCELLED: "was cancelled by its requester",
}


def _what(approval: ApprovalRequest) -> str:
    if approval.kind == ApprovalRequest.Kind.BUDGET_INCREASE:
        return f"Budget increase of '{approval.budget.name}'" if approval.budget is not None else "Budget increase"
    if approval.kind == ApprovalRequest.Kind.PROMPT_CHANGE:
        label = approval.prompt_version.label if approval.prompt_version is not None else "a new version"
        return f"Prompt change {label}" + (f" of {approval.workflow.slug}" if approval.workflow is not None else "")
    what = f"Run of {approval.workflow.slug}" if approval.workflow is not None else "A run"
    if approval.model is not None:
        what += f" on {approval.model.name}"
    if approval.estimated_cost_nanos is not None:
        what += f" (estimated ${nanos_to_usd(approval.estimated_cost_nanos)})"
    return what


def approval_notify(approval: ApprovalRequest, *, event: str, now: datetime | None = None) -> Alert:
    """Create the notice for `event` ("opened", or the status a decision or cancel moved it to)."""
    now = now or timezone.now()
    tenant = approval.tenant
    page = reverse("approval_detail", args=[approval.pk])
    link = f"{settings.PUBLIC_BASE_URL}{page}?{urlencode({'tenant': tenant.slug})}"
    who = approval.requested_by.get_username() if approval.requested_by is not None else None
    if who is None and approval.requested_by_key is not None:
        who = f"key {approval.requested_by_key.prefix}"
    lines = [f"{_what(approval)} for {tenant.name} {_EVENTS[event]}."]
    if event == "opened":
        lines += [f"Why: {' '.join(approval.reasons) or '-'}"]
        if approval.justification:
            lines.append(f"Justification: {approval.justification}")
        lines.append(f"Requested by {who or 'a service'}; expires {approval.expires_at:%Y-%m-%d %H:%M} UTC.")
        lines.append(f"Decide it: {link}")
    else:
        if approval.decided_by is not None:
            lines.append(f"Decided by {approval.decided_by.get_username()}.")
        if approval.comment:
            lines.append(f"Comment: {approval.comment}")
        lines.append(f"For {who or 'the requester'}; request {approval.pk}: {link}")
    alert = Alert.objects.create(
        kind=Alert.Kind.APPROVAL,
        level=0,
        tenant=tenant,
        subject=f"[Tokenspend] {_what(approval)} {_EVENTS[event]}"[:300],
        message="\n".join(lines),
        created_at=now,
        acknowledged_at=now,
    )
    notifications_create(alert)
    return alert
