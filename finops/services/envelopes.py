"""A workflow's expected envelope: the daily job that proposes one from what every tenant used over the
last weeks, and setting it (accepting the proposal or editing it), audited, operators only (a workflow's
envelope is shared product data, like the workflow itself)."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from finops.models import EnvelopeProposal, TenantWorkflowEnvelope, TenantWorkflowRollup, Workflow
from finops.selectors.envelopes import ENVELOPE_DAYS, ObservedEnvelope, envelope_observed
from tenants.errors import ApplicationError
from tenants.models import Tenant
from tenants.scope import Actor, TenantScope
from tenants.services import audit_record

logger = logging.getLogger(__name__)
PROPOSE_WHEN_OFF_BY = 0.2  # a field more than 20% away from the expected one (or none expected) proposes

ENVELOPE_FIELDS = (
    "expected_input_tokens_p50",
    "expected_input_tokens_p95",
    "expected_output_tokens_p50",
    "expected_output_tokens_p95",
    "expected_calls_per_day",
)


def envelope_parse(raw: dict) -> dict[str, int | None]:
    """Whole numbers of at least 1, or empty; p50 never above p95. Raises ApplicationError per field."""
    values: dict[str, int | None] = {}
    errors: dict[str, list[str]] = {}
    for name in ENVELOPE_FIELDS:
        value = raw.get(name)
        if value in (None, ""):
            values[name] = None
            continue
        try:
            number = int(str(value).replace(",", "").strip())
        except ValueError:
            number = 0
        if number < 1 or number > 2_000_000_000:
            errors[name] = ["A whole number of at least 1, or empty."]
        values[name] = number
    for kind in ("input", "output"):
        p50, p95 = values.get(f"expected_{kind}_tokens_p50"), values.get(f"expected_{kind}_tokens_p95")
        if p50 is not None and p95 is not None and p50 > p95 and not errors:
            errors[f"expected_{kind}_tokens_p95"] = ["The p95 cannot be below the p50."]
    if errors:
        raise ApplicationError("invalid", "The envelope has invalid values.", details=errors, status_code=400)
    return values


@transaction.atomic
def workflow_envelope_set(*, workflow: Workflow, values: dict, actor: Actor, source: str = "edit") -> Workflow:
    """Replace the workflow's expected envelope; `source` says whether it was the proposal or an edit."""
    values = envelope_parse(values)
    locked = Workflow.objects.select_for_update().get(pk=workflow.pk)
    before = {name: getattr(locked, name) for name in ENVELOPE_FIELDS}
    if before == values:
        return locked
    for name, value in values.items():
        setattr(locked, name, value)
    locked.save(update_fields=[*ENVELOPE_FIELDS, "updated_at"])
    audit_record(
        action="workflow.envelope_set", actor=actor, target=locked, before=before, after={**values, "source": source}
    )
    return locked


def _round_up(value: int | None) -> int | None:
    """Two significant digits, rounded up: 1,437 tokens -> 1,500."""
    if value is None:
        return None
    step = 10 ** max(len(str(value)) - 2, 0)
    return -(-value // step) * step


def envelope_proposal_values(observed: ObservedEnvelope) -> dict[str, int | None] | None:
    """The expected_* fields proposed from an observed envelope; None without calls."""
    if not observed.has_calls:
        return None
    return {
        "expected_input_tokens_p50": _round_up(observed.input_p50),
        "expected_input_tokens_p95": _round_up(observed.input_p95),
        "expected_output_tokens_p50": _round_up(observed.output_p50),
        "expected_output_tokens_p95": _round_up(observed.output_p95),
        "expected_calls_per_day": _round_up(observed.calls_per_day),
    }


def _off(workflow: Workflow, values: dict[str, int | None]) -> bool:
    for name, proposed in values.items():
        current = getattr(workflow, name)
        if proposed is None:
            continue
        if current is None or abs(proposed - current) > PROPOSE_WHEN_OFF_BY * current:
            return True
    return False


def envelope_proposals_refresh(*, now: datetime | None = None) -> int:
    """Propose an envelope for every workflow used in the last ENVELOPE_DAYS whose expected one is missing
    or more than PROPOSE_WHEN_OFF_BY away from what was observed; returns the proposals created. A pending
    proposal with the same values is kept; one no longer needed is superseded."""
    now = now or timezone.now()
    since = now - timedelta(days=ENVELOPE_DAYS + 1)
    used = TenantWorkflowRollup.objects.filter(bucket_start__gte=since, workflow__isnull=False).values("workflow_id")
    created = 0
    for workflow in Workflow.objects.filter(pk__in=used).order_by("pk"):
        observed = envelope_observed(scope=TenantScope.system(), workflow=workflow, now=now)
        values = envelope_proposal_values(observed)
        with transaction.atomic():
            pending = EnvelopeProposal.objects.select_for_update().filter(
                workflow=workflow, status=EnvelopeProposal.Status.PENDING
            )
            current = pending.first()
            if values is None or not _off(workflow, values):
                pending.update(status=EnvelopeProposal.Status.SUPERSEDED, decided_at=now)
                continue
            if current is not None and current.values == values:
                continue
            pending.update(status=EnvelopeProposal.Status.SUPERSEDED, decided_at=now)
            EnvelopeProposal.objects.create(
                workflow=workflow, values=values, observed=asdict(observed), basis_days=ENVELOPE_DAYS, created_at=now
            )
            created += 1
    if created:
        logger.info("envelopes: %s proposals", created)
    return created


@transaction.atomic
def envelope_proposal_accept(*, proposal: EnvelopeProposal, actor: Actor) -> Workflow:
    """Make a pending proposal the workflow's expected envelope (audited by workflow_envelope_set)."""
    locked = EnvelopeProposal.objects.select_for_update().get(pk=proposal.pk)
    if locked.status != EnvelopeProposal.Status.PENDING:
        raise ApplicationError("conflict", "This proposal was already accepted or replaced.", status_code=409)
    workflow = workflow_envelope_set(workflow=locked.workflow, values=locked.values, actor=actor, source="proposal")
    locked.status = EnvelopeProposal.Status.ACCEPTED
    locked.decided_at = timezone.now()
    locked.decided_by = actor.actor_user
    locked.save(update_fields=["status", "decided_at", "decided_by"])
    return workflow


def tenant_envelope_set(
    *, tenant: Tenant, workflow: Workflow, values: dict, actor: Actor
) -> TenantWorkflowEnvelope | None:
    """Set a tenant's own expected envelope for a workflow (all fields empty: clear it), audited."""
    values = envelope_parse(values)
    rows = TenantWorkflowEnvelope.objects.filter(tenant=tenant, workflow=workflow)
    with transaction.atomic():
        current = rows.select_for_update().first()
        before = {name: getattr(current, name) for name in ENVELOPE_FIELDS} if current is not None else None
        if all(v is None for v in values.values()):
            if current is None:
                return None
            audit_record(action="tenant_envelope.clear", tenant=tenant, actor=actor, target=current, before=before)
            current.delete()
            return None
        if before == values:
            return current
        envelope = current or TenantWorkflowEnvelope(tenant=tenant, workflow=workflow)
        for name, value in values.items():
            setattr(envelope, name, value)
        envelope.updated_by = actor.actor_user
        envelope.save()
        audit_record(
            action="tenant_envelope.set",
            tenant=tenant,
            actor=actor,
            target=envelope,
            before=before,
            after={**values, "workflow": workflow.slug},
        )
    return envelope
