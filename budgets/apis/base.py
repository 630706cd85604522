"""Helpers shared by the budgets APIs (the tenant scope itself is `tenants.scoping.TenantScopedAPIView`)."""

from __future__ import annotations

from typing import TypeVar

from django.db.models import Model, QuerySet

from tenants.errors import ApplicationError

M = TypeVar("M", bound=Model)


def by_slug(queryset: QuerySet[M], slug: str | None, field: str) -> M | None:
    """The row of `queryset` named by a slug in a request body, None for empty, or a 400 naming the field.

    Pass a queryset the caller's scope already limits (e.g. `workflows_visible(scope=...)`): a row it
    may not see answers exactly like a missing one.
    """
    if not slug:
        return None
    obj = queryset.filter(slug=slug).first()
    if obj is None:
        raise ApplicationError("invalid", f"No {field} '{slug}'.", details={field: [f"No {field} '{slug}'."]})
    return obj
