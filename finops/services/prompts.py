"""Prompt versions: register one (counted with tiktoken, priced per call), and review the ones that grow
a high-cost workflow's input.

A new version is compared with the tenant's current active version of the workflow. When its input
tokens grow by more than the workflow's `prompt_review_threshold_pct` and the workflow is high-cost
(priority high or critical, or more than `PROMPT_REVIEW_SPEND_SHARE` of the tenant's last 30 days of
spend), it is stored `under_review` and the registered reviewer (budgets: a `prompt_change` approval
request, finops/hooks.py) opens a review in the same transaction. Otherwise, and for a workflow's
first version, it is active at once. The decision on the review lands in `prompt_version_decide`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from finops import hooks, tokens
from finops.catalog import get_catalog
from finops.models import PromptVersion, Workflow
from finops.pricing import TokenBuckets, cost_nanos
from finops.selectors.prompts import (
    RECENT_DAYS,
    PromptProjection,
    prompt_projection,
    prompt_version_baseline,
    workflow_spend_share,
)
from finops.templatetags.money import usd
from tenants.errors import ApplicationError
from tenants.models import Tenant
from tenants.scope import Actor, TenantScope
from tenants.services import audit_record

logger = logging.getLogger(__name__)

LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
GIT_COMMIT_MAX = 64
MODEL_NAME_MAX = 200
HIGH_COST_PRIORITIES = frozenset({Workflow.Priority.HIGH, Workflow.Priority.CRITICAL})


@dataclass
class PromptRegistration:
    version: PromptVersion
    created: bool  # False: the same label with the same prompt was registered before (a retried CI job)
    baseline: PromptVersion | None
    projection: PromptProjection
    reasons: list[str] = field(default_factory=list)  # why it is reviewed; empty when it is not
    review: hooks.PromptReview | None = None


def _invalid(field_name: str, message: str) -> ApplicationError:
    return ApplicationError("invalid", "The prompt version is not valid.", details={field_name: [message]})


def _counted(
    model_name: str, text: str | None, messages: Any, workflow: Workflow
) -> tuple[tokens.TokenCount, int | None]:
    """Input tokens for the model, and the cost of one call: the input at today's price plus the
    workflow's expected output tokens (p50) when it has an envelope. None: the model has no price."""
    try:
        estimate = tokens.input_cost_estimate(model_name=model_name, text=text, messages=messages)
    except tokens.TokenInputInvalid as exc:
        raise _invalid(exc.field, str(exc)) from None
    if not estimate.priced:
        return estimate.count, None
    catalog = get_catalog()
    entry = catalog.resolve(model_name)
    price = catalog.current_price(entry.id) if entry is not None else None
    if price is None:  # the price ended between the two reads
        return estimate.count, None
    output = workflow.expected_output_tokens_p50 or 0
    return estimate.count, cost_nanos(price, TokenBuckets(input=estimate.count.tokens, output=output))


def prompt_version_register(
    *,
    tenant: Tenant,
    workflow: Workflow,
    label: str,
    text: str | None = None,
    messages: list | None = None,
    model_name: str = "",
    git_commit: str = "",
    actor: Actor,
    now: datetime | None = None,
) -> PromptRegistration:
    """Register a tenant's new prompt version of a workflow (audited); see the module docstring.

    The model defaults to the one the tenant's active version was counted for, so that versions are
    compared like for like; a workflow without one needs `model_name`. The same label again with the
    same prompt and model returns the stored version; with anything else it is a 409.
    """
    now = now or timezone.now()
    label = (label or "").strip()
    git_commit = (git_commit or "").strip()
    if not LABEL_RE.match(label):
        raise _invalid("label", "Letters, digits, '.', '_' or '-', starting with a letter or digit, up to 100.")
    if (text is None) == (messages is None):
        raise _invalid("text", "Send exactly one of text or messages.")
    if len(git_commit) > GIT_COMMIT_MAX:
        raise _invalid("git_commit", f"At most {GIT_COMMIT_MAX} characters.")
    if len(model_name or "") > MODEL_NAME_MAX:
        raise _invalid("model", f"At most {MODEL_NAME_MAX} characters.")
    scope = TenantScope.for_tenant(tenant)
    baseline = prompt_version_baseline(scope=scope, workflow=workflow)
    model_name = (model_name or "").strip() or (baseline.model_name if baseline is not None else "")
    if not model_name:
        raise ApplicationError(
            "model_required",
            f"Workflow {workflow.slug} has no active prompt version to take the model from: name the model.",
            details={"model": ["Required for a workflow's first prompt version."]},
        )
    count, per_call = _counted(model_name, text, messages, workflow)

    existing = PromptVersion.objects.filter(tenant=tenant, workflow=workflow, label=label).first()
    if existing is not None:
        return _existing(existing, text=text, messages=messages, model_name=model_name, scope=scope, now=now)

    projection = prompt_projection(
        scope=scope, workflow=workflow, baseline=baseline, new_tokens=count.tokens, new_cost_nanos=per_call, now=now
    )
    reasons = _review_reasons(
        scope=scope, workflow=workflow, label=label, baseline=baseline, projection=projection, now=now
    )
    reviewer = hooks.prompt_reviewer
    if reasons and reviewer is None:
        logger.warning("prompt version %s of %s grew but no reviewer is registered: active", label, workflow.slug)
    under_review = bool(reasons) and reviewer is not None
    try:
        with transaction.atomic():
            version = PromptVersion.objects.create(
                tenant=tenant,
                workflow=workflow,
                label=label,
                text=text if text is not None else "",
                messages=messages,
                model_name=model_name,
                encoding=count.encoding,
                input_tokens=count.tokens,
                tokens_estimated=count.estimated,
                estimated_cost_per_call_nanos=per_call,
                git_commit=git_commit,
                status=PromptVersion.Status.UNDER_REVIEW if under_review else PromptVersion.Status.ACTIVE,
                created_by=actor.actor_user,
                created_by_key=actor.api_key,
                created_at=now,
            )
            audit_record(
                action="prompt_version.register",
                tenant=tenant,
                actor=actor,
                target=version,
                after={
                    "workflow": workflow.slug,
                    "label": label,
                    "status": version.status,
                    "model": model_name,
                    "input_tokens": count.tokens,
                    "estimated_cost_per_call_nanos": per_call,
                    "git_commit": git_commit,
                    "baseline": baseline.label if baseline is not None else None,
                },
            )
            review = None
            if under_review and reviewer is not None:
                review = reviewer.open(version=version, reasons=reasons, actor=actor)
    except IntegrityError:
        # The same label registered by a concurrent request: answer as if it had come first.
        existing = PromptVersion.objects.filter(tenant=tenant, workflow=workflow, label=label).first()
        if existing is None:
            raise
        return _existing(existing, text=text, messages=messages, model_name=model_name, scope=scope, now=now)
    return PromptRegistration(
        version=version,
        created=True,
        baseline=baseline,
        projection=projection,
        reasons=reasons if under_review else [],
        review=review,
    )


def _existing(
    version: PromptVersion, *, text: str | None, messages: Any, model_name: str, scope: TenantScope, now: datetime
) -> PromptRegistration:
    same = (
        version.model_name == model_name
        and version.messages == messages
        and (messages is not None or version.text == text)
    )
    if not same:
        raise ApplicationError(
            "prompt_version_exists",
            f"Prompt version {version.label} of {version.workflow.slug} is already registered with another "
            "prompt or model; register the change under a new label.",
            status_code=409,
        )
    baseline = prompt_version_baseline(scope=scope, workflow=version.workflow, before=version)
    projection = prompt_projection(
        scope=scope,
        workflow=version.workflow,
        baseline=baseline,
        new_tokens=version.input_tokens,
        new_cost_nanos=version.estimated_cost_per_call_nanos,
        now=now,
    )
    reviewer = hooks.prompt_reviewer
    review = reviewer.latest(version_ids=[version.pk]).get(version.pk) if reviewer is not None else None
    return PromptRegistration(version=version, created=False, baseline=baseline, projection=projection, review=review)


def _review_reasons(
    *,
    scope: TenantScope,
    workflow: Workflow,
    label: str,
    baseline: PromptVersion | None,
    projection: PromptProjection,
    now: datetime,
) -> list[str]:
    """Why this version waits for a review: its growth, the projected cost and why the workflow is
    high-cost. Empty: it does not (first version, growth within the threshold, not high-cost)."""
    if baseline is None:
        return []
    old, new = baseline.input_tokens, projection.new_tokens
    threshold = Decimal(workflow.prompt_review_threshold_pct)
    if new <= old or Decimal(new - old) * 100 <= threshold * old:
        return []
    high_cost = _high_cost(scope=scope, workflow=workflow, now=now)
    if high_cost is None:
        return []
    fraction = projection.token_change_fraction
    growth = f"+{fraction * 100:.1f}%" if fraction is not None else "from none"
    reasons = [
        f"Prompt version {label} grows the input from {old:,} to {new:,} tokens per call "
        f"(+{new - old:,}, {growth}) over the active version {baseline.label}; workflow {workflow.slug} "
        f"reviews growth above {threshold.normalize():f}%.",
    ]
    monthly = projection.monthly_cost_change_nanos
    if monthly is None:
        reasons.append(f"The cost change cannot be projected: {baseline.model_name} or {label}'s model has no price.")
    elif projection.calls_basis == "none":
        reasons.append(
            f"Cost per call {usd(projection.old_cost_nanos)} -> {usd(projection.new_cost_nanos)}; no calls in the "
            f"last {RECENT_DAYS} days to project a monthly change from."
        )
    else:
        volume = (
            f"{projection.calls_per_month:,} calls in the last {RECENT_DAYS} days"
            if projection.calls_basis == "usage"
            else f"{projection.calls_per_month:,} calls a month expected by the workflow's envelope"
        )
        reasons.append(
            f"Projected monthly cost change at the current call volume ({volume}): {'+' if monthly >= 0 else ''}"
            f"{usd(monthly)} (cost per call {usd(projection.old_cost_nanos)} -> {usd(projection.new_cost_nanos)})."
        )
    reasons.append(high_cost)
    return reasons


def _high_cost(*, scope: TenantScope, workflow: Workflow, now: datetime) -> str | None:
    """Why the workflow counts as high-cost for this tenant, or None."""
    if workflow.priority in HIGH_COST_PRIORITIES:
        return f"Workflow {workflow.slug} is {workflow.priority} priority."
    share = Decimal(str(settings.PROMPT_REVIEW_SPEND_SHARE))
    spent, whole = workflow_spend_share(scope=scope, workflow=workflow, now=now)
    if whole <= 0 or Decimal(spent) <= share * whole:
        return None
    return (
        f"Workflow {workflow.slug} is {Decimal(spent) * 100 / whole:.1f}% of the tenant's spend over the last "
        f"{RECENT_DAYS} days (reviewed above {share * 100:.0f}%)."
    )


def prompt_version_decide(*, version_id: int, approve: bool, actor: Actor) -> PromptVersion | None:
    """Apply a review's decision: an approved version becomes active, a rejected one rejected (audited).

    Called by the reviewer (budgets' `approval_decide`) inside the decision's transaction; only a
    version still under review changes. Returns it, or None when it was not under review."""
    status = PromptVersion.Status.ACTIVE if approve else PromptVersion.Status.REJECTED
    version = PromptVersion.objects.select_for_update().filter(pk=version_id).first()
    if version is None or version.status != PromptVersion.Status.UNDER_REVIEW:
        return None
    version.status = status
    version.save(update_fields=["status"])
    audit_record(
        action="prompt_version.activate" if approve else "prompt_version.reject",
        tenant_id=version.tenant_id,
        actor=actor,
        target=version,
        before={"status": PromptVersion.Status.UNDER_REVIEW},
        after={"status": status, "label": version.label, "workflow_id": version.workflow_id},
    )
    return version
