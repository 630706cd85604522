"""The workflow page's approval thresholds: the platform's, the tenant's own (stricter) one, and the
small form a tenant admin sets or clears it with."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from finops.models import TenantWorkflowPolicy, Workflow
from finops.selectors.workflows import workflow_required
from finops.services.workflow_policies import threshold_parse, workflow_threshold_set
from finops.templatetags.money import usd_rate
from tenants.errors import ApplicationError
from tenants.scope import Operation, TenantScope
from tenants.scoping import tenant_page


def workflow_policy_context(scope: TenantScope, workflow: Workflow) -> dict:
    """What the workflow page shows of who holds runs above which estimate, for the tenant picked."""
    tenant = scope.tenant
    own = None
    if tenant is not None:
        policy = TenantWorkflowPolicy.objects.filter(tenant=tenant, workflow=workflow).first()
        own = policy.approval_threshold_usd if policy is not None else None
    platform = workflow.approval_threshold_usd
    effective = min((t for t in (platform, own) if t is not None), default=None)
    return {
        "threshold_tenant": own,
        "threshold_effective": effective,
        "threshold_editable": tenant is not None and scope.may(Operation.MANAGE, tenant.pk),
    }


@tenant_page
@require_POST
def workflow_threshold(request: HttpRequest, slug: str):
    scope: TenantScope = request.scope  # type: ignore[attr-defined]
    workflow = workflow_required(scope=scope, slug=slug)
    back = redirect(reverse("workflow_detail", kwargs={"slug": workflow.slug}) + scope.query + "#approval-threshold")
    tenant = scope.tenant
    if tenant is None:
        messages.error(request, "Choose the tenant (the tenant switcher) whose threshold you set; nothing changed.")
        return back
    scope.require(Operation.MANAGE, tenant.pk)
    raw = "" if "clear" in request.POST else request.POST.get("approval_threshold_usd", "")
    try:
        threshold = threshold_parse(raw)
        workflow_threshold_set(tenant=tenant, workflow=workflow, threshold=threshold, actor=scope.actor)
    except ApplicationError as error:
        messages.error(request, f"{error.message} Nothing changed.")
        return back
    if threshold is None:
        messages.success(request, f"{tenant.name} no longer has its own threshold for {workflow.name}.")
    else:
        messages.success(
            request,
            f"Runs of {workflow.name} for {tenant.name} estimated above {usd_rate(threshold)} now wait for approval.",
        )
    return back
