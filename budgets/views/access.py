"""Who may change what on the budget pages (reading is the page scope's business).

- budgets: operators any scope; a tenant's admins that tenant's budgets;
- controls: operators only (a manual control can stop a tenant's traffic);
- alerts: operators, and the approvers and admins of the alert's tenant.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet

from tenants.models import Membership, Tenant

ACKNOWLEDGE_ROLES = (Membership.Role.APPROVER, Membership.Role.ADMIN)


def roles_of(user) -> dict[int, str]:
    """The person's role per tenant id (one query)."""
    return dict(Membership.objects.filter(user=user).values_list("tenant_id", "role"))


def budget_tenants(user) -> QuerySet[Tenant]:
    """The tenants the person may put budgets on."""
    if user.is_staff:
        return Tenant.objects.all()
    return Tenant.objects.filter(memberships__user=user, memberships__role=Membership.Role.ADMIN)


def can_manage_budget(user, tenant_id: int | None, roles: dict[int, str] | None = None) -> bool:
    if user.is_staff:
        return True
    if tenant_id is None:
        return False
    roles = roles if roles is not None else roles_of(user)
    return roles.get(tenant_id) == Membership.Role.ADMIN


def can_acknowledge(user, tenant_id: int | None, roles: dict[int, str] | None = None) -> bool:
    if user.is_staff:
        return True
    if tenant_id is None:
        return False
    roles = roles if roles is not None else roles_of(user)
    return roles.get(tenant_id) in ACKNOWLEDGE_ROLES


def operator_only(user, what: str) -> None:
    if not user.is_staff:
        raise PermissionDenied(f"Only operators {what}.")
