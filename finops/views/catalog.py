"""Pages for the model catalog (models, prices, price forms) and the people's FOCUS download.

The catalog is shared product data that every signed-in person may read; only operators (staff)
change prices, and every change goes through `model_price_save` so it is audited and re-prices the
usage it affects. What usage shows (unknown model names, the export) is limited to the tenants the
person may see, resolved like on the other pages.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from finops import hooks
from finops.exports import FocusExportParams, focus_csv, focus_rows
from finops.forms import ModelPriceForm
from finops.models import LlmModel, ModelPrice
from finops.selectors.catalog import catalog_by_provider, catalog_model_get, unknown_model_names
from finops.services.repricing import model_price_save
from tenants.errors import ApplicationError
from tenants.scope import Actor
from tenants.scoping import tenant_page

from .layout import layout_context

UNKNOWN_MODELS_SHOWN = 50
ADMIN_ADD_MODEL_URL = "/admin/finops/llmmodel/add/"

# --- Pages ------------------------------------------------------------------------------------------


@tenant_page
def models_list(request):
    scope = request.scope
    groups = catalog_by_provider()
    unknown = unknown_model_names(scope=scope, limit=UNKNOWN_MODELS_SHOWN + 1)
    context = layout_context(request, scope)
    context.update(
        groups=groups,
        model_count=sum(len(group.models) for group in groups),
        unknown=unknown[:UNKNOWN_MODELS_SHOWN],
        unknown_more=len(unknown) > UNKNOWN_MODELS_SHOWN,
        admin_add_model_url=ADMIN_ADD_MODEL_URL,
    )
    if hooks.estimates_report is not None:
        providers: dict[str, list[str]] = {}
        for group in groups:
            providers.setdefault(group.provider, []).extend(
                e.model.name for e in group.models if not e.model.encoding
            )
        context["estimates"] = hooks.estimates_report(
            scope=scope, providers={p: names for p, names in providers.items() if names}
        )
    return render(request, "finops/models.html", context)


@tenant_page
def model_detail(request, name: str):
    scope = request.scope
    entry = catalog_model_get(name=name)
    if entry is None:
        raise Http404("No such model.")
    context = layout_context(request, scope)
    context.update(entry=entry, model=entry.model)
    return render(request, "finops/model_detail.html", context)


def _operator_only(request) -> None:
    if not request.user.is_staff:
        raise PermissionDenied("Only operators change prices.")


@tenant_page
@require_http_methods(["GET", "POST"])
def model_price_add(request, name: str):
    _operator_only(request)
    model = get_object_or_404(LlmModel, name=name)
    return _price_form(request, model=model, price=None)


@tenant_page
@require_http_methods(["GET", "POST"])
def model_price_edit(request, name: str, price_id: int):
    _operator_only(request)
    model = get_object_or_404(LlmModel, name=name)
    price = get_object_or_404(ModelPrice, pk=price_id, model=model)
    return _price_form(request, model=model, price=price)


def _price_form(request, *, model: LlmModel, price: ModelPrice | None) -> HttpResponse:
    scope = request.scope
    latest = None if price is not None else model.prices.order_by("-effective_from").first()
    if request.method == "POST":
        form = ModelPriceForm(request.POST, model=model, instance=price)
        if form.is_valid():
            try:
                saved = model_price_save(price=form.save(commit=False), actor=Actor(user=request.user))
            except ValidationError as error:  # e.g. a concurrent edit took the same start meanwhile
                form.add_error(None, error.messages)
            else:
                verb = "corrected" if price is not None else "added"
                start = timezone.localtime(saved.effective_from)
                messages.success(
                    request,
                    f"Price of {model.name} in force from {start:%Y-%m-%d %H:%M} {verb}. "
                    "Usage records it affects will be re-priced in the background; totals catch up in a few moments.",
                )
                return redirect(reverse("model_detail", kwargs={"name": model.name}) + scope.query)
    else:
        # A new price starts from the latest one: usually only one or two numbers change.
        form = ModelPriceForm(model=model, instance=price, copy_from=latest)
    context = layout_context(request, scope)
    context.update(form=form, model=model, price=price, copied_from=latest)
    return render(request, "finops/price_form.html", context)


# --- FOCUS download ---------------------------------------------------------------------------------


@tenant_page
@require_GET
def focus_export(request):
    """The FOCUS CSV of the tenants the person may see (one with ?tenant=, else all of them)."""
    scope = request.scope
    try:
        params = FocusExportParams.from_query(request.GET)
    except ApplicationError as error:
        return HttpResponseBadRequest(f"{error.message}\n", content_type="text/plain; charset=utf-8")
    account = scope.tenant.slug if scope.tenant is not None else "all"
    rows = focus_rows(
        scope=scope,
        start=params.start,
        end=params.end,
        workflow=params.workflow,
        environment=params.environment,
    )
    response = StreamingHttpResponse(focus_csv(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{params.filename(account)}"'
    return response
