"""Budget increases: a tenant admin asks for a higher soft or hard limit, for the current window only or
from now on, with a justification; approving it (by someone else: four eyes) applies it in the same
transaction, audited. A current-window increase changes that window's limits only, so it ends with
the window; a lasting one changes the budget (and its open windows). Preflights see it at once: they
reserve against the window rows.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from budgets.models import ApprovalRequest, Budget, BudgetWindow
from budgets.periods import period_bounds
from budgets.state import state_changed
from tenants.errors import ApplicationError
from tenants.scope import Actor
from tenants.services import audit_record

from .approvals import JUSTIFICATION_MAX, approval_open
from .budgets import KEEP, budget_update
from .ladder import amount_label
from .windows import windows_open


def _invalid(field: str, message: str) -> ApplicationError:
    return ApplicationError("invalid", message, details={field: [message]})


def budget_increase_ask(
    *,
    budget: Budget,
    new_soft_limit: int | None,
    new_hard_limit: int | None,
    current_window_only: bool,
    justification: str,
    actor: Actor,
) -> ApprovalRequest:
    """Open a `budget_increase` request for higher limits (in the budget's unit: nano-USD or tokens)."""
    justification = (justification or "").strip()
    if budget.tenant is None:
        raise _invalid("budget", "Platform-wide budgets are changed by operators directly, not through requests.")
    if not budget.is_active:
        raise _invalid("budget", "This budget is retired.")
    if not justification:
        raise _invalid("justification", "Say why the budget needs more room: approvers decide on it.")
    if len(justification) > JUSTIFICATION_MAX:
        raise _invalid("justification", f"At most {JUSTIFICATION_MAX:,} characters.")
    if new_soft_limit is None and new_hard_limit is None:
        raise _invalid("hard_limit", "Ask for a higher soft limit, a higher hard limit, or both.")
    window = _current_window(budget)
    current_soft = window.soft_limit if current_window_only else budget.soft_limit
    current_hard = window.hard_limit if current_window_only else budget.hard_limit
    for field, new, current in (
        ("soft_limit", new_soft_limit, current_soft),
        ("hard_limit", new_hard_limit, current_hard),
    ):
        if new is not None and current is not None and new <= current:
            raise _invalid(field, f"An increase must be above the current {amount_label(budget.metric, current)}.")
    soft = new_soft_limit if new_soft_limit is not None else current_soft
    hard = new_hard_limit if new_hard_limit is not None else current_hard
    if soft is not None and hard is not None and soft > hard:
        raise _invalid("soft_limit", "The soft limit must not be above the hard limit.")
    def fmt(amount: int | None) -> str:
        return amount_label(budget.metric, amount) if amount is not None else "none"

    what = " and ".join(
        f"{name} {fmt(old)} -> {fmt(new)}"
        for name, old, new in (("soft", current_soft, new_soft_limit), ("hard", current_hard, new_hard_limit))
        if new is not None
    )
    span = "for the current window only" if current_window_only else "from now on"
    approval = approval_open(
        tenant=budget.tenant,
        workflow_id=budget.workflow_id,
        model_id=None,
        environment=budget.environment,
        estimated_cost_nanos=None,
        estimated_tokens=None,
        reasons=[f"Budget '{budget.name}': {what}, {span}."],
        justification=justification,
        kind=ApprovalRequest.Kind.BUDGET_INCREASE,
        actor=actor,
        extra={
            "budget": budget,
            "window": window if current_window_only else None,
            "new_soft_limit": new_soft_limit,
            "new_hard_limit": new_hard_limit,
            "current_window_only": current_window_only,
        },
    )
    return approval


def budget_increase_apply(*, approval: ApprovalRequest, actor: Actor) -> None:
    """Apply an approved increase; called by `approval_decide` inside the decision's transaction."""
    if approval.budget_id is None:
        raise ApplicationError("invalid", "This request names no budget.", status_code=409)
    budget = Budget.objects.select_for_update().get(pk=approval.budget_id)
    soft = approval.new_soft_limit if approval.new_soft_limit is not None else KEEP
    hard = approval.new_hard_limit if approval.new_hard_limit is not None else KEEP
    if not approval.current_window_only:
        budget_update(budget=budget, soft_limit=soft, hard_limit=hard, actor=actor)
        return
    window = (
        BudgetWindow.objects.select_for_update().filter(pk=approval.window_id).first()
        if approval.window_id is not None
        else None
    )
    if window is None or window.ends_at <= timezone.now():
        raise ApplicationError(
            "window_ended", "The window this increase was for has ended; nothing changed.", status_code=409
        )
    before = {"soft_limit": window.soft_limit, "hard_limit": window.hard_limit}
    if approval.new_soft_limit is not None:
        window.soft_limit = approval.new_soft_limit
    if approval.new_hard_limit is not None:
        window.hard_limit = approval.new_hard_limit
    window.save(update_fields=["soft_limit", "hard_limit"])
    audit_record(
        action="budget_window.increase",
        tenant_id=budget.tenant_id,
        actor=actor,
        target=window,
        before=before,
        after={"soft_limit": window.soft_limit, "hard_limit": window.hard_limit, "approval": str(approval.pk)},
    )
    transaction.on_commit(state_changed)


def _current_window(budget: Budget) -> BudgetWindow:
    start, end = period_bounds(budget.period, budget.time_zone, timezone.now())
    return windows_open([(budget, start, end)])[(budget.pk, start)]
