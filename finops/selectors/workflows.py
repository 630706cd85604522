"""Which workflows a tenant scope sees: one rule for pages, forms and API lookups by slug.

Registered workflows are shared product data. An auto-discovered one was named by some tenant's
service, so a tenant sees it only where one of its tenants has used it (its daily (tenant, workflow)
rollup rows). A slug the scope may not see answers exactly like a missing one.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from finops.models import TenantWorkflowRollup, Workflow
from tenants.scope import TenantScope, not_found


def workflows_visible(*, scope: TenantScope) -> QuerySet[Workflow]:
    workflows = Workflow.objects.all()
    ids = scope.tenant_ids
    if ids is None:
        return workflows
    used = TenantWorkflowRollup.objects.filter(tenant_id__in=ids, workflow__isnull=False).values("workflow_id")
    return workflows.filter(Q(status=Workflow.Status.REGISTERED) | Q(pk__in=used))


def workflow_get(*, scope: TenantScope, slug: str) -> Workflow | None:
    """The workflow with this slug if the scope sees it; None for another tenant's and a missing one alike."""
    return workflows_visible(scope=scope).filter(slug=slug).first()


def workflow_required(*, scope: TenantScope, slug: str) -> Workflow:
    """The workflow with this slug, or a 404 (ApplicationError `not_found`; pages under `tenant_page`
    turn it into Http404) that reads the same for another tenant's and a missing one."""
    workflow = workflow_get(scope=scope, slug=slug)
    if workflow is None:
        raise not_found("No such workflow.")
    return workflow


def workflow_seen_by(*, workflow: Workflow, scope: TenantScope) -> bool:
    if workflow.status == Workflow.Status.REGISTERED or scope.tenant_ids is None:
        return True
    return workflows_visible(scope=scope).filter(pk=workflow.pk).exists()
