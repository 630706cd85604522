"""The workflows list (registered ones, and auto-discovered ones waiting for an operator to confirm them),
and the operators' register / edit form. Workflows are shared product data: everyone sees the ones
their scope sees; only operators write them (a tenant admin sets the tenant's own stricter threshold
on the workflow page)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from finops.forms import WorkflowForm
from finops.models import Workflow
from finops.selectors.workflows import workflows_visible
from finops.services.workflows import workflow_save
from finops.views.layout import layout_context
from tenants.errors import ApplicationError
from tenants.scope import TenantScope
from tenants.scoping import tenant_page


@tenant_page
@require_GET
def workflows_list(request: HttpRequest):
    scope: TenantScope = request.scope  # type: ignore[attr-defined]
    workflows = list(workflows_visible(scope=scope).select_related("default_tier").order_by("name"))
    context = layout_context(request, scope)
    context.update(
        registered=[w for w in workflows if w.status == Workflow.Status.REGISTERED],
        discovered=[w for w in workflows if w.status == Workflow.Status.AUTO_DISCOVERED],
        can_edit=scope.is_platform and scope.api_key is None,
    )
    return render(request, "finops/workflows_list.html", context)


def _operator(request: HttpRequest) -> TenantScope:
    scope: TenantScope = request.scope  # type: ignore[attr-defined]
    if not scope.is_platform:
        raise PermissionDenied("Only operators register and edit workflows.")
    return scope


def _form_page(request, scope, form, workflow=None, status=200):
    context = layout_context(request, scope)
    context.update(form=form, workflow=workflow)
    return render(request, "finops/workflow_form.html", context, status=status)


def _save(request, scope, form, workflow):
    try:
        saved = workflow_save(workflow=workflow, actor=scope.actor, **form.cleaned_data)
    except ApplicationError as error:
        for field, problems in (error.details or {}).items():
            for problem in problems:
                form.add_error(field if field in form.fields else None, problem)
        return _form_page(request, scope, form, workflow, status=400)
    messages.success(request, f"Saved workflow {saved.name}.")
    return redirect(reverse("workflow_detail", args=[saved.slug]) + scope.query)


@tenant_page
@require_http_methods(["GET", "POST"])
def workflow_add(request: HttpRequest):
    scope = _operator(request)
    if request.method == "GET":
        return _form_page(request, scope, WorkflowForm())
    form = WorkflowForm(request.POST)
    if not form.is_valid():
        return _form_page(request, scope, form, status=400)
    return _save(request, scope, form, None)


@tenant_page
@require_http_methods(["GET", "POST"])
def workflow_edit(request: HttpRequest, slug: str):
    scope = _operator(request)
    workflow = Workflow.objects.filter(slug=slug).first()  # operators see every workflow
    if workflow is None:
        raise Http404("No such workflow.")
    if request.method == "GET":
        initial = {
            "name": workflow.name,
            "slug": workflow.slug,
            "owner": workflow.owner,
            "priority": workflow.priority,
            "default_tier": workflow.default_tier_id,
            "approval_threshold_usd": workflow.approval_threshold_usd,
        }
        return _form_page(request, scope, WorkflowForm(initial=initial), workflow)
    form = WorkflowForm(request.POST)
    if not form.is_valid():
        return _form_page(request, scope, form, workflow, status=400)
    return _save(request, scope, form, workflow)
