"""Setting a workflow's expected envelope (accepting the proposal or editing it): audited, operators only
(a workflow's envelope is shared product data, like the workflow itself)."""

from __future__ import annotations

from django.db import transaction

from finops.models import Workflow
from tenants.errors import ApplicationError
from tenants.scope import Actor
from tenants.services import audit_record

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
