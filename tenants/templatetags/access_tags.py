"""What the sign-in page says on an empty database: how to create the first operator."""

from __future__ import annotations

from django import template
from django.contrib.auth import get_user_model

register = template.Library()


@register.simple_tag
def nobody_can_sign_in() -> bool:
    """True until the first person exists (one EXISTS query, on the sign-in page only)."""
    return not get_user_model().objects.exists()


@register.simple_tag(takes_context=True)
def csv_url(context, table: str = "") -> str:
    """This page's URL with its filters and `format=csv` (and which of its tables, where it has several)."""
    request = context["request"]
    params = request.GET.copy()
    params["format"] = "csv"
    if table:
        params["table"] = table
    return f"{request.path}?{params.urlencode()}"
