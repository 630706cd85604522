"""The savings page: what caching and controls saved, a what-if on another model, and recommendations."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.shortcuts import render
from django.utils import timezone

from budgets.savings import savings_recommendations, savings_summary, whatif_reprice
from finops.models import LlmModel, UsageRecord, Workflow
from finops.selectors.workflows import workflows_visible
from tenants.scoping import tenant_page

from .layout import budget_layout_context

DAYS = (7, 30, 90)


@tenant_page
def savings(request):
    scope = request.scope
    try:
        days = int(request.GET.get("days", 30))
    except ValueError:
        days = 30
    days = days if days in DAYS else 30
    until = timezone.now()
    since = until - timedelta(days=days)
    # Registered workflows and those the scope's calls used in the period (rollups may still lag them).
    used = scope.filter(UsageRecord.objects.filter(occurred_at__gte=since, workflow__isnull=False)).values(
        "workflow_id"
    )
    workflows = list(
        Workflow.objects.filter(Q(pk__in=workflows_visible(scope=scope).values("pk")) | Q(pk__in=used)).order_by("slug")
    )
    workflow = next((w for w in workflows if w.slug == request.GET.get("workflow")), None)
    models = list(LlmModel.objects.filter(is_active=True, prices__isnull=False).distinct().order_by("provider", "name"))
    target = next((m for m in models if m.name == request.GET.get("model")), None)
    whatif = None
    if workflow is not None and target is not None:
        whatif = whatif_reprice(scope=scope, workflow=workflow, target=target, since=since, until=until)
    context = budget_layout_context(request, scope)
    context.update(
        days=days,
        day_choices=DAYS,
        since=since,
        until=until,
        summary=savings_summary(scope=scope, since=since, until=until, workflow_id=workflow.pk if workflow else None),
        recommendations=savings_recommendations(scope=scope, since=since, until=until),
        workflows=workflows,
        workflow=workflow,
        models=models,
        target=target,
        whatif=whatif,
    )
    return render(request, "budgets/savings.html", context)
