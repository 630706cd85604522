"""Display helpers for the budget pages: an amount in a budget's unit, and the open alerts in the menu."""

from __future__ import annotations

from django import template

from budgets.models import Metric
from budgets.selectors import alerts_unacknowledged_count
from finops.templatetags.money import tokens, usd

register = template.Library()


@register.filter
def amount(value, metric: str) -> str:
    """An amount in the budget's unit: "$1,234.56" for cost budgets, "1.2M tokens" for token budgets."""
    if value is None or value == "":
        return "—"
    return f"{tokens(value)} tokens" if metric == Metric.TOKENS else usd(value)


@register.simple_tag(takes_context=True)
def open_alerts_count(context) -> int:
    """Unacknowledged alerts the signed-in person may see, for the badge in the main menu (one COUNT).

    Counted on the budget, control and alert pages only (their views set `count_open_alerts`): the
    spend pages keep to their measured query budgets, and the badge is where alerts are handled.
    """
    scope = context.get("scope")
    if not context.get("count_open_alerts") or scope is None:
        return 0
    return alerts_unacknowledged_count(scope=scope)


@register.filter
def words(value) -> str:
    """A machine name as words: "cap_output_tokens" -> "cap output tokens"."""
    return str(value).replace("_", " ")
