"""The layout context every page shares: the tenant scope (switcher, links that keep `?tenant=`)."""

from __future__ import annotations

from tenants.scope import TenantScope


def layout_context(request, scope: TenantScope, *, switcher_action: str | None = None) -> dict:
    return {"scope": scope, "switcher_action": switcher_action or request.path}
