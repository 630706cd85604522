"""Scoping shared by the budgets APIs: tenant callers see their tenant's rows, platform callers all."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework.parsers import JSONParser

from finops.errors import ApplicationError
from tenants.models import ApiKey, Membership
from tenants.scoping import TenantScopedAPIView

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class BudgetsScopedApi(TenantScopedAPIView):
    """Reads need the read scope (viewer role); writes the manage scope (admin role, or `write_role`).

    `self.tenant` is the caller's tenant (tenant keys, members), or the `?tenant=` a platform caller
    (platform key, operator) named, or None for a platform caller looking across all tenants.
    """

    parser_classes = [JSONParser]
    tenant_optional = True
    write_role = Membership.Role.ADMIN

    @property
    def required_scope(self) -> str:  # type: ignore[override]
        return ApiKey.Scope.READ if self.request.method in SAFE_METHODS else ApiKey.Scope.MANAGE

    @property
    def required_role(self) -> str:  # type: ignore[override]
        return Membership.Role.VIEWER if self.request.method in SAFE_METHODS else self.write_role

    @property
    def platform_caller(self) -> bool:
        key = self.api_key
        if key is not None:
            return key.tenant_id is None
        return bool(self.request.user.is_staff)

    def scoped(self, queryset: QuerySet) -> QuerySet:
        """Rows the caller may see: its tenant's, or everything for a platform caller (optionally one tenant)."""
        if self.tenant is not None:
            return queryset.filter(tenant=self.tenant)
        if not self.platform_caller:
            raise ApplicationError("tenant_required", "Name the tenant with ?tenant=<slug>.")
        return queryset

    def visible_or_404(self, queryset: QuerySet, pk):
        """The row with this pk in `queryset` (already scoped); another tenant's row answers 404."""
        obj = queryset.filter(pk=pk).first()
        if obj is None:
            raise ApplicationError("not_found", "Not found.", status_code=404)
        return obj

    def require_platform(self, what: str) -> None:
        if not self.platform_caller:
            raise ApplicationError(
                "permission_denied", f"Only operators and platform keys can {what}.", status_code=403
            )

    def require_person(self, what: str) -> None:
        if self.api_key is not None:
            raise ApplicationError("permission_denied", f"Only a signed-in person can {what}.", status_code=403)


def by_slug(model, slug: str | None, field: str):
    """The row named by a slug in a request body, None for empty, or a 400 naming the field."""
    if not slug:
        return None
    obj = model.objects.filter(slug=slug).first()
    if obj is None:
        raise ApplicationError("invalid", f"No {field} '{slug}'.", details={field: [f"No {field} '{slug}'."]})
    return obj
