"""The workflow page's envelope: observed (from the daily rollups' histograms) against expected, the daily
job's pending proposal, and the operators' forms that accept it or edit the envelope."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from finops.models import EnvelopeProposal, TenantWorkflowEnvelope, Workflow
from finops.selectors.envelopes import envelope_observed
from finops.selectors.workflows import workflow_get
from finops.services.envelopes import (
    ENVELOPE_FIELDS,
    envelope_proposal_accept,
    tenant_envelope_set,
    workflow_envelope_set,
)
from tenants.errors import ApplicationError
from tenants.scope import Operation, TenantScope
from tenants.scoping import tenant_page


def envelope_context(request: HttpRequest, scope: TenantScope, workflow: Workflow) -> dict:
    """Observed over what the scope covers (every tenant for operators, or the tenant picked); the pending
    proposal of the daily job (over every tenant), which operators accept."""
    proposal = None
    if request.user.is_staff:
        proposal = workflow.envelope_proposals.filter(status=EnvelopeProposal.Status.PENDING).first()
    tenant = scope.tenant
    own = None
    if tenant is not None:
        own = TenantWorkflowEnvelope.objects.filter(tenant=tenant, workflow=workflow).first()
    return {
        "tenant_envelope": own,
        "tenant_envelope_editable": tenant is not None and scope.may(Operation.MANAGE, tenant.pk),
        "envelope_observed": envelope_observed(scope=scope, workflow=workflow),
        "envelope_proposal": proposal.values if proposal is not None else None,
        "envelope_proposal_at": proposal.created_at if proposal is not None else None,
        "envelope_editable": request.user.is_staff,
    }


@tenant_page
@require_POST
def workflow_envelope(request: HttpRequest, slug: str):
    scope: TenantScope = request.scope  # type: ignore[attr-defined]
    workflow = workflow_get(scope=scope, slug=slug)
    if workflow is None:
        raise Http404("No such workflow.")
    back = redirect(reverse("workflow_detail", kwargs={"slug": workflow.slug}) + scope.query + "#envelope")
    if request.POST.get("level") == "tenant":
        return _tenant_envelope(request, scope, workflow, back)
    if not request.user.is_staff:
        raise PermissionDenied("Only operators set a workflow's envelope: every tenant using it shares it.")
    if "accept" in request.POST:
        proposal = workflow.envelope_proposals.filter(status=EnvelopeProposal.Status.PENDING).first()
        if proposal is None:
            messages.error(request, "There is no proposal to accept; nothing changed.")
            return back
        try:
            envelope_proposal_accept(proposal=proposal, actor=scope.actor)
        except ApplicationError as error:
            messages.error(request, f"{error.message} Nothing changed.")
            return back
        messages.success(request, f"{workflow.name}'s expected envelope is set (the proposal).")
        return back
    values, source = {name: request.POST.get(name, "") for name in ENVELOPE_FIELDS}, "edit"
    try:
        workflow_envelope_set(workflow=workflow, values=values, actor=scope.actor, source=source)
    except ApplicationError as error:
        fields = "; ".join(f"{k.replace('expected_', '').replace('_', ' ')}: {v[0]}" for k, v in error.details.items())
        messages.error(request, f"{error.message} {fields}. Nothing changed.")
        return back
    messages.success(request, f"{workflow.name}'s expected envelope is set ({source}).")
    return back


def _tenant_envelope(request: HttpRequest, scope: TenantScope, workflow: Workflow, back):
    tenant = scope.tenant
    if tenant is None:
        messages.error(request, "Choose the tenant (the tenant switcher) whose envelope you set; nothing changed.")
        return back
    scope.require(Operation.MANAGE, tenant.pk)
    values = {name: request.POST.get(name, "") for name in ENVELOPE_FIELDS}
    try:
        saved = tenant_envelope_set(tenant=tenant, workflow=workflow, values=values, actor=scope.actor)
    except ApplicationError as error:
        fields = "; ".join(f"{k.replace('expected_', '').replace('_', ' ')}: {v[0]}" for k, v in error.details.items())
        messages.error(request, f"{error.message} {fields}. Nothing changed.")
        return back
    if saved is None:
        messages.success(request, f"{tenant.name} no longer has its own envelope for {workflow.name}.")
    else:
        messages.success(request, f"{tenant.name}'s own envelope for {workflow.name} is set.")
    return back
