"""The layout context of the budget pages: the spend pages' one, plus the open-alerts badge."""

from __future__ import annotations

from finops.views.scope import PageScope, layout_context


def budget_layout_context(request, scope: PageScope, *, switcher_action: str | None = None) -> dict:
    return {**layout_context(request, scope, switcher_action=switcher_action), "count_open_alerts": True}
