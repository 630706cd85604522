"""Registering and editing workflows (the product features that call LLMs), and confirming one that was
auto-discovered from reported usage. Workflows are shared product data, so only operators write them;
a tenant's own stricter threshold is finops.services.workflow_policies. The envelope (expected tokens
and calls) is edited elsewhere and left as it is here. Every change is audited in its transaction."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django.db import transaction

from finops.models import ModelTier, Workflow
from finops.services.workflow_policies import threshold_parse
from tenants.errors import ApplicationError
from tenants.scope import Actor
from tenants.services import audit_record

EDITABLE = ("slug", "name", "owner", "priority", "default_tier_id", "approval_threshold_usd")


def _snapshot(workflow: Workflow) -> dict[str, Any]:
    values = {f: getattr(workflow, f) for f in (*EDITABLE, "status")}
    threshold = values["approval_threshold_usd"]
    values["approval_threshold_usd"] = str(threshold) if threshold is not None else None
    return values


@transaction.atomic
def workflow_save(
    *,
    workflow: Workflow | None,
    slug: str,
    name: str,
    owner: str = "",
    priority: str = Workflow.Priority.NORMAL,
    default_tier: ModelTier | None = None,
    approval_threshold_usd: Decimal | str | None = None,
    actor: Actor = Actor.system(),
) -> Workflow:
    """Register a new workflow (`workflow=None`) or edit one; saving an auto-discovered workflow confirms
    it (status registered). The slug is what services send, so renaming it splits new usage from old."""
    slug, name = slug.strip(), name.strip()
    errors: dict[str, list[str]] = {}
    if not re.fullmatch(r"[-a-zA-Z0-9_.]{1,100}", slug):
        errors["slug"] = ["Letters, digits, '-', '_' and '.' only (at most 100), as services send it."]
    elif Workflow.objects.filter(slug=slug).exclude(pk=workflow.pk if workflow is not None else 0).exists():
        errors["slug"] = ["A workflow with this slug exists."]
    if not name:
        errors["name"] = ["Give the workflow a name."]
    if priority not in Workflow.Priority.values:
        errors["priority"] = [f"The priority must be one of {', '.join(Workflow.Priority.values)}."]
    try:
        threshold = threshold_parse(approval_threshold_usd)
    except ApplicationError as error:
        errors["approval_threshold_usd"] = [error.message]
        threshold = None
    if errors:
        raise ApplicationError("invalid", "The workflow is not valid.", details=errors)

    before = _snapshot(workflow) if workflow is not None else None
    confirming = workflow is not None and workflow.status == Workflow.Status.AUTO_DISCOVERED
    if workflow is None:
        workflow = Workflow(status=Workflow.Status.REGISTERED)
    workflow.slug, workflow.name, workflow.owner, workflow.priority = slug, name, owner.strip(), priority
    workflow.default_tier = default_tier
    workflow.approval_threshold_usd = threshold
    workflow.status = Workflow.Status.REGISTERED
    after = _snapshot(workflow)
    if before == after:
        return workflow
    workflow.save()  # the row's signals tell preflight's cached state at once
    action = "workflow.create" if before is None else ("workflow.confirm" if confirming else "workflow.update")
    changed = {k: v for k, v in after.items() if before is None or before.get(k) != v}
    audit_record(
        action=action,
        actor=actor,
        target=workflow,
        before={k: before[k] for k in changed} if before is not None else None,
        after=changed,
    )
    return workflow
