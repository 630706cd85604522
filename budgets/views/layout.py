"""The layout context of the budget pages: the spend pages' one, plus the open-alerts and pending-approvals
badges (counted here only, so the spend pages keep to their measured query budgets)."""

from __future__ import annotations

from budgets.selectors import approvals_pending_count
from finops.views.layout import layout_context
from tenants.scope import TenantScope


def budget_layout_context(request, scope: TenantScope, *, switcher_action: str | None = None) -> dict:
    return {
        **layout_context(request, scope, switcher_action=switcher_action),
        "count_open_alerts": True,
        "approvals_pending": approvals_pending_count(scope=scope),
    }
