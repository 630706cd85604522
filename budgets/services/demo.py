"""Demo budgets on top of the demo data set (finops/services/seed/): something to see on the budget,
control and alert pages right after `seed_demo`, which runs this as a demo seeder registered in
budgets/apps.py (finops.hooks).

- a platform-wide monthly budget and a monthly budget for each main tenant, with room to spare;
- a weekly token budget on one workflow (budgets in tokens look different);
- a daily budget for the spiking tenant (Northwind, whose chat assistant tripled after a release),
  over its soft limit and at 96% of its hard limit, so the evaluation that follows starts the ladder's
  controls for it and raises its alerts;
- one email channel that receives every alert, and the spiking tenant's own one;
- one pending approval request of each kind for the spiking tenant: a long chat-assistant run that
  preflight held because the ladder's require-approval control is on (or, without it, the workflow's
  threshold), its admin's request to double today's hard limit, and a chat-assistant prompt version
  whose system prompt grew well past its review threshold (a prompt_change review).

Limits are sized from the demo's own spend when a budget is created, so the picture is the same
whatever range of days was seeded. Idempotent: budgets and the channel are created only when
missing (an operator's later edits are kept); the demo budgets' current windows are recomputed from
the rollups (the demo's records are bulk-loaded, not ingested, so nothing charged them), and the
evaluation, which starts each rung at most once per window, runs again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from budgets.models import (
    ApprovalRequest,
    Budget,
    Control,
    ControlKind,
    HardAction,
    Metric,
    NotificationChannel,
    Period,
)
from budgets.periods import period_bounds
from budgets.services.controls import active_controls_q
from finops.catalog import get_catalog
from finops.models import Environment, Workflow
from finops.pricing import NANOS_PER_USD, TokenBuckets, cost_nanos
from finops.services.prompts import prompt_version_register
from finops.services.seed.demo_live import demo_expected_spend
from finops.templatetags.money import usd_rate
from tenants.models import ApiKey, Tenant
from tenants.scope import Actor
from tenants.services import audit_record

from .budget_increases import budget_increase_ask
from .budgets import budget_create
from .ladder import budgets_evaluate
from .notifications import channel_create
from .reconcile import window_reconcile
from .windows import windows_open

DEMO_CHANNEL_EMAIL = "finops-alerts@demo.example"
DEMO_TENANT_CHANNEL_EMAIL = "ai-spend@northwind.demo.example"
# Limits as multiples of the window's expected spend at the normal rhythm.
SPIKE_SOFT = Decimal("0.5")  # the spiking tenant's daily budget: a tight soft limit, as its own cap would be
SPIKE_HARD = Decimal("2.5")  # room for a normal day, twice over: the release's traffic ends near it
# ... but never below the day the release's traffic makes, with room to spare: the release takes the
# spiking tenant over its soft limit, only an incident (the demo's runaway loop) over its hard limit,
# whatever the hour the demo was seeded (late in New York's evening the release alone passed 2.5).
SPIKE_HARD_OVER_RELEASE = Decimal("1.25")
HEALTHY_SOFT = Decimal("1.25")
HEALTHY_HARD = Decimal("1.6")
CENT = NANOS_PER_USD // 100
# The demo's held run: the spiking tenant's chat assistant with a long conversation in its context.
APPROVAL_TENANT = "northwind"
APPROVAL_WORKFLOW = "chat-assistant"
APPROVAL_MODEL = "claude-sonnet-4-5"
APPROVAL_TOKENS = TokenBuckets(input=180_000, output=8_000)


@dataclass(frozen=True)
class _DemoBudget:
    name: str
    tenant: str | None
    period: str
    time_zone: str
    workflow: str | None = None
    metric: str = Metric.COST
    hard_action: str = HardAction.DENY
    spiking: bool = False
    # The demo's seeded history never went through preflight, so every hard-limited budget would raise
    # an "unreserved spend" alert; one budget keeps the alert to show it, the others leave it off.
    unreserved_alert_pct: Decimal | None = None


# fmt: off
_BUDGETS = (
    _DemoBudget("Platform monthly", None, Period.MONTH, "UTC", hard_action=HardAction.REQUIRE_APPROVAL),
    _DemoBudget("Northwind Traders monthly", "northwind", Period.MONTH, "America/New_York"),
    _DemoBudget("Initech monthly", "initech", Period.MONTH, "America/Los_Angeles",
                unreserved_alert_pct=Decimal(5)),
    _DemoBudget("Stark Logistics monthly", "stark-logistics", Period.MONTH, "America/Chicago",
                hard_action=HardAction.DOWNGRADE),
    _DemoBudget("Umbrella Health monthly", "umbrella-health", Period.MONTH, "Europe/Berlin",
                hard_action=HardAction.REQUIRE_APPROVAL),
    _DemoBudget("Initech SQL copilot tokens", "initech", Period.WEEK, "America/Los_Angeles",
                workflow="sql-copilot", metric=Metric.TOKENS),
    _DemoBudget("Northwind Traders daily", "northwind", Period.DAY, "America/New_York", spiking=True),
)
# fmt: on


def budgets_demo_seed(*, now: datetime | None = None) -> dict:
    """Create the demo budgets and channel when missing, bring their windows in step, evaluate them."""
    now = now or timezone.now()
    tenants = {t.slug: t for t in Tenant.objects.filter(slug__in={b.tenant for b in _BUDGETS if b.tenant})}
    if len(tenants) < len({b.tenant for b in _BUDGETS if b.tenant}):
        return {"budgets_created": 0, "skipped": "the demo tenants are not seeded"}
    workflows = {w.slug: w for w in Workflow.objects.filter(slug__in={b.workflow for b in _BUDGETS if b.workflow})}
    operator = get_user_model().objects.filter(username="demo", is_staff=True).first()

    if not NotificationChannel.objects.filter(kind=NotificationChannel.Kind.EMAIL, target=DEMO_CHANNEL_EMAIL).exists():
        channel_create(
            tenant=None, kind=NotificationChannel.Kind.EMAIL, target=DEMO_CHANNEL_EMAIL, actor=Actor(user=operator)
        )
    # The spiking tenant's own channel: its members see these deliveries (never the operators' channel's).
    spiking_slug = next(b.tenant for b in _BUDGETS if b.spiking)
    spiking = tenants.get(spiking_slug) if spiking_slug is not None else None
    if not NotificationChannel.objects.filter(tenant=spiking, target=DEMO_TENANT_CHANNEL_EMAIL).exists():
        channel_create(
            tenant=spiking,
            kind=NotificationChannel.Kind.EMAIL,
            target=DEMO_TENANT_CHANNEL_EMAIL,
            actor=Actor(user=operator),
        )

    created = 0
    budgets = []
    for spec in _BUDGETS:
        tenant = tenants.get(spec.tenant) if spec.tenant else None
        workflow = workflows.get(spec.workflow) if spec.workflow else None
        budget = Budget.objects.filter(name=spec.name, tenant=tenant).first()
        if budget is None:
            draft = Budget(
                name=spec.name,
                tenant=tenant,
                workflow=workflow,
                metric=spec.metric,
                period=spec.period,
                time_zone=spec.time_zone,
                hard_action=spec.hard_action,
            )
            soft, hard = _limits(draft, spiking=spec.spiking, now=now)
            budget = budget_create(
                actor=Actor(user=operator),
                name=spec.name,
                tenant=tenant,
                workflow=workflow,
                metric=spec.metric,
                period=spec.period,
                time_zone=spec.time_zone,
                hard_action=spec.hard_action,
                soft_limit=soft,
                hard_limit=hard,
                unreserved_alert_pct=spec.unreserved_alert_pct,
            )
            created += 1
        budgets.append(budget)

    keys = [(b, *period_bounds(b.period, b.time_zone, now)) for b in budgets if b.is_active]
    for window in windows_open(keys).values():
        window_reconcile(window_id=window.pk, now=now)
    evaluated = budgets_evaluate(now=now)
    approvals = _approval_demo_seed(tenant=tenants[APPROVAL_TENANT], now=now)
    approvals += _increase_demo_seed(tenant=tenants[APPROVAL_TENANT], now=now)
    approvals += _prompt_demo_seed(tenant=tenants[APPROVAL_TENANT], now=now)
    return {"budgets_created": created, "approvals_created": approvals, **evaluated}


def _approval_demo_seed(*, tenant: Tenant, now: datetime) -> int:
    """One pending request for the spiking tenant, written the way preflight writes one; only when it has none."""
    if ApprovalRequest.objects.filter(
        kind=ApprovalRequest.Kind.WORKFLOW_RUN, tenant=tenant, status=ApprovalRequest.Status.PENDING, expires_at__gt=now
    ).exists():
        return 0
    workflow = Workflow.objects.filter(slug=APPROVAL_WORKFLOW).first()
    catalog = get_catalog()
    entry = catalog.resolve(APPROVAL_MODEL)
    price = catalog.price_at(entry.id, now) if entry else None
    threshold = workflow.approval_threshold_usd if workflow else None
    above = f" above {usd_rate(threshold)}" if threshold is not None else ""
    control = (
        Control.objects.filter(active_controls_q(now), tenant=tenant, kind=ControlKind.REQUIRE_APPROVAL)
        .order_by("-starts_at")
        .first()
    )
    why = control.reason if control else f"the {workflow.name if workflow else 'workflow'}'s approval threshold"
    held = ApprovalRequest.objects.create(
        kind=ApprovalRequest.Kind.WORKFLOW_RUN,
        tenant=tenant,
        workflow=workflow,
        model_id=entry.id if entry else None,
        environment=Environment.PROD,
        estimated_cost_nanos=cost_nanos(price, APPROVAL_TOKENS) if price else None,
        estimated_tokens=APPROVAL_TOKENS.input + APPROVAL_TOKENS.output,
        requested_by_key=ApiKey.objects.filter(tenant=tenant).order_by("id").first(),
        reasons=[f"Approval required{above}: {why}"],
        rules={
            "held_by": [{"rule": "control", "control_id": control.pk} if control else {"rule": "workflow_threshold"}],
            "requester_id": None,
            "deciders": "the tenant's approvers and admins, and operators; never the requester",
            "ttl_seconds": settings.APPROVAL_TTL_SECONDS,
        },
        created_at=now,
        expires_at=now + timedelta(seconds=settings.APPROVAL_TTL_SECONDS),
    )
    # As preflight's approval_open records it (without the notice: the demo's channels are examples).
    audit_record(
        action="approval.open",
        tenant=tenant,
        actor=Actor(api_key=held.requested_by_key),
        target=held,
        after={"kind": held.kind, "status": held.status, "rules": held.rules},
    )
    return 1


def _increase_demo_seed(*, tenant: Tenant, now: datetime) -> int:
    """The spiking tenant's admin asks for a higher hard limit on its daily budget for today; only when no
    increase is waiting. The demo approver (or an operator) decides it on the approvals page."""
    if ApprovalRequest.objects.filter(
        kind=ApprovalRequest.Kind.BUDGET_INCREASE,
        tenant=tenant,
        status=ApprovalRequest.Status.PENDING,
        expires_at__gt=now,
    ).exists():
        return 0
    budget = Budget.objects.filter(tenant=tenant, period=Period.DAY, is_active=True).order_by("id").first()
    admin = get_user_model().objects.filter(username=f"{tenant.slug}-admin").first()
    if budget is None or budget.hard_limit is None or admin is None:
        return 0
    window = windows_open([(budget, *period_bounds(budget.period, budget.time_zone, now))])
    current = next(iter(window.values())).hard_limit or budget.hard_limit
    budget_increase_ask(
        budget=budget,
        new_soft_limit=None,
        new_hard_limit=current * 2,
        current_window_only=True,
        justification="The chat assistant release tripled traffic; we need today's calls to go through.",
        actor=Actor(user=admin),
    )
    return 1


# The demo's prompt change: the chat assistant's system prompt gains the whole returns policy.
PROMPT_BASE = (
    "You are Northwind Traders' in-app assistant. Answer questions about orders, deliveries and returns.\n"
    "Be brief: three sentences at most, then offer to do more.\n"
    "Never promise refunds; link the returns page instead.\n"
    "If the customer is angry, apologise once and hand over to a person with the handover tool.\n"
)
PROMPT_GROWN = PROMPT_BASE + (
    "\nReturns policy, quoted in full when a customer asks about a return:\n"
    "- Items can be returned within 30 days of delivery, unused and in their original packaging.\n"
    "- Perishable goods, gift cards and personalised items cannot be returned.\n"
    "- Refunds go to the original payment method within 5 to 10 business days of our receiving the item.\n"
    "- Customers in the EU may withdraw from a purchase within 14 days without giving a reason.\n"
    "Always end a returns answer with the link to the returns page and the order number.\n"
)


def _prompt_demo_seed(*, tenant: Tenant, now: datetime) -> int:
    """The spiking tenant's chat assistant has an active prompt version and a longer one waiting for a
    review (a prompt_change request), as a CI pipeline would have registered them; idempotent."""
    workflow = Workflow.objects.filter(slug=APPROVAL_WORKFLOW).first()
    admin = get_user_model().objects.filter(username=f"{tenant.slug}-admin").first()
    if workflow is None or admin is None:
        return 0
    grown = None
    for label, text, commit in (("assistant-v2", PROMPT_BASE, "4be1c07"), ("assistant-v3", PROMPT_GROWN, "9f2c1ab")):
        grown = prompt_version_register(
            tenant=tenant,
            workflow=workflow,
            label=label,
            text=text,
            model_name=APPROVAL_MODEL,
            git_commit=commit,
            actor=Actor(user=admin),
            now=now,
        )
    assert grown is not None
    return int(grown.created and grown.review is not None)


def _limits(draft: Budget, *, spiking: bool, now: datetime) -> tuple[int, int]:
    """(soft, hard) for a new demo budget, in its unit, from what its scope is expected to spend over its
    whole window at the demo's normal rhythm (finops.services.seed.demo_live), never from the part of
    the window that happens to have passed when the seed ran. The spiking tenant's budget is sized for
    its normal day; the release that tripled its chat assistant's traffic is what takes it over."""
    start, end = period_bounds(draft.period, draft.time_zone, now)
    expected = demo_expected_spend(
        start=start, end=end, metric=draft.metric, tenant_id=draft.tenant_id, workflow_id=draft.workflow_id, now=now
    )
    if expected <= 0:
        expected = 100 * NANOS_PER_USD if draft.metric == Metric.COST else 10_000_000
    if spiking:
        with_release = demo_expected_spend(
            start=start,
            end=end,
            metric=draft.metric,
            tenant_id=draft.tenant_id,
            workflow_id=draft.workflow_id,
            now=now,
            with_release=True,
        )
        hard = max(_nice(expected * SPIKE_HARD), _nice(Decimal(with_release) * SPIKE_HARD_OVER_RELEASE))
        return _nice(expected * SPIKE_SOFT), hard
    return _nice(expected * HEALTHY_SOFT), _nice(expected * HEALTHY_HARD)


def _round(amount: Decimal | int, unit: int, rounding: str) -> int:
    return int((Decimal(amount) / unit).to_integral_value(rounding=rounding)) * unit


def _nice(amount: Decimal) -> int:
    """Up to two significant digits, the way people set limits: 1,234.56 -> 1,300."""
    exponent = max(Decimal(amount).adjusted() - 1, 0)
    step = 10**exponent
    return _round(amount, step, ROUND_CEILING)
