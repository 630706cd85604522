"""Tenant and workflow pages: spend over time, token mix, cost per call and the workflow's envelope."""

from __future__ import annotations

from datetime import date, timedelta

from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse

from finops import charts
from finops.selectors.dashboard import day_start, days_between, utc_today
from finops.selectors.details import tenant_dashboard, workflow_dashboard
from finops.selectors.workflows import workflows_visible
from tenants.scoping import tenant_page

from .envelopes import envelope_context
from .explore import explorer_url, tenant_url
from .layout import layout_context
from .prompts import workflow_prompts_context
from .variance import variance_context
from .workflow_policies import workflow_policy_context

DETAIL_DAYS = (30, 90)


def _detail_days(request) -> tuple[int, list[date]]:
    n = 90 if request.GET.get("days") == "90" else 30
    today = utc_today()
    return n, days_between(today - timedelta(days=n - 1), today)


def _detail_figures(dash, *, stack_colors=None) -> dict:
    has_usage = dash.totals.calls > 0
    if not has_usage:
        return {"has_usage": False}
    return {
        "has_usage": True,
        "range_hint": f"last {len(dash.days)} days",
        "spend_chart": charts.figure_payload(
            charts.stacked_spend_figure([day_start(d) for d in dash.days], dash.stacks, colors=stack_colors)
        ),
        "token_chart": charts.figure_payload(charts.token_mix_figure(dash.profile)),
        "per_call_chart": charts.figure_payload(charts.cost_per_call_figure(dash.profile)),
        "avg_cost_per_call": (
            dash.totals.cost_nanos // (dash.totals.calls - dash.totals.unpriced_calls)
            if dash.totals.calls > dash.totals.unpriced_calls
            else None
        ),
    }


@tenant_page(slug_kwarg="slug")
def tenant_detail(request, slug: str):
    switch_to = request.GET.get("tenant")
    if switch_to is not None and switch_to != slug:
        # The layout's tenant switcher submits here: go to the chosen tenant's page, or the overview.
        return redirect(tenant_url(switch_to) if switch_to else reverse("home"))
    scope = request.scope
    tenant = scope.tenant
    n, days = _detail_days(request)
    dash = tenant_dashboard(scope=scope, days=days)
    context = layout_context(request, scope)
    context.update(
        tenant=tenant,
        dash=dash,
        days_n=n,
        day_choices=DETAIL_DAYS,
        explore_url=explorer_url({"tenant": tenant.slug, "by": "workflow", "by2": "model"}),
        **_detail_figures(dash),
        **variance_context(scope, tenant_id=tenant.pk),
    )
    return render(request, "finops/tenant_detail.html", context)


@tenant_page
def workflow_detail(request, slug: str):
    scope = request.scope
    workflow = workflows_visible(scope=scope).select_related("default_tier").filter(slug=slug).first()
    if workflow is None:
        raise Http404("No such workflow.")
    n, days = _detail_days(request)
    dash = workflow_dashboard(
        scope=scope,
        workflow=workflow,
        days=days,
        with_tenants=scope.spans_several,
    )
    figures = _detail_figures(dash)
    envelope = any(
        getattr(workflow, f) is not None
        for f in (
            "expected_input_tokens_p50",
            "expected_input_tokens_p95",
            "expected_output_tokens_p50",
            "expected_output_tokens_p95",
            "expected_calls_per_day",
        )
    )
    if figures["has_usage"]:
        figures.update(
            calls_chart=charts.figure_payload(
                charts.calls_figure(dash.profile, expected_per_tenant=workflow.expected_calls_per_day)
            ),
            input_chart=charts.figure_payload(
                charts.per_call_envelope_figure(
                    dash.profile,
                    measure="prompt_tokens",
                    p50=workflow.expected_input_tokens_p50,
                    p95=workflow.expected_input_tokens_p95,
                    color="#2563eb",
                )
            ),
            output_chart=charts.figure_payload(
                charts.per_call_envelope_figure(
                    dash.profile,
                    measure="output_tokens",
                    p50=workflow.expected_output_tokens_p50,
                    p95=workflow.expected_output_tokens_p95,
                    color="#f59e0b",
                )
            ),
        )
    context = layout_context(request, scope)
    context.update(
        workflow=workflow,
        dash=dash,
        days_n=n,
        day_choices=DETAIL_DAYS,
        has_envelope=envelope,
        explore_url=explorer_url({**scope.tenant_param(), "workflow": workflow.slug, "by": "model"}),
        **figures,
        **workflow_prompts_context(scope, workflow),
        **workflow_policy_context(scope, workflow),
        **envelope_context(request, scope, workflow),
        **variance_context(scope, workflow_id=workflow.pk),
    )
    return render(request, "finops/workflow_detail.html", context)


# --- Usage records ----------------------------------------------------------------------------------
