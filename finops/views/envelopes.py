"""The workflow page's envelope: observed (from the daily rollups' histograms) against expected, the daily
job's pending proposal, and the operators' forms that accept it or edit the envelope."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from finops.models import EnvelopeProposal, Workflow
from finops.selectors.envelopes import envelope_observed
from finops.selectors.workflows import workflow_get
from finops.services.envelopes import ENVELOPE_FIELDS, envelope_proposal_accept, workflow_envelope_set
from tenants.errors import ApplicationError
from tenants.scope import TenantScope
from tenants.scoping import tenant_page


def envelope_context(request: HttpRequest, scope: TenantScope, workflow: Workflow) -> dict:
    """Observed over what the scope covers (every tenant for operators, or the tenant picked); the pending
    proposal of the daily job (over every tenant), which operators accept."""
    proposal = None
    if request.user.is_staff:
        proposal = workflow.envelope_proposals.filter(status=EnvelopeProposal.Status.PENDING).first()
    return {
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
    if not request.user.is_staff:
        raise PermissionDenied("Only operators set a workflow's envelope: every tenant using it shares it.")
    back = redirect(reverse("workflow_detail", kwargs={"slug": workflow.slug}) + scope.query + "#envelope")
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
