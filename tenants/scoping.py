"""Tenant scoping for API views: the one place that decides which tenant a request acts for."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework.views import APIView

from finops.errors import ApplicationError

from .authentication import ApiKeyRateThrottle, HasScope
from .models import ApiKey, Membership, Tenant

_ROLE_RANK = {Membership.Role.VIEWER: 1, Membership.Role.APPROVER: 2, Membership.Role.ADMIN: 3}


def tenants_for_user(user) -> QuerySet[Tenant]:
    """Tenants a signed-in person may see: every tenant for operators (staff), else their memberships."""
    if user.is_staff:
        return Tenant.objects.all()
    return Tenant.objects.filter(memberships__user=user)


def _not_found() -> ApplicationError:
    # An unknown slug and a tenant the caller may not see answer alike, so tenants cannot be probed.
    return ApplicationError("not_found", "Not found.", status_code=404)


class TenantScopedAPIView(APIView):
    """Base for tenant-scoped endpoints. Resolves `self.tenant` before the handler runs:

    - tenant API key: the key's tenant; a `tenant` parameter naming any other tenant answers 404;
    - platform API key: the `tenant` parameter (query string) is required, unless the view sets
      `tenant_optional` (ingest names the tenant per record; spend reads span all tenants), in which
      case `self.tenant` is None;
    - signed-in person: the `tenant` parameter, checked against memberships (operators see all);
      a member of exactly one tenant may leave it out.

    Handlers build querysets from selectors that take `tenant`; never from `Model.objects.all()`.
    """

    permission_classes = [HasScope]
    throttle_classes = [ApiKeyRateThrottle]
    required_scope: str | None = None
    required_role: str = Membership.Role.VIEWER
    tenant_optional = False
    tenant: Tenant | None = None

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.tenant = self.resolve_tenant(request)

    @property
    def api_key(self) -> ApiKey | None:
        return self.request.auth if isinstance(self.request.auth, ApiKey) else None

    def requested_tenant_slug(self, request) -> str | None:
        return request.query_params.get("tenant") or None

    def resolve_tenant(self, request) -> Tenant | None:
        slug = self.requested_tenant_slug(request)
        key = self.api_key
        if key is not None:
            if key.tenant_id is not None:
                if slug and slug != key.tenant.slug:
                    raise _not_found()
                return key.tenant
            if not slug:
                if self.tenant_optional:
                    return None
                raise ApplicationError("tenant_required", "A platform key must name the tenant (?tenant=<slug>).")
            tenant = Tenant.objects.filter(slug=slug).first()
            if tenant is None:
                raise _not_found()
            return tenant

        user = request.user
        visible = tenants_for_user(user)
        if not slug:
            if user.is_staff and self.tenant_optional:
                return None
            only = list(visible[:2])
            if len(only) == 1 and not user.is_staff:
                slug = only[0].slug
            else:
                raise ApplicationError("tenant_required", "Name the tenant with ?tenant=<slug>.")
        tenant = visible.filter(slug=slug).first()
        if tenant is None:
            raise _not_found()
        if not user.is_staff:
            role = Membership.objects.filter(user=user, tenant=tenant).values_list("role", flat=True).first()
            if _ROLE_RANK.get(role, 0) < _ROLE_RANK[self.required_role]:
                raise ApplicationError(
                    "permission_denied", f"This needs the {self.required_role} role on {tenant.slug}.", status_code=403
                )
        return tenant
