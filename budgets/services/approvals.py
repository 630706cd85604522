"""Deciding approval requests: a person approves or rejects a pending request once (audited)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from budgets.models import ApprovalRequest
from tenants.errors import ApplicationError
from tenants.scope import Actor
from tenants.services import audit_record


def approval_decide(*, approval: ApprovalRequest, approve: bool, actor: Actor, comment: str = "") -> ApprovalRequest:
    """Move a pending, unexpired request to approved or rejected; anything else is a 409 saying why.
    Only people decide (`Operation.DECIDE`): `actor` is a person."""
    now = timezone.now()
    status = ApprovalRequest.Status.APPROVED if approve else ApprovalRequest.Status.REJECTED
    with transaction.atomic():
        changed = ApprovalRequest.objects.filter(
            pk=approval.pk, status=ApprovalRequest.Status.PENDING, expires_at__gt=now
        ).update(status=status, decided_by=actor.actor_user, decided_at=now, comment=comment)
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
            after={"status": status, "comment": comment},
        )
    return approval


def approvals_expire(*, now=None) -> int:
    """Mark pending and approved-but-unused requests past their expiry as expired."""
    now = now or timezone.now()
    return ApprovalRequest.objects.filter(
        status__in=[ApprovalRequest.Status.PENDING, ApprovalRequest.Status.APPROVED], expires_at__lte=now
    ).update(status=ApprovalRequest.Status.EXPIRED)
