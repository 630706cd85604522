"""Creating, changing and retiring budgets (audited), with the open window kept in step."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.utils import timezone

from budgets.models import Budget, BudgetWindow, Control, Metric
from budgets.periods import zone
from budgets.policy import policy_validate
from finops.errors import ApplicationError
from finops.pricing import NANOS_PER_USD, nanos_to_usd
from tenants.services import audit_record

from .controls import control_end

EDITABLE = (
    "name",
    "tenant",
    "workflow",
    "environment",
    "tier",
    "metric",
    "period",
    "time_zone",
    "soft_limit",
    "hard_limit",
    "hard_action",
    "policy",
    "is_active",
)


def limit_parse(value, metric: str, field: str) -> int | None:
    """A limit as sent (USD decimal string for cost, whole tokens for tokens) -> integer in the budget's unit."""
    if value is None or value == "":
        return None
    if metric == Metric.TOKENS:
        if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
            raise _invalid(field, "A token limit must be a whole number of tokens.")
        amount = int(value)
    else:
        if isinstance(value, float):
            raise _invalid(field, 'Send money as a decimal string, e.g. "250.00", not a float.')
        try:
            usd = Decimal(str(value))
        except InvalidOperation:
            raise _invalid(field, 'Must be an amount in USD, e.g. "250.00".') from None
        nanos = usd * NANOS_PER_USD
        if not usd.is_finite() or nanos != nanos.to_integral_value():
            raise _invalid(field, "Must be an amount in USD with at most 9 decimal places.")
        amount = int(nanos)
    if amount <= 0:
        raise _invalid(field, "Must be greater than zero.")
    return amount


def limit_format(amount: int | None, metric: str) -> str | int | None:
    if amount is None:
        return None
    return amount if metric == Metric.TOKENS else nanos_to_usd(amount)


def _invalid(field: str, message: str) -> ApplicationError:
    return ApplicationError("invalid", message, details={field: [message]}, status_code=400)


def _validate(budget: Budget) -> None:
    if not budget.name.strip():
        raise _invalid("name", "A budget needs a name.")
    if budget.soft_limit is None and budget.hard_limit is None:
        raise _invalid("hard_limit", "Set a soft limit, a hard limit, or both.")
    if budget.soft_limit is not None and budget.hard_limit is not None and budget.soft_limit > budget.hard_limit:
        raise _invalid("soft_limit", "The soft limit must not be above the hard limit.")
    try:
        zone(budget.time_zone)
    except ValueError as exc:
        raise _invalid("time_zone", str(exc)) from None
    try:
        budget.policy = policy_validate(budget.policy)
    except ValueError as exc:
        raise _invalid("policy", str(exc)) from None


def budget_snapshot(budget: Budget) -> dict:
    return {
        "name": budget.name,
        "scope": budget.scope_label(),
        "metric": budget.metric,
        "period": budget.period,
        "time_zone": budget.time_zone,
        "soft_limit": limit_format(budget.soft_limit, budget.metric),
        "hard_limit": limit_format(budget.hard_limit, budget.metric),
        "hard_action": budget.hard_action,
        "policy": budget.policy,
        "is_active": budget.is_active,
    }


@transaction.atomic
def budget_create(*, actor_user=None, actor_key=None, **fields) -> Budget:
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise ValueError(f"Not editable: {', '.join(sorted(unknown))}")
    budget = Budget(created_by=actor_user if getattr(actor_user, "pk", None) else None, **fields)
    _validate(budget)
    budget.save()
    audit_record(
        action="budget.create",
        tenant=budget.tenant,
        actor_user=actor_user,
        actor_key=actor_key,
        target=budget,
        after=budget_snapshot(budget),
    )
    return budget


@transaction.atomic
def budget_update(*, budget: Budget, actor_user=None, actor_key=None, **changes) -> Budget:
    """Change a budget; its open windows take the new limits at once (so reservations see them)."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"Not editable: {', '.join(sorted(unknown))}")
    before = budget_snapshot(budget)
    if "metric" in changes and changes["metric"] != budget.metric and budget.windows.exists():
        raise _invalid("metric", "A budget with history cannot change its metric; create a new budget.")
    for name, value in changes.items():
        setattr(budget, name, value)
    _validate(budget)
    budget.save()
    now = timezone.now()
    BudgetWindow.objects.filter(budget=budget, ends_at__gt=now).update(
        soft_limit=budget.soft_limit, hard_limit=budget.hard_limit
    )
    if not budget.is_active:
        _end_controls(budget, "The budget was deactivated.", actor_user, actor_key)
    audit_record(
        action="budget.update",
        tenant=budget.tenant,
        actor_user=actor_user,
        actor_key=actor_key,
        target=budget,
        before=before,
        after=budget_snapshot(budget),
    )
    return budget


def budget_deactivate(*, budget: Budget, actor_user=None, actor_key=None) -> Budget:
    """Retire a budget but keep its windows, controls and alerts as history."""
    return budget_update(budget=budget, actor_user=actor_user, actor_key=actor_key, is_active=False)


def _end_controls(budget: Budget, reason: str, actor_user, actor_key) -> None:
    now = timezone.now()
    for control in Control.objects.filter(budget=budget, starts_at__lte=now).exclude(ends_at__lte=now):
        control_end(control=control, reason=reason, actor_user=actor_user, actor_key=actor_key, now=now)
