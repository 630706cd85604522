"""Spend that bypassed preflight: usage without a reservation_id on a budget with a hard limit.

A service that calls the provider without asking preflight first is invisible to every hard limit
until its usage arrives (LiteLLM #12977: a $50 budget ended at $764.78 through an unguarded client).
Ingest counts such usage on each matching hard-limited window (`BudgetWindow.unreserved_spent`, part of
`spent`); the evaluation job raises an `unreserved` alert once per window when its share of the
window's spend passes the budget's `unreserved_alert_pct`, naming the workflows and API keys that
sent it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Aggregate, Count, F, Sum
from django.db.models.functions import Coalesce

from budgets.models import Alert, Budget, BudgetWindow, Metric
from finops.models import UsageRecord
from finops.templatetags.money import usd_sentence

from .alerts import notifications_create

TOP_SOURCES = 5


@dataclass(frozen=True, slots=True)
class UnreservedSource:
    label: str  # a workflow slug or an API key's name and prefix
    amount: int  # in the budget's unit
    calls: int


def amount_format(budget: Budget, amount: int) -> str:
    return f"{amount:,} tokens" if budget.metric == Metric.TOKENS else usd_sentence(amount)


def unreserved_share(window: BudgetWindow) -> Decimal | None:
    """Percent of the window's spend that arrived without a reservation (None when nothing was spent)."""
    if not window.spent:
        return None
    return (Decimal(window.unreserved_spent) * 100 / Decimal(window.spent)).quantize(Decimal("0.01"))


def _unreserved_records(budget: Budget, window: BudgetWindow):
    records = UsageRecord.objects.filter(
        reservation_id__isnull=True, occurred_at__gte=window.starts_at, occurred_at__lt=window.ends_at
    )
    if budget.tenant_id is not None:
        records = records.filter(tenant_id=budget.tenant_id)
    if budget.workflow_id is not None:
        records = records.filter(workflow_id=budget.workflow_id)
    if budget.environment:
        records = records.filter(environment=budget.environment)
    if budget.tier_id is not None:
        records = records.filter(model__tier_id=budget.tier_id)
    return records


def unreserved_totals(*, budget: Budget, window: BudgetWindow) -> tuple[int, int] | None:
    """The window's unreserved (amount, calls) recomputed from the records, for a tenant's hard-limited
    budget (one indexed query); None for other budgets, whose count stays what ingest charged (an
    all-tenant recount would scan every tenant's month)."""
    if budget.hard_limit is None or budget.tenant_id is None:
        return None
    totals = _unreserved_records(budget, window).aggregate(amount=_amount(budget), calls=Count("id"))
    return int(totals["amount"] or 0), totals["calls"]


def _amount(budget: Budget) -> Aggregate | Coalesce:
    if budget.metric == Metric.TOKENS:
        return Sum(
            F("input_tokens")
            + F("cached_input_tokens")
            + F("cache_write_tokens")
            + F("output_tokens")
            + F("reasoning_tokens")
        )
    return Coalesce(Sum("cost_nanos"), 0)


def unreserved_sources(*, budget: Budget, window: BudgetWindow) -> dict[str, list[UnreservedSource]]:
    """The workflows and API keys that sent the window's unreserved usage, largest first."""
    amount = _amount(budget)
    records = _unreserved_records(budget, window)
    out: dict[str, list[UnreservedSource]] = {}
    for key, field, label in (
        ("workflows", "workflow__slug", lambda r: r["workflow__slug"] or "(no workflow)"),
        ("api_keys", "api_key_id", None),
    ):
        fields = [field] if label else ["api_key_id", "api_key__name", "api_key__prefix"]
        rows = records.values(*fields).annotate(total=amount, calls=Count("id")).order_by("-total")[:TOP_SOURCES]
        out[key] = [
            UnreservedSource(
                label=label(row)
                if label
                else (f"{row['api_key__name']} ({row['api_key__prefix']}…)" if row["api_key_id"] else "(no key)"),
                amount=row["total"] or 0,
                calls=row["calls"],
            )
            for row in rows
        ]
    return out


def unreserved_alert_raise(*, budget: Budget, window: BudgetWindow, now: datetime) -> Alert | None:
    """Raise the window's unreserved alert when its share passed the budget's; once per window."""
    if budget.hard_limit is None or budget.unreserved_alert_pct is None or not window.unreserved_calls:
        return None
    share = unreserved_share(window)
    if share is None or share <= budget.unreserved_alert_pct:
        return None
    level = int(budget.unreserved_alert_pct)
    if Alert.objects.filter(window=window, kind=Alert.Kind.UNRESERVED).exists():
        return None
    sources = unreserved_sources(budget=budget, window=window)

    def listed(items: list[UnreservedSource]) -> str:
        return ", ".join(f"{s.label} {amount_format(budget, s.amount)} in {s.calls:,} calls" for s in items) or "—"

    subject = f"[Tokenspend] {budget.name}: {share}% of spend bypassed preflight"
    message = (
        f"{amount_format(budget, window.unreserved_spent)} of {amount_format(budget, window.spent)} "
        f"({share}%, {window.unreserved_calls:,} calls) arrived without a preflight reservation, above the "
        f"{budget.unreserved_alert_pct}% this budget allows. Such calls are not held against the hard limit "
        f"before they run, so the limit can be overrun.\n"
        f"Workflows sending it: {listed(sources['workflows'])}.\n"
        f"API keys sending it: {listed(sources['api_keys'])}.\n"
        f"Window: {window.starts_at:%Y-%m-%d %H:%M} to {window.ends_at:%Y-%m-%d %H:%M} UTC. "
        f"Scope: {budget.scope_label()}."
    )
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                kind=Alert.Kind.UNRESERVED,
                level=level,
                tenant=budget.tenant,
                budget=budget,
                window=window,
                subject=subject[:300],
                message=message,
                created_at=now,
            )
            notifications_create(alert)
    except IntegrityError:
        return None
    return alert
