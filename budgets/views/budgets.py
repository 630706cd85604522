"""The budgets list, a budget's page (burn-down, periods, controls, alerts), and the budget form."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from budgets import charts
from budgets.forecasting import window_forecast_weekday
from budgets.forms import BudgetForm, BudgetIncreaseForm
from budgets.models import Budget, BudgetWindow
from budgets.policy import policy_effective
from budgets.selectors import (
    budget_alerts,
    budget_burn,
    budget_burns,
    budget_controls,
    budget_current_windows,
    budget_get,
    budget_windows,
    burn_series,
)
from budgets.services.budget_increases import budget_increase_ask
from budgets.services.budgets import budget_create, budget_update
from budgets.services.unreserved import unreserved_sources
from budgets.views.csv_tables import BUDGET_COLUMNS, budget_rows
from finops.charts import figure_payload
from finops.selectors.workflows import workflows_visible
from tenants.csv_safe import csv_download, wants_csv
from tenants.errors import ApplicationError
from tenants.scope import Actor, Operation
from tenants.scoping import tenant_page

from .layout import budget_layout_context


@tenant_page
def budgets_list(request):
    scope = request.scope
    burns = budget_burns(scope=scope)
    if wants_csv(request):
        return csv_download(name="budgets", scope=scope, header=BUDGET_COLUMNS, rows=budget_rows(burns))
    context = budget_layout_context(request, scope)
    context.update(
        burns=burns,
        editable={b.budget.pk for b in burns if scope.may(Operation.MANAGE, b.budget.tenant_id)},
        can_add=scope.may_anywhere(Operation.MANAGE),
        active_count=sum(1 for b in burns if b.budget.is_active),
    )
    return render(request, "budgets/budgets_list.html", context)


def _visible_budget(scope, budget_id: int) -> Budget:
    budget = budget_get(budget_id=budget_id, scope=scope)
    if budget is None:
        raise Http404("No such budget.")
    return budget


@tenant_page
def budget_detail(request, budget_id: int):
    scope = request.scope
    budget = _visible_budget(scope, budget_id)
    now = timezone.now()
    burn = budget_burn(budget=budget, now=now)
    points = burn_series(budget=budget, starts_at=burn.starts_at, now=min(now, burn.ends_at))
    window = budget_current_windows([budget]).get(budget.pk)
    forecast = window_forecast_weekday(budget=budget, window=window, now=now) if window is not None else None
    context = budget_layout_context(request, scope, switcher_action=reverse("budgets_list"))
    context.update(
        budget=budget,
        burn=burn,
        chart=figure_payload(charts.burn_down_figure(burn, points, now=now)),
        windows=budget_windows(budget=budget, now=now),
        controls=budget_controls(budget=budget),
        alerts=budget_alerts(budget=budget, scope=scope),
        policy=policy_effective(budget.policy),
        default_policy=not budget.policy,
        can_edit=scope.may(Operation.MANAGE, budget.tenant_id),
        can_ask_increase=budget.tenant_id is not None
        and budget.is_active
        and scope.may(Operation.MANAGE, budget.tenant_id),
        increase_form=BudgetIncreaseForm(budget=budget),
        weekday_forecast=forecast,
        now=now,
        unreserved_sources=_unreserved_sources(budget, burn),
    )
    return render(request, "budgets/budget_detail.html", context)


def _unreserved_sources(budget, burn):
    if not burn.unreserved_calls:
        return None
    window = BudgetWindow.objects.filter(budget=budget, starts_at=burn.starts_at).first()
    return unreserved_sources(budget=budget, window=window) if window is not None else None


@tenant_page
@require_http_methods(["GET", "POST"])
def budget_add(request):
    if not request.scope.may_anywhere(Operation.MANAGE):
        raise PermissionDenied("Only operators and tenant admins create budgets.")
    return _budget_form(request, budget=None)


@tenant_page
@require_http_methods(["GET", "POST"])
def budget_edit(request, budget_id: int):
    scope = request.scope
    budget = _visible_budget(scope, budget_id)
    if not scope.may(Operation.MANAGE, budget.tenant_id):
        raise PermissionDenied("Only operators and the tenant's admins change its budgets.")
    return _budget_form(request, budget=budget)


def _budget_form(request, *, budget: Budget | None) -> HttpResponse:
    scope = request.scope
    tenants = scope.tenants_where(Operation.MANAGE)
    workflows = workflows_visible(scope=scope)
    platform = scope.is_platform
    if request.method == "POST":
        form = BudgetForm(request.POST, tenants=tenants, workflows=workflows, platform=platform, budget=budget)
        if form.is_valid():
            fields = form.service_fields()
            try:
                if budget is None:
                    saved = budget_create(actor=Actor(user=request.user), **fields)
                else:
                    if not platform:
                        fields.pop("tenant")  # fixed for tenant admins
                    saved = budget_update(budget=budget, actor=Actor(user=request.user), **fields)
            except ApplicationError as error:
                form.add_service_error(error)
            else:
                messages.success(request, f"Budget “{saved.name}” {'saved' if budget else 'created'}.")
                return redirect(reverse("budget_detail", kwargs={"budget_id": saved.pk}) + scope.query)
    else:
        form = BudgetForm(tenants=tenants, workflows=workflows, platform=platform, budget=budget)
        if budget is None and scope.tenant is not None and tenants.filter(pk=scope.tenant.pk).exists():
            form.initial.setdefault("tenant", scope.tenant.slug)
    context = budget_layout_context(request, scope, switcher_action=reverse("budgets_list"))
    context.update(form=form, budget=budget)
    return render(request, "budgets/budget_form.html", context)


@tenant_page
@require_http_methods(["POST"])
def budget_increase(request, budget_id: int):
    """A tenant admin asks for more room; the request waits on the approvals page for someone else."""
    scope = request.scope
    budget = _visible_budget(scope, budget_id)
    if not scope.may(Operation.MANAGE, budget.tenant_id):
        raise PermissionDenied("Only operators and the tenant's admins ask for budget increases.")
    back = redirect(reverse("budget_detail", kwargs={"budget_id": budget.pk}) + scope.query)
    form = BudgetIncreaseForm(request.POST, budget=budget)
    if not form.is_valid():
        problems = "; ".join(
            f"{form.fields[f].label if f in form.fields else f}: {' '.join(map(str, e))}"
            for f, e in form.errors.items()
        )
        messages.error(request, f"Nothing was asked: {problems}")
        return back
    data = form.cleaned_data
    try:
        approval = budget_increase_ask(
            budget=budget,
            new_soft_limit=data["soft_limit"],
            new_hard_limit=data["hard_limit"],
            current_window_only=data["current_window_only"],
            justification=data["justification"],
            actor=Actor(user=request.user),
        )
    except ApplicationError as error:
        messages.error(request, f"Nothing was asked: {error.message}")
        return back
    messages.success(
        request, f"Asked for the increase (request {approval.pk}): another approver of {budget.tenant} decides it."
    )
    return redirect(reverse("approvals_list") + scope.query)
