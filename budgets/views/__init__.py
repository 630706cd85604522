"""Pages for budgets, controls, alerts and approval requests. Tenant scoping is the spend pages'
(`tenants.scoping.tenant_page`): a person sees their tenants' rows, operators also the platform-wide ones, and
another tenant's budget, control, alert or approval request answers 404 exactly like a missing one.
Writes go through the services."""

from .alerts import alert_acknowledge, alerts_list
from .approvals import approval_approve, approval_reject, approvals_list
from .budgets import budget_add, budget_detail, budget_edit, budget_increase, budgets_list
from .controls import control_add, control_end, controls_list

__all__ = [
    "alert_acknowledge",
    "alerts_list",
    "approval_approve",
    "approval_reject",
    "approvals_list",
    "budget_add",
    "budget_detail",
    "budget_edit",
    "budget_increase",
    "budgets_list",
    "control_add",
    "control_end",
    "controls_list",
]
