"""The anomalies page: open and recent anomalies, each with its chart of actual against the expected band,
the controls it started and links to its tenant and workflow; one anomaly's page takes feedback."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from budgets import charts
from budgets.models import Anomaly
from budgets.selectors import anomalies_scoped, anomaly_feedback_counts, anomaly_get
from budgets.services.anomalies import anomaly_feedback as anomaly_feedback_service
from budgets.views.csv_tables import ANOMALY_COLUMNS, anomaly_rows
from finops.charts import figure_payload
from tenants.csv_safe import csv_download, wants_csv
from tenants.errors import ApplicationError
from tenants.scope import Actor, Operation
from tenants.scoping import tenant_page

from .layout import budget_layout_context

RECENT_SHOWN = 50
CHARTS_SHOWN = 12  # open anomalies drawn inline; the rest link to their page


def _chart(anomaly: Anomaly, *, height: int = 220) -> dict | None:
    series = anomaly.evidence.get("series") or []
    if not series:
        return None
    fig = charts.anomaly_figure(
        series, unit=anomaly.evidence.get("unit", ""), opened_at=anomaly.opened_at, height=height
    )
    return figure_payload(fig)


@tenant_page
def anomalies_list(request):
    scope = request.scope
    qs = anomalies_scoped(scope=scope)
    open_anomalies = list(qs.filter(status=Anomaly.Status.OPEN)[:200])
    recent = list(qs.filter(status=Anomaly.Status.CLEARED).order_by("-cleared_at", "-id")[:RECENT_SHOWN])
    if wants_csv(request):
        return csv_download(
            name="anomalies", scope=scope, header=ANOMALY_COLUMNS, rows=anomaly_rows(open_anomalies + recent)
        )
    counts = anomaly_feedback_counts(scope=scope)
    context = budget_layout_context(request, scope)
    context.update(
        open_anomalies=[
            (a, _chart(a) if i < CHARTS_SHOWN else None, f"anomaly-figure-{a.pk}") for i, a in enumerate(open_anomalies)
        ],
        recent=recent,
        counts=counts,
        total=sum(counts.values()),
        unrated=counts[""],
        now=timezone.now(),
    )
    return render(request, "budgets/anomalies_list.html", context)


@tenant_page
def anomaly_detail(request, anomaly_id: int):
    scope = request.scope
    anomaly = anomaly_get(anomaly_id=anomaly_id, scope=scope)
    if anomaly is None:
        raise Http404("No such anomaly.")
    context = budget_layout_context(request, scope)
    context.update(
        anomaly=anomaly,
        chart=_chart(anomaly, height=320),
        controls=list(anomaly.controls.all()),
        can_feedback=scope.may(Operation.ACKNOWLEDGE, anomaly.tenant_id),
        feedback_choices=[c for c in Anomaly.Feedback.choices if c[0]],
        now=timezone.now(),
    )
    return render(request, "budgets/anomaly_detail.html", context)


@tenant_page
@require_POST
def anomaly_feedback(request, anomaly_id: int):
    scope = request.scope
    anomaly = anomaly_get(anomaly_id=anomaly_id, scope=scope)
    if anomaly is None:
        raise Http404("No such anomaly.")
    if not scope.may(Operation.ACKNOWLEDGE, anomaly.tenant_id):
        raise PermissionDenied("Only the tenant's approvers and admins, and operators, give feedback on anomalies.")
    try:
        done = anomaly_feedback_service(
            anomaly=anomaly,
            feedback=request.POST.get("feedback", ""),
            note=request.POST.get("note", "").strip(),
            actor=Actor(user=request.user),
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Recorded: {done.get_feedback_display()}.")
    return redirect(reverse("anomaly_detail", args=[anomaly.pk]) + scope.query)
