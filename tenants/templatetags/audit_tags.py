"""The audit page's display helpers, and whether the menu shows it."""

from __future__ import annotations

import json

from django import template

from tenants.scope import Operation

register = template.Library()


@register.simple_tag(takes_context=True)
def audit_link_shown(context) -> bool:
    """Whether the signed-in person may open the audit page: operators and tenant admins. Decided from
    the page's scope in memory (no query), so every page can ask."""
    scope = context.get("scope")
    if scope is None:
        return False
    if scope.is_platform:
        return scope.may(Operation.READ_AUDIT)
    return any(scope.may(Operation.READ_AUDIT, pk) for pk in scope.visible_ids or ())


@register.filter
def audit_json(value, style: str = "pretty") -> str:
    """An event's before/after: one line (`compact`) for the summary, indented for the details."""
    if value is None:
        return ""
    if style == "compact":
        return json.dumps(value, separators=(", ", ": "), sort_keys=True, ensure_ascii=False)
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
