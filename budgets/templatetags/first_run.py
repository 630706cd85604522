"""The operators' getting-started list on an empty overview: a tenant, a key, a budget, then usage."""

from __future__ import annotations

from dataclasses import dataclass

from django import template
from django.urls import reverse

from budgets.models import Budget
from tenants.models import ApiKey, Tenant

register = template.Library()


@dataclass(frozen=True)
class Step:
    title: str
    done: bool
    url: str
    action: str


@register.simple_tag
def first_run_steps() -> list[Step]:
    tenant = Tenant.objects.order_by("created_at").first()
    has_key = ApiKey.objects.filter(revoked_at__isnull=True).exists()
    query = f"?tenant={tenant.slug}" if tenant is not None else ""
    return [
        Step("Create a tenant (a customer or a team whose spend you track)", tenant is not None,
             reverse("tenant_add"), "New tenant"),
        Step("Give it an admin and an API key for its services", has_key,
             reverse("api_keys") + query, "API keys"),
        Step("Set a budget with soft and hard limits", Budget.objects.exists(),
             reverse("budget_add") + query, "New budget"),
    ]  # fmt: skip
