"""The base of every tenant-scoped API view and page: the scope is resolved once, before the handler.

API views subclass `TenantScopedAPIView`; pages are decorated with `tenant_page`. Both hand the
handler a `TenantScope` (tenants/scope.py) and nothing else decides tenancy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, overload

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions, permissions
from rest_framework.views import APIView

from .authentication import ApiKeyRateThrottle
from .errors import ApplicationError
from .models import ApiKey, Tenant
from .scope import Operation, TenantScope, scope_for_key, scope_for_person
from .strict_input import query_check

_READS = frozenset({"GET", "HEAD", "OPTIONS"})
M = TypeVar("M", bound=Model)


class IsAuthenticatedCaller(permissions.BasePermission):
    """An API key or a signed-in person; what either may do is the scope's business (`Operation`)."""

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ApiKey) or bool(request.user and request.user.is_authenticated)


class TenantScopedAPIView(APIView):
    """Base for tenant-scoped endpoints. Before the handler runs, `self.scope` is resolved:

    - tenant API key: its tenant; a `tenant` parameter naming another tenant answers 404;
    - platform API key and operators: the `tenant` parameter, or every tenant when the view allows it
      (`tenant_required = False`);
    - signed-in member: the `tenant` parameter, checked against memberships; a member of exactly one
      tenant may leave it out.

    Then the operation of the HTTP method (`operations`) is checked: scopes for keys, roles for
    people. On an object route (`lookup_kwarg` names the URL's id) the check waits for the object:
    the handler calls `object_in_scope(queryset)`, so another tenant's object answers 404 before any
    403, and the role is the one on the object's tenant; a response to an object route whose handler
    never did fails loudly. Handlers read rows through selectors that take `self.scope`, never
    `Model.objects.all()`.

    Subclasses configure, never override the resolution: defining `initial`, `resolve_scope` or
    `check_operation` in a subclass raises TypeError at import. The tenant comes from the query
    string; `tenant_from_body = True` is the named opt-in for the two endpoints where a platform key
    names it in the JSON body (preflight and budget writes). A query parameter given twice (unless
    listed in `repeatable_query_params`) or empty answers 400 (tenants.strict_input).
    """

    permission_classes = [IsAuthenticatedCaller]
    throttle_classes = [ApiKeyRateThrottle]
    # HTTP method -> what it does; methods missing here use `write_operation`.
    operations: ClassVar[dict[str, Operation]] = {}
    read_operation: ClassVar[Operation] = Operation.READ
    write_operation: ClassVar[Operation] = Operation.MANAGE
    tenant_required: ClassVar[bool] = True
    tenant_from_body: ClassVar[bool] = False
    lookup_kwarg: ClassVar[str | None] = None
    # Query parameters the schema declares as lists (`?model=a&model=b`); any other given twice is a 400.
    repeatable_query_params: ClassVar[tuple[str, ...]] = ()

    scope: TenantScope

    _SEALED = ("initial", "resolve_scope", "check_operation", "object_in_scope", "finalize_response")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls._SEALED:
            if name in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__}.{name} overrides the tenant resolution of TenantScopedAPIView; "
                    "configure it with operations / tenant_required / tenant_from_body instead."
                )

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if request.method.lower() not in self.http_method_names or not hasattr(self, request.method.lower()):
            # A method the view does not have answers 405 before the tenant is resolved (which may answer 400).
            raise exceptions.MethodNotAllowed(request.method)
        if request.method in ("POST", "PUT", "PATCH") and any(
            getattr(parser, "strict_json", False) for parser in self.parser_classes
        ):
            # A malformed or hostile JSON body answers 400 before the tenant and the operation are checked.
            # Parsed once: DRF keeps request.data for the view.
            request.data  # noqa: B018
        query_check(request.query_params, repeatable=self.repeatable_query_params)
        self.scope = self.resolve_scope(request)
        # What the per-request log line names (finops.middleware.RequestLogMiddleware): never the key itself.
        request._request._log_tenant = self.scope.tenant.slug if self.scope.tenant is not None else None
        request._request._log_key_prefix = self.api_key.prefix if self.api_key is not None else None
        self._checked = self.lookup_kwarg is None
        if self._checked:
            self.check_operation(request)

    def object_in_scope(self, queryset: QuerySet[M], *, platform_rows: bool = False) -> M:
        """The URL's object within the scope (404 like a missing one), once the caller may do the
        method's operation on the object's tenant (403 otherwise)."""
        assert self.lookup_kwarg is not None, f"{type(self).__name__} has no lookup_kwarg"
        obj = self.scope.get(queryset, platform_rows=platform_rows, pk=self.kwargs[self.lookup_kwarg])
        self.scope.require(self.operation, getattr(obj, "tenant_id", None))
        self._checked = True
        return obj

    def finalize_response(self, request, response, *args, **kwargs):
        # OPTIONS describes the route (no object is read or shown), so it needs no object lookup.
        checked = getattr(self, "_checked", True) or request.method == "OPTIONS"
        if not checked and 200 <= response.status_code < 300:
            raise ImproperlyConfigured(
                f"{type(self).__name__} answered {response.status_code} without object_in_scope(): "
                "an object route must look its object up through the scope."
            )
        return super().finalize_response(request, response, *args, **kwargs)

    @property
    def api_key(self) -> ApiKey | None:
        return self.request.auth if isinstance(self.request.auth, ApiKey) else None

    @property
    def one_tenant(self) -> Tenant:
        """The tenant of a view that needs one (`tenant_required`, the default): resolution guarantees it."""
        if self.scope.tenant is None:
            raise ApplicationError("tenant_required", "Name the tenant with ?tenant=<slug>.")
        return self.scope.tenant

    @property
    def operation(self) -> Operation:
        method = self.request.method or "GET"
        if method in self.operations:
            return self.operations[method]
        return self.read_operation if method in _READS else self.write_operation

    def _requested_slug(self, request) -> str | None:
        slug = request.query_params.get("tenant")
        if not slug and self.tenant_from_body and request.method not in _READS and isinstance(request.data, dict):
            slug = request.data.get("tenant")
        return slug if isinstance(slug, str) and slug else None

    def resolve_scope(self, request) -> TenantScope:
        slug = self._requested_slug(request)
        key = self.api_key
        if key is not None:
            scope = scope_for_key(key, slug=slug)
        else:
            scope = scope_for_person(request.user, slug=slug, with_choices=False)
        if scope.tenant is None and (self.tenant_required or not scope.is_platform):
            if self.tenant_from_body and request.method not in _READS:
                raise ApplicationError("tenant_required", 'Name the tenant in the body: {"tenant": "<slug>"}.')
            if key is not None:
                raise ApplicationError("tenant_required", "A platform key must name the tenant (?tenant=<slug>).")
            raise ApplicationError("tenant_required", "Name the tenant with ?tenant=<slug>.")
        return scope

    def check_operation(self, request) -> None:
        self.scope.require(self.operation)


@overload
def tenant_page(view: Callable[..., HttpResponse], *, slug_kwarg: str | None = None) -> Callable[..., HttpResponse]: ...
@overload
def tenant_page(
    view: None = None, *, slug_kwarg: str | None = None
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]: ...
def tenant_page(
    view: Callable[..., HttpResponse] | None = None, *, slug_kwarg: str | None = None
) -> Callable[..., HttpResponse] | Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Page decorator: sign-in required, then `request.scope` is the person's TenantScope (from
    `?tenant=`, or from the URL's `slug_kwarg` on a tenant's own page). A tenant the person may not see
    answers 404 exactly like an unknown one; a refused operation (`scope.require`) answers 403."""

    def decorate(func: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @login_required
        @functools.wraps(func)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            slug = kwargs.get(slug_kwarg) if slug_kwarg else request.GET.get("tenant")
            try:
                request.scope = scope_for_person(request.user, slug=slug)  # type: ignore[attr-defined]
                return func(request, *args, **kwargs)
            except ApplicationError as error:
                if error.status_code == 404:
                    raise Http404(error.message) from error
                if error.status_code == 403:
                    raise PermissionDenied(error.message) from error
                raise

        wrapper.tenant_page = True  # type: ignore[attr-defined]  # the route-walking test looks for it
        return wrapper

    return decorate(view) if view is not None else decorate
