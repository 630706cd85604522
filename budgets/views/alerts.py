"""The alerts page: budget levels crossed, unacknowledged first, with where each was delivered."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from budgets.selectors import alert_get, alerts_visible
from budgets.services.alerts import alert_acknowledge as alert_acknowledge_service
from budgets.views.csv_tables import ALERT_COLUMNS, alert_rows
from tenants.csv_safe import csv_download, wants_csv
from tenants.scope import Actor, Operation
from tenants.scoping import tenant_page

from .layout import budget_layout_context

ALERTS_SHOWN = 200


@tenant_page
def alerts_list(request):
    scope = request.scope
    alerts = list(alerts_visible(scope=scope)[: ALERTS_SHOWN + 1])
    open_alerts = [a for a in alerts[:ALERTS_SHOWN] if a.acknowledged_at is None]
    if wants_csv(request):
        shown = open_alerts + [a for a in alerts[:ALERTS_SHOWN] if a.acknowledged_at is not None]
        return csv_download(name="alerts", scope=scope, header=ALERT_COLUMNS, rows=alert_rows(shown))
    context = budget_layout_context(request, scope)
    context.update(
        open_alerts=open_alerts,
        acknowledged=[a for a in alerts[:ALERTS_SHOWN] if a.acknowledged_at is not None],
        more=len(alerts) > ALERTS_SHOWN,
        can_ack={a.pk for a in open_alerts if scope.may(Operation.ACKNOWLEDGE, a.tenant_id)},
    )
    return render(request, "budgets/alerts_list.html", context)


@tenant_page
@require_POST
def alert_acknowledge(request, alert_id: int):
    scope = request.scope
    alert = alert_get(alert_id=alert_id, scope=scope)
    if alert is None:
        raise Http404("No such alert.")
    if not scope.may(Operation.ACKNOWLEDGE, alert.tenant_id):
        raise PermissionDenied("Only the tenant's approvers and admins, and operators, acknowledge its alerts.")
    if alert.acknowledged_at is None:
        alert_acknowledge_service(alert=alert, actor=Actor(user=request.user))
        messages.success(request, f"Acknowledged: {alert.subject}")
    return redirect(reverse("alerts_list") + scope.query)
