"""Which tenants a page covers for the signed-in person, and the layout context every page shares."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet
from django.http import Http404

from tenants.models import Tenant
from tenants.scoping import tenants_for_user


@dataclass(frozen=True)
class PageScope:
    """The tenants a page reads, and what the tenant switcher in the layout shows."""

    visible: QuerySet[Tenant]
    tenant: Tenant | None  # the one tenant the page is about, if it is about one
    selected_slug: str  # the `tenant` query parameter, when one was given (and is visible)
    choices: list[Tenant]  # every visible tenant, for the switcher
    is_operator: bool

    @property
    def tenants(self) -> Tenant | QuerySet[Tenant]:
        return self.tenant if self.tenant is not None else self.visible

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
    def tenant_ids(self) -> list[int] | None:
        """What selectors take: one tenant, the member's tenants, or None for all (operators)."""
        if self.tenant is not None:
            return [self.tenant.pk]
        if self.is_operator:
            return None
        return [t.pk for t in self.choices]

    @property
    def tenant_names(self) -> dict[str, str]:
        return {t.slug: t.name for t in self.choices}


def page_scope(request, *, slug: str | None = None) -> PageScope:
    """The visible tenants and the one the page is about: `slug` (a tenant page) or `?tenant=`."""
    user = request.user
    visible = tenants_for_user(user)
    choices = list(visible.order_by("name", "slug"))
    slug = slug if slug is not None else (request.GET.get("tenant") or "").strip()
    if slug:
        tenant = next((t for t in choices if t.slug == slug), None)
        if tenant is None:
            raise Http404("No such tenant.")
    else:
        # A member of exactly one tenant is always about that tenant; operators and members of
        # several see everything they may see until they pick one.
        tenant = choices[0] if len(choices) == 1 and not user.is_staff else None
    return PageScope(visible=visible, tenant=tenant, selected_slug=slug, choices=choices, is_operator=user.is_staff)


def layout_context(request, scope: PageScope, *, switcher_action: str | None = None) -> dict:
    return {"scope": scope, "switcher_action": switcher_action or request.path}


# --- Overview -----------------------------------------------------------------------------------------


def tenant_param(scope: PageScope) -> dict[str, str]:
    return {"tenant": scope.selected_slug} if scope.selected_slug else {}


# --- Attribution explorer -----------------------------------------------------------------------------
