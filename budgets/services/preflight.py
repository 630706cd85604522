"""Preflight: decide, before an LLM call, whether it may run, on which model and with what limits.

Order of work (DESIGN.md sections 7 and 8):
1. resolve the model and workflow, count the input when text is sent, default max output tokens;
2. apply the active controls that match the call, most restrictive first (deny, require approval,
   downgrade, compress context, cap output);
3. estimate the cost of the call as it will run (effective model, input target, output cap);
4. reserve the estimate on every matching window with a hard limit, atomically; a full window
   applies its budget's hard action (deny, require approval, or downgrade and try again).
A decision is an answer, never an error: only bad input or authentication raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from budgets.estimates import model_family, safety_factor
from budgets.headroom import amount_format, budget_views, windows_totals
from budgets.models import ApprovalRequest, Control, ControlKind, HardAction, Metric
from budgets.state import preflight_state
from finops.catalog import CatalogSnapshot, ModelEntry, channel_from_model_name
from finops.models import Workflow
from finops.pricing import API, NANOS_PER_USD, STANDARD, nanos_to_usd, worst_case_nanos
from finops.templatetags.money import usd_rate, usd_sentence
from finops.tokens import TokenInputInvalid, count_messages, count_text
from tenants.models import ApiKey, Tenant
from tenants.scope import Actor

from .approvals import approval_consume
from .controls import CallScope, controls_for_call
from .preflight_approvals import approval_outside_binding, approval_pending_for, approval_presented
from .prompt_reviews import preflight_prompt_verdict
from .reservations import ReservationSpec, WindowFull, reserve
from .windows import BudgetEntry, window_ids_open

ALLOW, NEEDS_APPROVAL, DENY = "allow", "needs_approval", "deny"
DEFAULT_CAP_OUTPUT_TOKENS = 1024
DEFAULT_COMPRESS_RATIO = Decimal("0.5")


@dataclass
class PreflightInput:
    tenant: Tenant
    model: str
    environment: str
    workflow: str | None = None
    input_tokens: int | None = None
    prompt: str | None = None
    messages: list | None = None
    max_output_tokens: int | None = None
    approval_id: str | None = None
    prompt_version: str | None = None  # the label of the workflow's prompt version the call sends
    api_key: ApiKey | None = None
    # Operators and platform keys see platform-wide budgets' totals; a tenant sees that one applied to
    # its call and its headroom under it, never the platform's spend (TenantScope.is_platform).
    platform_caller: bool = False
    # The signed-in person who asks (None for a key: the person behind the key counts, see approvals).
    requested_by: Any = None
    # How the call will be billed (issue 11): the estimate is an upper bound under these.
    service_tier: str = STANDARD
    channel: str | None = None  # None: from the model name (vertex_ai/…, Bedrock ids, azure/…)
    may_write_cache: bool = False


@dataclass
class PreflightDecision:
    decision: str
    requested_model: str
    model: str
    input_tokens: int
    input_tokens_estimated: bool
    max_output_tokens: int
    compress_context: bool = False
    target_input_tokens: int | None = None
    estimated_cost_nanos: int | None = None
    reservation_id: str | None = None
    reservation_expires_at: datetime | None = None
    approval_id: str | None = None
    approval_status: str | None = None
    budgets: list[dict] = field(default_factory=list)
    controls: list[dict] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    input_safety_factor: Decimal | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "requested_model": self.requested_model,
            "model": self.model,
            "input_tokens": self.input_tokens,
            "input_tokens_estimated": self.input_tokens_estimated,
            "max_output_tokens": self.max_output_tokens,
            "compress_context": self.compress_context,
            "target_input_tokens": self.target_input_tokens,
            "estimated_cost_usd": nanos_to_usd(self.estimated_cost_nanos),
            "reservation_id": self.reservation_id,
            "reservation_expires_at": self.reservation_expires_at,
            "approval_id": self.approval_id,
            "approval_status": self.approval_status,
            "budgets": self.budgets,
            "controls": self.controls,
            "reasons": self.reasons,
            "input_safety_factor": None if self.input_safety_factor is None else str(self.input_safety_factor),
        }


class PreflightInputError(ValueError):
    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


@dataclass
class _Call:
    """What the call will be after controls: mutated step by step."""

    entry: ModelEntry | None
    model_name: str
    input_tokens: int
    max_output_tokens: int
    target_input_tokens: int | None = None
    channel: str = API
    service_tier: str = STANDARD
    may_write_cache: bool = False
    approval_needed_above: int | None = None  # nano-USD; 0 = every run
    approval_reasons: list[str] = field(default_factory=list)
    approval_rules: list[dict] = field(default_factory=list)  # what held it, kept on the request it opens
    denied: bool = False


def preflight_decide(req: PreflightInput, *, now: datetime | None = None) -> PreflightDecision:
    now = now or timezone.now()
    state = preflight_state()
    catalog = state.catalog
    entry = catalog.resolve(req.model)
    workflow = state.workflows.get(req.workflow) if req.workflow else None
    input_tokens, estimated, counted = _input_tokens(req, entry)
    factor = None
    if estimated:
        provider = entry.provider if entry else ""
        family = model_family(provider, entry.name if entry else req.model)
        factor = safety_factor(state.safety_factors, tenant_id=req.tenant.pk, provider=provider, family=family)
        input_tokens = factor.apply(counted)
    max_output = req.max_output_tokens or min(
        (entry.max_output_tokens if entry else None) or settings.PREFLIGHT_DEFAULT_MAX_OUTPUT_TOKENS,
        settings.PREFLIGHT_DEFAULT_MAX_OUTPUT_TOKENS,
    )
    out = PreflightDecision(
        decision=ALLOW,
        requested_model=req.model,
        model=entry.name if entry else req.model,
        input_tokens=input_tokens,
        input_tokens_estimated=estimated,
        max_output_tokens=max_output,
    )
    if factor is not None:
        out.input_safety_factor = factor.factor
        out.reasons.append(
            f"Input counted with tiktoken as {counted:,} tokens, an estimate for this model: multiplied by the "
            f"{factor.source} safety factor {factor.factor} to {input_tokens:,}."
        )
    if entry is None:
        out.reasons.append(f"Model '{req.model}' is not in the catalog: its cost cannot be estimated.")
    if req.workflow and workflow is None:
        out.reasons.append(f"Workflow '{req.workflow}' is not registered yet; treated as normal priority.")
    call = _Call(
        entry=entry,
        model_name=out.model,
        input_tokens=input_tokens,
        max_output_tokens=max_output,
        channel=req.channel or channel_from_model_name(req.model),
        service_tier=req.service_tier,
        may_write_cache=req.may_write_cache,
    )
    if req.prompt_version:
        held = preflight_prompt_verdict(req, workflow, out)  # one indexed lookup, only when a version is named
        if held is not None:
            return _finish(out, call, held)

    _apply_controls(call, req, workflow, state, out, now)
    if call.denied:
        return _finish(out, call, DENY)

    threshold, whose = workflow.threshold_for(req.tenant.pk) if workflow is not None else (None, "")
    if workflow is not None and threshold is not None:
        # A workflow's threshold (or the tenant's stricter one) holds always, not only under a control.
        above = int(threshold * NANOS_PER_USD)
        current = call.approval_needed_above
        call.approval_needed_above = above if current is None else min(above, current)
        owner = (
            f"{req.tenant.name}'s threshold for workflow {workflow.slug}"
            if whose == "tenant"
            else (f"workflow {workflow.slug}'s threshold")
        )
        call.approval_reasons.append(f"Approval required above {usd_rate(threshold)}: {owner}.")
        call.approval_rules.append({"rule": f"{whose}_threshold", "above_usd": f"{threshold:.4f}"})

    approval = approval_presented(req, out, now)
    use_approval = False  # an approval is consumed only by a run that needed it
    downgrades_left = 3
    while True:
        cost = _estimate(call, catalog)
        inputs = call.input_tokens if call.target_input_tokens is None else call.target_input_tokens
        tokens = inputs + call.max_output_tokens
        if approval is not None:
            outside = approval_outside_binding(
                approval,
                catalog=catalog,
                entry=call.entry,
                workflow=workflow,
                environment=req.environment,
                cost=cost,
                tokens=tokens,
            )
            if outside:
                out.reasons.append(outside)
                approval, use_approval = None, False
        needs_approval = call.approval_needed_above is not None and (cost is None or cost > call.approval_needed_above)
        if needs_approval and approval is None:
            out.reasons.extend(call.approval_reasons)
            return _needs_approval(out, call, cost, tokens, req, workflow, now)
        use_approval = use_approval or needs_approval
        scope = CallScope(req.tenant.pk, workflow.pk if workflow else None, req.environment, _tier(call), "")
        budgets = state.budgets.matching(scope.tenant_id, scope.workflow_id, scope.environment, scope.tier_id)
        bounds = {b.id: b.bounds(now) for b in budgets}
        ids = window_ids_open(state.budgets, ((b, *bounds[b.id]) for b in budgets))
        pairs = [(b, ids[(b.id, bounds[b.id][0])], bounds[b.id]) for b in budgets]
        amounts, unpriced = _amounts(pairs, cost, tokens)
        if unpriced:
            out.reasons.append(
                f"Budget '{unpriced.name}' limits cost and the call's cost is unknown, so it cannot be reserved."
            )
            out.budgets = budget_views(pairs, windows_totals([w for _, w, _ in pairs]), platform=req.platform_caller)
            return _finish(out, call, DENY, cost)
        approved_over = frozenset(
            w for b, w, _ in pairs if use_approval and b.hard_action == HardAction.REQUIRE_APPROVAL
        )
        unheld = [w for _, w, _ in pairs if w not in amounts]
        try:
            spec = ReservationSpec(
                tenant_id=req.tenant.pk,
                workflow_id=workflow.pk if workflow else None,
                model_id=call.entry.id if call.entry else None,
                environment=req.environment,
                estimated_cost_nanos=cost,
                estimated_tokens=tokens,
                api_key_id=req.api_key.pk if req.api_key else None,
                **_estimate_notes(call, entry, catalog, factor=factor, counted=counted, asked_output=max_output),
            )
            hold = {"amounts": amounts, "read": unheld, "unchecked": approved_over, "now": now}
            if use_approval and approval is not None:  # use_approval is only ever set with an approval
                with transaction.atomic():
                    actor = Actor(user=req.requested_by, api_key=req.api_key)
                    if not approval_consume(approval=approval, actor=actor, now=now):
                        approval = None
                        raise WindowFull(0)
                    reservation, totals = reserve(spec, ttl_seconds=settings.RESERVATION_TTL_SECONDS, **hold)
            else:
                reservation, totals = reserve(spec, ttl_seconds=settings.RESERVATION_TTL_SECONDS, **hold)
        except WindowFull as full:
            if full.window_id == 0:
                out.reasons.append("The approval was used by another request meanwhile.")
                return _needs_approval(out, call, cost, tokens, req, workflow, now)
            totals = windows_totals([w for _, w, _ in pairs])
            out.budgets = budget_views(pairs, totals, platform=req.platform_caller)
            budget = next(b for b, w, _ in pairs if w == full.window_id)
            spent, reserved, _soft, hard = totals[full.window_id]
            left = amount_format(budget, max(hard - spent - reserved, 0))
            needed = amount_format(budget, amounts[full.window_id])
            out.reasons.append(f"Hard limit: '{budget.name}' has {left} left for this period, the call needs {needed}.")
            if (
                budget.hard_action == HardAction.DOWNGRADE
                and downgrades_left
                and _downgrade(call, catalog, out, budget.name)
            ):
                downgrades_left -= 1
                continue
            if budget.hard_action == HardAction.REQUIRE_APPROVAL:
                if approval is not None and not use_approval:
                    use_approval = True  # over the limit, but a person approved this run: try again
                    continue
                call.approval_rules.append({"rule": "hard_limit", "budget_id": budget.id})
                return _needs_approval(out, call, cost, tokens, req, workflow, now)
            return _finish(out, call, DENY, cost)
        out.reservation_id = str(reservation.pk)
        out.reservation_expires_at = reservation.expires_at
        out.budgets = budget_views(pairs, totals, platform=req.platform_caller)
        if use_approval and approval is not None:
            out.approval_id, out.approval_status = str(approval.pk), ApprovalRequest.Status.CONSUMED
            out.reasons.append("Approved run: the approval is now used.")
        return _finish(out, call, ALLOW, cost)


def _estimate_notes(
    call: _Call, entry: ModelEntry | None, catalog: CatalogSnapshot, *, factor, counted: int, asked_output: int
) -> dict[str, Any]:
    """What the reservation keeps about its estimate: the safety factor's inputs (the settled record then
    teaches the factor) and, when a downgrade or an output cap changed the call, the estimate as asked
    (the savings page). Written by the same statement as the hold."""
    notes: dict[str, Any] = {}
    if factor is not None:
        notes.update(
            input_count_estimated=True,
            estimated_input_tokens=counted,
            safety_factor=factor.factor,
            estimate_family=model_family(call.entry.provider if call.entry else "", call.model_name),
        )
    if entry is not None and (call.entry is not entry or call.max_output_tokens < asked_output):
        asked = _Call(
            entry=entry,
            model_name=entry.name,
            input_tokens=call.input_tokens,
            max_output_tokens=asked_output,
            channel=call.channel,
            service_tier=call.service_tier,
            may_write_cache=call.may_write_cache,
        )
        notes["requested_cost_nanos"] = _estimate(asked, catalog)
    return notes


def _input_tokens(req: PreflightInput, entry: ModelEntry | None) -> tuple[int, bool, int]:
    """(tokens, estimated, tokens): a count the caller sent is taken as exact."""
    if req.input_tokens is not None:
        return req.input_tokens, False, req.input_tokens
    try:
        if req.messages is not None:
            counted = count_messages(entry, req.model, req.messages)
        else:
            counted = count_text(entry, req.model, req.prompt or "")
    except TokenInputInvalid as exc:
        raise PreflightInputError(exc.field, str(exc)) from None
    return counted.tokens, counted.estimated, counted.tokens


def _tier(call: _Call) -> int | None:
    return call.entry.tier_id if call.entry else None


def _apply_controls(call: _Call, req: PreflightInput, workflow, state, out: PreflightDecision, now) -> None:
    catalog = state.catalog
    priority = workflow.priority if workflow else Workflow.Priority.NORMAL
    scope = CallScope(req.tenant.pk, workflow.pk if workflow else None, req.environment, _tier(call), priority)
    for control in controls_for_call(scope, now=now, controls=state.controls):
        params = control.params or {}
        reason = control.reason
        if control.tenant_id is None and control.source == Control.Source.BUDGET and not req.platform_caller:
            # The ladder's reason quotes the platform budget's spend and limits: not for a tenant's eyes.
            reason = "A platform-wide budget is at this level of its control ladder."
        applied = {"id": control.pk, "kind": control.kind, "source": control.source, "reason": reason}
        if control.kind == ControlKind.DENY:
            call.denied = True
            out.reasons.append(f"Denied by a control: {reason}")
        elif control.kind == ControlKind.REQUIRE_APPROVAL:
            threshold = params.get("above_usd")
            if threshold is None and workflow is not None:
                threshold = workflow.threshold_for(req.tenant.pk)[0]
            above = int(Decimal(str(threshold)) * NANOS_PER_USD) if threshold is not None else 0
            call.approval_rules.append(
                {"rule": "control", "control_id": control.pk, "above_usd": f"{Decimal(above) / NANOS_PER_USD:.4f}"}
            )
            call.approval_needed_above = (
                above if call.approval_needed_above is None else min(above, call.approval_needed_above)
            )
            call.approval_reasons.append(
                f"Approval required{f' above {usd_sentence(above)}' if above else ''}: {reason}"
            )
        elif control.kind == ControlKind.DOWNGRADE_TIER:
            if not _downgrade(call, catalog, out, reason, steps=int(params.get("steps", 1))):
                applied["skipped"] = True
        elif control.kind == ControlKind.COMPRESS_CONTEXT:
            target = params.get("target_input_tokens")
            if target is None:
                target = int(call.input_tokens * Decimal(str(params.get("ratio", DEFAULT_COMPRESS_RATIO))))
            target = min(int(target), call.input_tokens)
            if call.target_input_tokens is None or target < call.target_input_tokens:
                call.target_input_tokens = target
            out.reasons.append(f"Compress the context to {target:,} input tokens: {reason}")
        elif control.kind == ControlKind.CAP_OUTPUT_TOKENS:
            cap = int(params.get("max_output_tokens", DEFAULT_CAP_OUTPUT_TOKENS))
            if cap < call.max_output_tokens:
                call.max_output_tokens = cap
                out.reasons.append(f"Output capped at {cap:,} tokens: {reason}")
            else:
                applied["skipped"] = True
        out.controls.append(applied)


def _downgrade(call: _Call, catalog: CatalogSnapshot, out: PreflightDecision, why: str, steps: int = 1) -> bool:
    """Move the call to the catalog's substitute model (`steps` times); say so when there is none."""
    moved = False
    for _ in range(max(steps, 1)):
        target = catalog.by_id.get(call.entry.downgrade_to_id) if call.entry and call.entry.downgrade_to_id else None
        if target is None:
            if not moved:
                name = call.entry.name if call.entry else call.model_name
                out.reasons.append(f"Downgrade wanted ({why}) but the catalog marks no cheaper substitute for {name}.")
            break
        out.reasons.append(f"Downgraded {call.model_name} to {target.name}: {why}")
        call.entry, call.model_name, moved = target, target.name, True
        if target.max_output_tokens and call.max_output_tokens > target.max_output_tokens:
            call.max_output_tokens = target.max_output_tokens
    return moved


def _estimate(call: _Call, catalog: CatalogSnapshot) -> int | None:
    if call.entry is None:
        return None
    price = catalog.current_price(call.entry.id, channel=call.channel, service_tier=call.service_tier)
    if price is None:
        return None
    inputs = call.input_tokens if call.target_input_tokens is None else call.target_input_tokens
    # An upper bound: dearer of output and reasoning, dearest cache write when the call may write cache,
    # long-context prices when input (or input plus output) can cross the threshold (finops.pricing).
    return worst_case_nanos(
        price, input_tokens=inputs, max_output_tokens=call.max_output_tokens, may_write_cache=call.may_write_cache
    )


def _amounts(pairs: list[tuple[BudgetEntry, int, tuple]], cost: int | None, tokens: int):
    """What to hold on each window with a hard limit; (amounts, None) or ({}, a cost budget that
    cannot be held because the call has no price)."""
    amounts: dict[int, int] = {}
    for budget, window_id, _bounds in pairs:
        if budget.hard_limit is None:
            continue
        if budget.metric == Metric.COST:
            if cost is None:
                return {}, budget
            amounts[window_id] = cost
        else:
            amounts[window_id] = tokens
    return amounts, None


def _needs_approval(
    out: PreflightDecision, call: _Call, cost: int | None, tokens: int, req: PreflightInput, workflow, now: datetime
) -> PreflightDecision:
    pending = approval_pending_for(
        req, out=out, entry=call.entry, workflow=workflow, cost=cost, tokens=tokens, now=now, rules=call.approval_rules
    )
    out.approval_id, out.approval_status = str(pending.pk), pending.status
    out.reasons.append(f"Ask an approver to approve request {pending.pk}, then preflight again with its approval_id.")
    return _finish(out, call, NEEDS_APPROVAL, cost)


def _finish(out: PreflightDecision, call: _Call, decision: str, cost: int | None = None) -> PreflightDecision:
    out.decision = decision
    out.model = call.model_name
    out.max_output_tokens = call.max_output_tokens
    out.compress_context = call.target_input_tokens is not None and call.target_input_tokens < call.input_tokens
    out.target_input_tokens = call.target_input_tokens if out.compress_context else None
    out.estimated_cost_nanos = cost
    return out
