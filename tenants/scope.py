"""The one tenant scope: which tenant a request acts for, which tenants it may see, and what it may do.

Every API view, page and selector takes a `TenantScope`; nothing else decides tenancy. It is
resolved once per request by `scope_for_request` (API keys) or `scope_for_person` (signed-in people
plus `?tenant=`), and background jobs use `TenantScope.system()`.

Rules written here once:

- A tenant key acts for its tenant; naming another tenant answers 404, exactly like a missing one.
- A platform key and an operator (staff) see every tenant and may name one; a member sees the tenants
  of their memberships, and a member of exactly one tenant is always about that tenant.
- Platform-wide rows (a budget, control, alert or channel with no tenant) are seen by platform callers
  only, whichever tenant they picked, because they apply to every tenant (`filter(platform_rows=True)`).
  A tenant never sees them as rows; preflight tells it that one applied and its headroom, not its spend.
- What a caller may do is one table (`OPERATIONS`): a key needs the operation's scope, a person the
  operation's role on the tenant (operators any), and some operations are for platform callers or for
  people only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Model, Q, QuerySet

from .errors import ApplicationError
from .models import ApiKey, Membership, Tenant

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

M = TypeVar("M", bound=Model)

ROLE_RANK: dict[str, int] = {Membership.Role.VIEWER: 1, Membership.Role.APPROVER: 2, Membership.Role.ADMIN: 3}


class Operation(StrEnum):
    """What a request does, checked the same way for keys (scopes) and people (roles)."""

    READ = "read"
    INGEST = "ingest"
    PREFLIGHT = "preflight"  # ask, and give a hold back
    MANAGE = "manage"  # budgets
    ACKNOWLEDGE = "acknowledge"  # alerts
    DECIDE = "decide"  # approval requests: people only, never a service's key
    FOLLOW_APPROVAL = "follow_approval"  # a request's status, polled by the service that waits on it
    READ_CHANNELS = "read_channels"  # where alerts go: tenant admins, not a tenant's service key
    MANAGE_CHANNELS = "manage_channels"
    MANAGE_CONTROLS = "manage_controls"  # manual controls: operators and platform keys
    READ_AUDIT = "read_audit"  # the audit log: tenant admins and operators, people only
    COUNT_TOKENS = "count_tokens"  # reads nothing tenant-specific: any key, any member
    MANAGE_ACCESS = "manage_access"  # a tenant's API keys and members (platform keys: operators)
    MANAGE_TENANTS = "manage_tenants"  # create, edit and suspend tenants: operators only


@dataclass(frozen=True)
class Rule:
    key_scope: str | None  # None: any key may; see `keys`
    role: str  # the least role a member needs on the tenant
    keys: str = "all"  # "all", "platform" (platform keys only) or "none" (people only)
    members: bool = True  # False: operators only among people


OPERATIONS: dict[Operation, Rule] = {
    Operation.READ: Rule(ApiKey.Scope.READ, Membership.Role.VIEWER),
    # A person who writes usage or holds budget reservations acts as a service would: the tenant's admins.
    Operation.INGEST: Rule(ApiKey.Scope.INGEST, Membership.Role.ADMIN),
    Operation.PREFLIGHT: Rule(ApiKey.Scope.PREFLIGHT, Membership.Role.ADMIN),
    Operation.MANAGE: Rule(ApiKey.Scope.MANAGE, Membership.Role.ADMIN),
    Operation.ACKNOWLEDGE: Rule(ApiKey.Scope.MANAGE, Membership.Role.APPROVER),
    Operation.DECIDE: Rule(None, Membership.Role.APPROVER, keys="none"),
    Operation.FOLLOW_APPROVAL: Rule(None, Membership.Role.VIEWER),
    # A service's key should not be able to read or redirect its tenant's alerts.
    Operation.READ_CHANNELS: Rule(ApiKey.Scope.READ, Membership.Role.ADMIN, keys="platform"),
    Operation.MANAGE_CHANNELS: Rule(ApiKey.Scope.MANAGE, Membership.Role.ADMIN, keys="platform"),
    # A manual control can stop a tenant's traffic: operators and platform keys only.
    Operation.MANAGE_CONTROLS: Rule(ApiKey.Scope.MANAGE, Membership.Role.ADMIN, keys="platform", members=False),
    Operation.COUNT_TOKENS: Rule(None, Membership.Role.VIEWER),
    # Who changed what, with before and after values: for the people who answer for a tenant.
    Operation.READ_AUDIT: Rule(None, Membership.Role.ADMIN, keys="none"),
    # Who may act for a tenant: its admins, signed in; a key never makes keys or people.
    Operation.MANAGE_ACCESS: Rule(None, Membership.Role.ADMIN, keys="none"),
    Operation.MANAGE_TENANTS: Rule(None, Membership.Role.ADMIN, keys="none", members=False),
}


def not_found(what: str = "Not found.") -> ApplicationError:
    """Another tenant's object answers exactly like a missing one."""
    return ApplicationError("not_found", what, status_code=404)


def forbidden(message: str) -> ApplicationError:
    return ApplicationError("permission_denied", message, status_code=403)


@dataclass(frozen=True)
class Actor:
    """Who does something, for services and the audit log: a person, an API key, or the system (None, None)."""

    user: Any = None
    api_key: ApiKey | None = None

    @classmethod
    def system(cls) -> Actor:
        return cls()

    @property
    def actor_user(self):
        """The person, if one acts (never an anonymous user)."""
        return self.user if getattr(self.user, "pk", None) else None

    @property
    def label(self) -> str:
        if self.api_key is not None:
            return f"key {self.api_key.prefix}"
        if self.actor_user is not None:
            return self.actor_user.get_username()
        return "system"


@dataclass(frozen=True, eq=False)
class TenantScope:
    """The tenants a caller acts for and may see, and what it may do there.

    `tenant`: the one tenant the request is about, when it is about one. `visible_ids`: the tenants
    the caller may see; None means every tenant and is only ever set for platform callers.
    """

    tenant: Tenant | None
    visible_ids: frozenset[int] | None
    is_platform: bool
    api_key: ApiKey | None = None
    user: Any = None
    roles: Mapping[int, str] = field(default_factory=dict)
    # Pages: every visible tenant (the switcher) and the `?tenant=` that was given.
    choices: tuple[Tenant, ...] = ()
    selected_slug: str = ""

    def __post_init__(self) -> None:
        # Fail closed: only a platform caller may see every tenant.
        if self.visible_ids is None and not self.is_platform:
            object.__setattr__(self, "visible_ids", frozenset())

    # --- constructors ---------------------------------------------------------------------------------

    @classmethod
    def system(cls) -> TenantScope:
        """Background jobs and management commands: every tenant and every platform-wide row."""
        return cls(tenant=None, visible_ids=None, is_platform=True)

    @classmethod
    def for_tenant(cls, tenant: Tenant, *, api_key: ApiKey | None = None) -> TenantScope:
        """Exactly one tenant, as its own key sees it (also for jobs that act for one tenant)."""
        return cls(tenant=tenant, visible_ids=frozenset({tenant.pk}), is_platform=False, api_key=api_key)

    @classmethod
    def for_tenant_ids(cls, ids: Iterable[int] | None) -> TenantScope:
        """Jobs, benchmarks and tests that read a set of tenants (None: every tenant, as the system)."""
        if ids is None:
            return cls.system()
        return cls(tenant=None, visible_ids=frozenset(ids), is_platform=False)

    # --- what it covers -------------------------------------------------------------------------------

    @property
    def actor(self) -> Actor:
        return Actor(user=self.user if self.api_key is None else None, api_key=self.api_key)

    @property
    def is_operator(self) -> bool:
        """A platform caller (operator or platform key); the pages' name for it."""
        return self.is_platform

    @property
    def tenant_ids(self) -> list[int] | None:
        """What aggregate selectors filter on: the one tenant, the visible ones, or None for every tenant."""
        if self.tenant is not None:
            return [self.tenant.pk]
        if self.visible_ids is None:
            return None
        return sorted(self.visible_ids)

    def covers(self, tenant_id: int | None) -> bool:
        """Whether a row of this tenant (None: a platform-wide row) is visible at all."""
        if tenant_id is None:
            return self.is_platform
        if self.visible_ids is None:
            return True
        return tenant_id in self.visible_ids

    def filter(self, queryset: QuerySet[M], *, field: str = "tenant", platform_rows: bool = False) -> QuerySet[M]:
        """The rows of `queryset` this scope covers (fail-closed: no scope, no rows).

        `platform_rows=True` is for models whose rows may have no tenant (budgets, controls, alerts,
        channels): those rows are kept for platform callers, whichever tenant they picked, and never
        for tenants. Without it, rows without a tenant are never returned.
        """
        ids = self.tenant_ids
        if ids is None:
            if platform_rows or not _nullable(queryset.model, field):
                return queryset
            return queryset.filter(**{f"{field}__isnull": False})
        condition = Q(**{f"{field}_id__in": ids})
        if platform_rows and self.is_platform:
            condition |= Q(**{f"{field}__isnull": True})
        return queryset.filter(condition)

    def tenants_where(self, operation: Operation) -> QuerySet[Tenant]:
        """The visible tenants on which the caller may do `operation` (e.g. the tenants a person may put
        budgets on)."""
        if self.is_platform:
            return Tenant.objects.all() if self.may(operation) else Tenant.objects.none()
        visible = self.visible_ids or frozenset()  # never None for a non-platform scope (__post_init__)
        return Tenant.objects.filter(pk__in=[pk for pk in visible if self.may(operation, pk)])

    def may_anywhere(self, operation: Operation) -> bool:
        """Whether there is any tenant (or, for platform callers, the platform) where `operation` is allowed."""
        return self.may(operation) if self.is_platform else self.tenants_where(operation).exists()

    def get(self, queryset: QuerySet[M], *, platform_rows: bool = False, what: str = "Not found.", **lookup) -> M:
        """The one row of `queryset` that matches `lookup` within the scope, or a 404 like a missing row."""
        obj = self.filter(queryset, platform_rows=platform_rows).filter(**lookup).first()
        if obj is None:
            raise not_found(what)
        return obj

    def tenants(self) -> QuerySet[Tenant]:
        """The tenants this scope sees (the one it is about, when it is about one)."""
        if self.tenant is not None:
            return Tenant.objects.filter(pk=self.tenant.pk)
        if self.visible_ids is None:
            return Tenant.objects.all()
        return Tenant.objects.filter(pk__in=self.visible_ids)

    # --- what it may do -------------------------------------------------------------------------------

    def role_on(self, tenant_id: int | None) -> str | None:
        return self.roles.get(tenant_id) if tenant_id is not None else None

    def may(self, operation: Operation, tenant_id: int | None = None) -> bool:
        """Whether the caller may do `operation` on a row of `tenant_id` (None: the scope's tenant, or a
        platform-wide row when the scope is about none)."""
        rule = OPERATIONS[operation]
        if tenant_id is None and self.tenant is not None:
            tenant_id = self.tenant.pk
        if not self.covers(tenant_id):
            return False
        if self.api_key is not None:
            if rule.keys == "none" or (rule.keys == "platform" and not self.api_key.is_platform):
                return False
            return rule.key_scope is None or rule.key_scope in self.api_key.scopes
        if self.is_platform:
            return True
        if not rule.members or tenant_id is None:
            return False
        return ROLE_RANK.get(self.roles.get(tenant_id, ""), 0) >= ROLE_RANK[rule.role]

    def require(self, operation: Operation, tenant_id: int | None = None) -> None:
        """403 (with what is missing) unless the caller may do `operation`; call it after the row was
        found within the scope, so that another tenant's row has already answered 404."""
        if self.may(operation, tenant_id):
            return
        raise forbidden(self.denial(operation, tenant_id))

    def denial(self, operation: Operation, tenant_id: int | None = None) -> str:
        rule = OPERATIONS[operation]
        if self.api_key is not None:
            if rule.keys == "none":
                return "Only a signed-in person can do this; API keys cannot."
            if rule.keys == "platform" and not self.api_key.is_platform:
                return "Only operators, platform keys and tenant admins can do this; tenant keys cannot."
            return f"This API key lacks the '{rule.key_scope}' scope."
        if not rule.members:
            return "Only operators can do this."
        if tenant_id is None and self.tenant is None:
            return "Only operators and platform keys can do this across all tenants."
        slug = self.tenant.slug if self.tenant is not None else "this tenant"
        return f"This needs the {rule.role} role on {slug}."

    # --- pages ----------------------------------------------------------------------------------------

    @property
    def spans_several(self) -> bool:
        return self.tenant is None and len(self.choices) != 1

    @property
    def show_switcher(self) -> bool:
        return len(self.choices) > 1

    @property
    def query(self) -> str:
        """The query string that keeps the current tenant selection on links to other pages."""
        return f"?tenant={self.selected_slug}" if self.selected_slug else ""

    @property
    def tenant_names(self) -> dict[str, str]:
        return {t.slug: t.name for t in self.choices}

    def tenant_param(self) -> dict[str, str]:
        return {"tenant": self.selected_slug} if self.selected_slug else {}


def _nullable(model: type[Model], path: str) -> bool:
    """Whether the (possibly related, `a__b`) field can be empty; unknown paths count as nullable."""
    try:
        for name in path.split("__"):
            f = model._meta.get_field(name)
            if f.null:
                return True
            model = f.related_model  # type: ignore[assignment]
    except (FieldDoesNotExist, AttributeError):
        return True
    return False


# --- resolution ---------------------------------------------------------------------------------------


def _clean_slug(slug: object) -> str:
    return slug.strip() if isinstance(slug, str) else ""


def scope_for_key(key: ApiKey, *, slug: str | None) -> TenantScope:
    """A tenant key's tenant (naming another answers 404), or the tenant a platform key names (None:
    every tenant; the view decides whether it needs one)."""
    slug = _clean_slug(slug)
    if key.tenant is not None:
        if slug and slug != key.tenant.slug:
            raise not_found()
        return TenantScope.for_tenant(key.tenant, api_key=key)
    if not slug:
        return TenantScope(tenant=None, visible_ids=None, is_platform=True, api_key=key)
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        raise not_found()
    return TenantScope(tenant=tenant, visible_ids=None, is_platform=True, api_key=key, selected_slug=slug)


def scope_for_person(
    user: AbstractBaseUser | AnonymousUser, *, slug: str | None, with_choices: bool = True
) -> TenantScope:
    """A signed-in person: operators see every tenant, members their memberships' tenants. `slug`
    (a `?tenant=` or a tenant page's slug) picks one; a tenant the person may not see answers 404.
    A member of exactly one tenant is always about that tenant. `with_choices=False` (APIs) skips
    loading every tenant for an operator's switcher."""
    slug = _clean_slug(slug)
    if isinstance(user, AnonymousUser) or not getattr(user, "is_authenticated", False):
        return TenantScope(tenant=None, visible_ids=frozenset(), is_platform=False)
    # AbstractBaseUser declares no is_staff; the User model (AbstractUser) does.
    is_operator = bool(getattr(user, "is_staff", False))
    roles: dict[int, str] = {}
    if is_operator and not with_choices:
        choices: tuple[Tenant, ...] = tuple(Tenant.objects.filter(slug=slug)[:1]) if slug else ()
    elif is_operator:
        choices = tuple(Tenant.objects.order_by("name", "slug"))
    else:
        memberships = list(Membership.objects.filter(user_id=user.pk).select_related("tenant"))
        choices = tuple(sorted((m.tenant for m in memberships), key=lambda t: (t.name, t.slug)))
        roles = {m.tenant_id: m.role for m in memberships}
    if slug:
        tenant = next((t for t in choices if t.slug == slug), None)
        if tenant is None:
            raise not_found("No such tenant." if with_choices else "Not found.")
    else:
        tenant = choices[0] if len(choices) == 1 and not is_operator else None
    return TenantScope(
        tenant=tenant,
        visible_ids=None if is_operator else frozenset(t.pk for t in choices),
        is_platform=is_operator,
        user=user,
        roles=roles,
        choices=choices if with_choices else (),
        selected_slug=slug,
    )


def tenants_by_id(ids: Iterable[int]) -> dict[int, Tenant]:
    return {t.pk: t for t in Tenant.objects.filter(pk__in=list(ids))}
