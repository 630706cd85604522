"""Prompt versions on pages: the workflow page's list (projected against actual cost per call) and its
small registration form, and one version's review page (the diff against the previous active version,
the token change and the projected monthly cost change)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from django.contrib import messages
from django.http import Http404, HttpRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from finops import hooks
from finops.forms import PromptVersionForm
from finops.models import PromptVersion, Workflow
from finops.selectors.prompts import (
    PromptVersionUsage,
    prompt_projection,
    prompt_version_baseline,
    prompt_version_get,
    prompt_version_text,
    prompt_version_usage,
    prompt_versions_of,
)
from finops.selectors.workflows import workflow_required
from finops.services.prompts import prompt_version_register
from tenants.errors import ApplicationError
from tenants.scope import Operation, TenantScope
from tenants.scoping import tenant_page

from .layout import layout_context

VERSIONS_SHOWN = 50


@dataclass(frozen=True)
class VersionRow:
    """One line of the workflow page's list: a registered version, or a label only usage named."""

    label: str
    tenant_slug: str
    tenant_name: str
    version: PromptVersion | None
    usage: PromptVersionUsage | None
    review: hooks.PromptReview | None = None


def workflow_prompts_context(scope: TenantScope, workflow: Workflow) -> dict:
    """The workflow page's prompt versions for the scope's tenants, each beside the last 30 days of
    usage that named it, and whether the person may register one here."""
    versions = list(prompt_versions_of(scope=scope, workflow=workflow)[:VERSIONS_SHOWN])
    usage = prompt_version_usage(scope=scope, workflow=workflow)
    reviewer = hooks.prompt_reviewer
    reviews = reviewer.latest(version_ids=[v.pk for v in versions]) if reviewer is not None and versions else {}
    rows = [
        VersionRow(v.label, v.tenant.slug, v.tenant.name, v, usage.pop((v.tenant_id, v.label), None), reviews.get(v.pk))
        for v in versions
    ]
    # Labels that usage named but nobody registered (for these tenants): shown so they are noticed.
    names = {t.pk: (t.slug, t.name) for t in scope.tenants()} if usage else {}
    for (tenant_id, label), used in sorted(usage.items(), key=lambda item: -item[1].calls):
        slug, name = names.get(tenant_id, ("", ""))
        rows.append(VersionRow(label, slug, name, None, used))
    can_register = scope.tenant is not None and scope.may(Operation.MANAGE, scope.tenant.pk)
    return {
        "prompt_rows": rows,
        "prompt_versions_more": len(versions) == VERSIONS_SHOWN,
        "prompt_form": PromptVersionForm() if can_register else None,
    }


@tenant_page
@require_http_methods(["GET", "POST"])
def prompt_version_add(request: HttpRequest, slug: str):
    scope = request.scope  # type: ignore[attr-defined]
    workflow = workflow_required(scope=scope, slug=slug)
    tenant = scope.tenant
    if tenant is not None:
        scope.require(Operation.MANAGE, tenant.pk)
    form = PromptVersionForm(request.POST or None)
    if request.method == "POST" and tenant is None:
        form.add_error(None, "Choose the tenant this prompt version is for (the tenant switcher), then register it.")
    elif request.method == "POST" and tenant is not None and form.is_valid():
        data = form.cleaned_data
        try:
            registered = prompt_version_register(
                tenant=tenant,
                workflow=workflow,
                label=data["label"],
                text=data["text"],
                model_name=data["model"],
                git_commit=data["git_commit"],
                actor=scope.actor,
            )
        except ApplicationError as error:
            for field, problems in (error.details or {"": [error.message]}).items():
                form.add_error(field if field in form.fields else None, problems)
        else:
            version = registered.version
            if not registered.created:
                messages.info(request, f"Version {version.label} was already registered with this prompt.")
            elif version.status == PromptVersion.Status.UNDER_REVIEW:
                messages.warning(
                    request, f"Version {version.label} grows the input of a high-cost workflow: it waits for a review."
                )
            else:
                messages.success(request, f"Version {version.label} registered and active.")
            return redirect(_detail_url(version))
    context = layout_context(request, scope)
    context.update(workflow=workflow, form=form)
    return render(request, "finops/prompt_version_form.html", context)


def _detail_url(version: PromptVersion) -> str:
    url = reverse("prompt_version_detail", kwargs={"slug": version.workflow.slug, "label": version.label})
    return f"{url}?tenant={version.tenant.slug}"


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "file", "hunk", "add", "del" or "ctx"
    text: str


def prompt_diff(old: str, new: str, *, old_name: str, new_name: str) -> list[DiffLine]:
    """A unified diff of two prompts, line by line with its kind (the template escapes the text)."""
    lines = []
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), old_name, new_name, lineterm="", n=3):
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        lines.append(DiffLine(kind, line))
    return lines


@tenant_page
def prompt_version_detail(request: HttpRequest, slug: str, label: str):
    scope = request.scope  # type: ignore[attr-defined]
    workflow = workflow_required(scope=scope, slug=slug)
    version = prompt_version_get(scope=scope, workflow=workflow, label=label)
    if version is None:
        raise Http404("No such prompt version.")
    # The version's own tenant: the scope sees it, and its projection is about that tenant alone.
    own = TenantScope.for_tenant(version.tenant)
    baseline = prompt_version_baseline(scope=own, workflow=workflow, before=version)
    projection = prompt_projection(
        scope=own,
        workflow=workflow,
        baseline=baseline,
        new_tokens=version.input_tokens,
        new_cost_nanos=version.estimated_cost_per_call_nanos,
    )
    reviewer = hooks.prompt_reviewer
    review = reviewer.latest(version_ids=[version.pk]).get(version.pk) if reviewer is not None else None
    diff = prompt_diff(
        prompt_version_text(baseline) if baseline is not None else "",
        prompt_version_text(version),
        old_name=baseline.label if baseline is not None else "(none)",
        new_name=version.label,
    )
    context = layout_context(request, scope)
    context.update(
        workflow=workflow,
        version=version,
        baseline=baseline,
        projection=projection,
        review=review,
        diff=diff,
        usage=prompt_version_usage(scope=own, workflow=workflow, now=timezone.now()).get(
            (version.tenant_id, version.label)
        ),
    )
    return render(request, "finops/prompt_version_detail.html", context)
