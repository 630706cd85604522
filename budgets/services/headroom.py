"""The budgets a preflight consulted, as its answer reports them: totals, limits and headroom."""

from __future__ import annotations

from budgets.models import BudgetWindow, Metric
from finops.pricing import nanos_to_usd

from .windows import BudgetEntry


def windows_totals(window_ids: list[int]) -> dict[int, tuple]:
    return {
        pk: (spent, reserved, soft, hard)
        for pk, spent, reserved, soft, hard in BudgetWindow.objects.filter(pk__in=window_ids).values_list(
            "pk", "spent", "reserved", "soft_limit", "hard_limit"
        )
    }


def amount_format(budget: BudgetEntry, amount: int) -> str:
    return f"{amount:,} tokens" if budget.metric == Metric.TOKENS else f"${nanos_to_usd(amount)}"


def budget_views(pairs, totals: dict[int, tuple]) -> list[dict]:
    return [budget_view(b, bounds, totals[w]) for b, w, bounds in pairs if w in totals]


def budget_view(budget: BudgetEntry, bounds: tuple, totals: tuple) -> dict:
    """A consulted budget as the client sees it; money as USD strings, tokens as integers."""
    money = budget.metric == Metric.COST
    spent, reserved, soft, hard = totals

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
        "spent": amount(spent),
        "reserved": amount(reserved),
        "soft_limit": amount(soft),
        "hard_limit": amount(hard),
        "remaining": amount(max(hard - spent - reserved, 0)) if hard is not None else None,
        "hard_action": budget.hard_action,
    }
