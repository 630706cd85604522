"""The workflow page's envelope: observed (from the daily rollups' histograms) against expected, the
proposal taken from the last four weeks, and the operators' form that accepts or edits it."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from finops.models import Workflow
from finops.selectors.envelopes import ObservedEnvelope, envelope_observed
from finops.selectors.workflows import workflow_get
from finops.services.envelopes import ENVELOPE_FIELDS, workflow_envelope_set
from tenants.errors import ApplicationError
from tenants.scope import TenantScope
from tenants.scoping import tenant_page


def _round_up(value: int | None) -> int | None:
    """A proposal keeps two significant digits, rounded up: 1,437 tokens -> 1,500."""
    if value is None:
        return None
    digits = max(len(str(value)) - 2, 0)
    step = 10**digits
    return -(-value // step) * step


def envelope_proposal(observed: ObservedEnvelope) -> dict[str, int | None] | None:
    if not observed.has_calls:
        return None
    return {
        "expected_input_tokens_p50": _round_up(observed.input_p50),
        "expected_input_tokens_p95": _round_up(observed.input_p95),
        "expected_output_tokens_p50": _round_up(observed.output_p50),
        "expected_output_tokens_p95": _round_up(observed.output_p95),
        "expected_calls_per_day": _round_up(observed.calls_per_day),
    }


def envelope_context(request: HttpRequest, scope: TenantScope, workflow: Workflow) -> dict:
    """Observed over what the scope covers (every tenant for operators, or the tenant picked); the
    proposal, for operators only, over every tenant: the expected envelope is the workflow's, shared."""
    observed = envelope_observed(scope=scope, workflow=workflow)
    proposal = None
    if request.user.is_staff:
        everyone = (
            observed if scope.tenant_ids is None else envelope_observed(scope=TenantScope.system(), workflow=workflow)
        )
        proposal = envelope_proposal(everyone)
    current = {name: getattr(workflow, name) for name in ENVELOPE_FIELDS}
    return {
        "envelope_observed": observed,
        "envelope_proposal": proposal,
        "envelope_proposal_differs": proposal is not None and proposal != current,
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
        proposal = envelope_proposal(envelope_observed(scope=TenantScope.system(), workflow=workflow))
        if proposal is None:
            messages.error(request, "No usage in the last four weeks to propose an envelope from; nothing changed.")
            return back
        values: dict = proposal
        source = "proposal"
    else:
        values, source = {name: request.POST.get(name, "") for name in ENVELOPE_FIELDS}, "edit"
    try:
        workflow_envelope_set(workflow=workflow, values=values, actor=scope.actor, source=source)
    except ApplicationError as error:
        fields = "; ".join(f"{k.replace('expected_', '').replace('_', ' ')}: {v[0]}" for k, v in error.details.items())
        messages.error(request, f"{error.message} {fields}. Nothing changed.")
        return back
    messages.success(request, f"{workflow.name}'s expected envelope is set ({source}).")
    return back
