"""The budgets a preflight consulted, as its answer reports them: totals, limits and headroom."""

from __future__ import annotations

from budgets.models import BudgetWindow, Metric
from budgets.services.windows import BudgetEntry
from finops.pricing import nanos_to_usd


def windows_totals(window_ids: list[int]) -> dict[int, tuple]:
    return {
        pk: (spent, reserved, soft, hard)
        for pk, spent, reserved, soft, hard in BudgetWindow.objects.filter(pk__in=window_ids).values_list(
            "pk", "spent", "reserved", "soft_limit", "hard_limit"
        )
    }


def amount_format(budget: BudgetEntry, amount: int) -> str:
    return f"{amount:,} tokens" if budget.metric == Metric.TOKENS else f"${nanos_to_usd(amount)}"


def budget_views(pairs, totals: dict[int, tuple], *, platform: bool) -> list[dict]:
    return [budget_view(b, bounds, totals[w], platform=platform) for b, w, bounds in pairs if w in totals]


def budget_view(budget: BudgetEntry, bounds: tuple, totals: tuple, *, platform: bool) -> dict:
    """A consulted budget as the client sees it; money as USD strings, tokens as integers.

    A platform-wide budget seen by a tenant shows that it applied and the headroom left under it,
    never its spend, reservations or limits (they add up every tenant's calls).
    """
    money = budget.metric == Metric.COST
    spent, reserved, soft, hard = totals
    remaining = max(hard - spent - reserved, 0) if hard is not None else None
    hidden = budget.tenant_id is None and not platform

    def amount(value):
        if value is None:
            return None
        return nanos_to_usd(value) if money else value

    return {
        "id": budget.id,
        "name": budget.name,
        "metric": budget.metric,
        "period": budget.period,
        "window_start": bounds[0],
        "window_end": bounds[1],
        "platform_wide": budget.tenant_id is None,
        "spent": None if hidden else amount(spent),
        "reserved": None if hidden else amount(reserved),
        "soft_limit": None if hidden else amount(soft),
        "hard_limit": None if hidden else amount(hard),
        "remaining": amount(remaining),
        "hard_action": budget.hard_action,
    }
