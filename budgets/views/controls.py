"""The controls page: what the ladder (or an operator) has switched on, why, for whom and until when."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from budgets.forms import ControlEndForm, ControlForm
from budgets.models import Control
from budgets.selectors import control_get, control_lists
from budgets.services.controls import control_end as control_end_service
from budgets.services.controls import control_start
from tenants.errors import ApplicationError
from tenants.scope import Actor, Operation
from tenants.scoping import tenant_page

from .layout import budget_layout_context


@tenant_page
def controls_list(request):
    scope = request.scope
    now = timezone.now()
    lists = control_lists(scope=scope, now=now)
    context = budget_layout_context(request, scope)
    context.update(lists=lists, now=now, can_manage=scope.may(Operation.MANAGE_CONTROLS))
    return render(request, "budgets/controls_list.html", context)


@tenant_page
@require_http_methods(["GET", "POST"])
def control_add(request):
    request.scope.require(Operation.MANAGE_CONTROLS)
    scope = request.scope
    if request.method == "POST":
        form = ControlForm(request.POST)
        if form.is_valid():
            try:
                control = control_start(
                    actor=Actor(user=request.user), source=Control.Source.MANUAL, **form.service_fields()
                )
            except ApplicationError as error:
                form.add_service_error(error)
            else:
                messages.success(request, f"Control {control.get_kind_display()} started for {control.scope_label()}.")
                return redirect(reverse("controls_list") + scope.query)
    else:
        form = ControlForm(initial={"tenant": scope.tenant.slug} if scope.tenant else None)
    context = budget_layout_context(request, scope, switcher_action=reverse("controls_list"))
    context.update(form=form)
    return render(request, "budgets/control_form.html", context)


@tenant_page
@require_POST
def control_end(request, control_id: int):
    request.scope.require(Operation.MANAGE_CONTROLS)
    scope = request.scope
    control = control_get(control_id=control_id, scope=scope)
    if control is None:
        raise Http404("No such control.")
    form = ControlEndForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why the control ends; it was not ended.")
    else:
        was_active = control.ends_at is None or control.ends_at > timezone.now()
        control_end_service(control=control, reason=form.cleaned_data["reason"], actor=Actor(user=request.user))
        if was_active:
            messages.success(request, f"Control {control.get_kind_display()} for {control.scope_label()} ended.")
        else:
            messages.info(request, "That control had already ended.")
    return redirect(reverse("controls_list") + scope.query)
