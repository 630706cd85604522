"""Creating, changing and retiring budgets (audited), with the open window kept in step."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Literal

from django.db import transaction
from django.utils import timezone

from budgets.models import Budget, BudgetWindow, Control, HardAction, Metric, Period
from budgets.periods import zone
from budgets.policy import policy_validate
from finops.models import Environment, ModelTier, Workflow
from finops.pricing import NANOS_PER_USD, nanos_to_usd
from tenants.errors import ApplicationError
from tenants.models import Tenant
from tenants.scope import Actor
from tenants.services import audit_record

from .controls import control_end


class Keep(Enum):
    """`budget_update`'s default for a field: leave it as it is."""

    KEEP = "keep"


KEEP: Literal[Keep.KEEP] = Keep.KEEP
_MAX_AMOUNT = 2**63 - 1  # a bigint column


# Limits are stored as PostgreSQL bigint: tokens, or nano-USD (so at most ~9.2 billion USD).
MAX_LIMIT = 2**63 - 1


def limit_parse(value, metric: str, field: str) -> int | None:
    """A limit as sent (USD decimal string for cost, whole tokens for tokens) -> integer in the budget's unit."""
    if value is None or value == "":
        return None
    if metric == Metric.TOKENS:
        text = str(value)
        if isinstance(value, bool) or not isinstance(value, int | str) or not (text.isascii() and text.isdigit()):
            raise _invalid(field, "A token limit must be a whole number of tokens.")
        if len(text) > 19 or int(text) > MAX_LIMIT:
            raise _invalid(field, f"A token limit must be at most {MAX_LIMIT:,} tokens.")
        amount = int(text)
    else:
        if isinstance(value, float):
            raise _invalid(field, 'Send money as a decimal string, e.g. "250.00", not a float.')
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise _invalid(field, 'Must be an amount in USD, e.g. "250.00".')
        try:
            usd = Decimal(str(value).strip())
        except InvalidOperation:
            raise _invalid(field, 'Must be an amount in USD, e.g. "250.00".') from None
        # Checked before any arithmetic: sNaN raises on use, and 1E+999999 would build a million-digit integer.
        if not usd.is_finite():
            raise _invalid(field, 'Must be an amount in USD, e.g. "250.00".')
        if usd > Decimal(MAX_LIMIT) / NANOS_PER_USD:
            raise _invalid(field, f"Must be at most {nanos_to_usd(MAX_LIMIT)} USD.")
        nanos = usd * NANOS_PER_USD
        if nanos != nanos.to_integral_value():
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
    for field, choices in (
        ("metric", Metric.values),
        ("period", Period.values),
        ("hard_action", HardAction.values),
        ("environment", ["", *Environment.values]),
    ):
        if getattr(budget, field) not in choices:
            raise _invalid(field, f"{field} must be one of {', '.join(c for c in choices if c)}.")
    for field in ("soft_limit", "hard_limit"):
        amount = getattr(budget, field)
        if amount is not None and (type(amount) is not int or amount <= 0):
            raise _invalid(field, "Must be a whole number greater than zero, in the budget's unit.")
        if amount is not None and amount > _MAX_AMOUNT:
            raise _invalid(field, f"Must be at most {limit_format(_MAX_AMOUNT, budget.metric)}.")
    if budget.soft_limit is None and budget.hard_limit is None:
        raise _invalid("hard_limit", "Set a soft limit, a hard limit, or both.")
    share = budget.unreserved_alert_pct
    if share is not None and not (isinstance(share, Decimal) and Decimal(0) <= share <= Decimal(100)):
        raise _invalid("unreserved_alert_pct", "A percent between 0 and 100, or null for no alert.")
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
        "unreserved_alert_pct": None if budget.unreserved_alert_pct is None else f"{budget.unreserved_alert_pct}",
    }


@transaction.atomic
def budget_create(
    *,
    name: str,
    tenant: Tenant | None = None,
    workflow: Workflow | None = None,
    environment: str = "",
    tier: ModelTier | None = None,
    metric: str = Metric.COST,
    period: str = Period.MONTH,
    time_zone: str = "UTC",
    soft_limit: int | None = None,
    hard_limit: int | None = None,
    hard_action: str = HardAction.DENY,
    policy: list[dict] | None = None,
    is_active: bool = True,
    unreserved_alert_pct: Decimal | None = Decimal(5),
    actor: Actor = Actor.system(),
) -> Budget:
    """Create a budget, audited. Limits are integers in the budget's unit (see `limit_parse`); `policy` is
    checked rung by rung (budgets.policy) so that the ladder and preflight can always read it."""
    budget = Budget(
        name=name,
        tenant=tenant,
        workflow=workflow,
        environment=environment,
        tier=tier,
        metric=metric,
        period=period,
        time_zone=time_zone,
        soft_limit=soft_limit,
        hard_limit=hard_limit,
        hard_action=hard_action,
        policy=policy,
        is_active=is_active,
        unreserved_alert_pct=unreserved_alert_pct,
        created_by=actor.actor_user,
    )
    _validate(budget)
    budget.save()
    audit_record(
        action="budget.create",
        tenant=budget.tenant,
        actor=actor,
        target=budget,
        after=budget_snapshot(budget),
    )
    return budget


@transaction.atomic
def budget_update(
    *,
    budget: Budget,
    name: str | Keep = KEEP,
    tenant: Tenant | None | Keep = KEEP,
    workflow: Workflow | None | Keep = KEEP,
    environment: str | Keep = KEEP,
    tier: ModelTier | None | Keep = KEEP,
    metric: str | Keep = KEEP,
    period: str | Keep = KEEP,
    time_zone: str | Keep = KEEP,
    soft_limit: int | None | Keep = KEEP,
    hard_limit: int | None | Keep = KEEP,
    hard_action: str | Keep = KEEP,
    policy: list[dict] | None | Keep = KEEP,
    is_active: bool | Keep = KEEP,
    unreserved_alert_pct: Decimal | None | Keep = KEEP,
    actor: Actor = Actor.system(),
) -> Budget:
    """Change the given fields of a budget (the others are kept), audited, with the same checks as
    `budget_create`; its open windows take the new limits at once (so reservations see them)."""
    given: dict[str, Any] = {
        "name": name,
        "tenant": tenant,
        "workflow": workflow,
        "environment": environment,
        "tier": tier,
        "metric": metric,
        "period": period,
        "time_zone": time_zone,
        "soft_limit": soft_limit,
        "hard_limit": hard_limit,
        "hard_action": hard_action,
        "policy": policy,
        "is_active": is_active,
        "unreserved_alert_pct": unreserved_alert_pct,
    }
    changes = {field: value for field, value in given.items() if value is not KEEP}
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
        _end_controls(budget, "The budget was deactivated.", actor)
    audit_record(
        action="budget.update",
        tenant=budget.tenant,
        actor=actor,
        target=budget,
        before=before,
        after=budget_snapshot(budget),
    )
    return budget


def budget_deactivate(*, budget: Budget, actor: Actor = Actor.system()) -> Budget:
    """Retire a budget but keep its windows, controls and alerts as history."""
    return budget_update(budget=budget, actor=actor, is_active=False)


def _end_controls(budget: Budget, reason: str, actor: Actor) -> None:
    now = timezone.now()
    for control in Control.objects.filter(budget=budget, starts_at__lte=now).exclude(ends_at__lte=now):
        control_end(control=control, reason=reason, actor=actor, now=now)
