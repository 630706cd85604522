"""Pages for the model catalog (models, prices, price forms) and the people's FOCUS download.

The catalog is shared product data that every signed-in person may read; only operators (staff)
change prices, and every change goes through `model_price_save` so it is audited and re-prices the
usage it affects. What usage shows (unknown model names, the export) is limited to the tenants the
person may see, resolved like on the other pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Max, Min, Prefetch, QuerySet
from django.http import Http404, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from finops.errors import ApplicationError
from finops.exports import FocusExportParams, focus_csv, focus_rows
from finops.forms import ModelPriceForm
from finops.models import LlmModel, ModelPrice, UsageRecord
from finops.services.repricing import model_price_save
from tenants.models import Tenant

from .scope import layout_context, page_scope

UNKNOWN_MODELS_SHOWN = 50
ADMIN_ADD_MODEL_URL = "/admin/finops/llmmodel/add/"

# --- Reads (selector-style: plain dataclasses, the tenant scope passed in) ------------------------------


@dataclass(frozen=True, slots=True)
class PriceEntry:
    price: ModelPrice
    status: str  # "current", "past" or "scheduled"

    @property
    def source_url(self) -> str:
        """The source when it is a web link (only those are rendered as links)."""
        source = self.price.source
        return source if urlsplit(source).scheme in ("http", "https") else ""

    @property
    def source_label(self) -> str:
        return urlsplit(self.source_url).netloc.removeprefix("www.") if self.source_url else self.price.source


@dataclass
class CatalogModel:
    """A catalog model with its prices newest first and the one in force now (None if none yet)."""

    model: LlmModel
    history: list[PriceEntry]
    current: ModelPrice | None = None
    past_count: int = 0
    scheduled_count: int = 0


# How providers spell themselves; any other provider is shown as stored, capitalised.
PROVIDER_LABELS = {"openai": "OpenAI", "anthropic": "Anthropic", "google": "Google", "xai": "xAI", "aws": "AWS"}


@dataclass
class ProviderGroup:
    provider: str
    models: list[CatalogModel] = field(default_factory=list)

    @property
    def label(self) -> str:
        return PROVIDER_LABELS.get(self.provider.lower(), self.provider[:1].upper() + self.provider[1:])


@dataclass(frozen=True, slots=True)
class UnknownModelName:
    """A model name seen in unpriced usage; `model` is set when the catalog knows the name but had
    no price in force when the calls happened."""

    model_name: str
    calls: int
    first_seen: datetime
    last_seen: datetime
    model: LlmModel | None


def _catalog_model(model: LlmModel, prices: list[ModelPrice], now: datetime) -> CatalogModel:
    entry = CatalogModel(model=model, history=[])
    for price in prices:  # newest start first
        if price.effective_from > now:
            status = "scheduled"
            entry.scheduled_count += 1
        elif entry.current is None:
            status = "current"
            entry.current = price
        else:
            status = "past"
            entry.past_count += 1
        entry.history.append(PriceEntry(price=price, status=status))
    return entry


def _with_prices(models: QuerySet[LlmModel]) -> QuerySet[LlmModel]:
    return models.select_related("tier").prefetch_related(
        Prefetch("prices", queryset=ModelPrice.objects.order_by("-effective_from"), to_attr="prices_newest_first")
    )


def catalog_by_provider(*, now: datetime | None = None) -> list[ProviderGroup]:
    """Every catalog model with its price history, grouped by provider (two queries)."""
    now = now or timezone.now()
    groups: dict[str, ProviderGroup] = {}
    for model in _with_prices(LlmModel.objects.order_by("provider", "tier__rank", "name")):
        group = groups.setdefault(model.provider, ProviderGroup(provider=model.provider))
        group.models.append(_catalog_model(model, model.prices_newest_first, now))
    return list(groups.values())


def catalog_model_get(*, name: str, now: datetime | None = None) -> CatalogModel | None:
    model = _with_prices(LlmModel.objects.filter(name=name)).first()
    if model is None:
        return None
    return _catalog_model(model, model.prices_newest_first, now or timezone.now())


def unknown_model_names(*, tenants: Tenant | QuerySet[Tenant], limit: int | None = None) -> list[UnknownModelName]:
    """Model names of the scope's unpriced usage with their call counts, most calls first."""
    records = UsageRecord.objects.filter(priced=False)
    records = records.filter(tenant=tenants) if isinstance(tenants, Tenant) else records.filter(tenant__in=tenants)
    rows = (
        records.values("model_name")
        .annotate(
            calls=Count("id"),
            first_seen=Min("occurred_at"),
            last_seen=Max("occurred_at"),
            catalog_model_id=Max("model_id"),  # set when the name is known but had no price in force
        )
        .order_by("-calls", "model_name")
    )
    if limit is not None:
        rows = rows[:limit]
    rows = list(rows)
    known = LlmModel.objects.in_bulk([r["catalog_model_id"] for r in rows if r["catalog_model_id"] is not None])
    return [
        UnknownModelName(
            model_name=r["model_name"],
            calls=r["calls"],
            first_seen=r["first_seen"],
            last_seen=r["last_seen"],
            model=known.get(r["catalog_model_id"]),
        )
        for r in rows
    ]


# --- Pages ------------------------------------------------------------------------------------------


@login_required
def models_list(request):
    scope = page_scope(request)
    groups = catalog_by_provider()
    unknown = unknown_model_names(tenants=scope.tenants, limit=UNKNOWN_MODELS_SHOWN + 1)
    context = layout_context(request, scope)
    context.update(
        groups=groups,
        model_count=sum(len(group.models) for group in groups),
        unknown=unknown[:UNKNOWN_MODELS_SHOWN],
        unknown_more=len(unknown) > UNKNOWN_MODELS_SHOWN,
        admin_add_model_url=ADMIN_ADD_MODEL_URL,
    )
    return render(request, "finops/models.html", context)


@login_required
def model_detail(request, name: str):
    scope = page_scope(request)
    entry = catalog_model_get(name=name)
    if entry is None:
        raise Http404("No such model.")
    context = layout_context(request, scope)
    context.update(entry=entry, model=entry.model)
    return render(request, "finops/model_detail.html", context)


def _operator_only(request) -> None:
    if not request.user.is_staff:
        raise PermissionDenied("Only operators change prices.")


@login_required
@require_http_methods(["GET", "POST"])
def model_price_add(request, name: str):
    _operator_only(request)
    model = get_object_or_404(LlmModel, name=name)
    return _price_form(request, model=model, price=None)


@login_required
@require_http_methods(["GET", "POST"])
def model_price_edit(request, name: str, price_id: int):
    _operator_only(request)
    model = get_object_or_404(LlmModel, name=name)
    price = get_object_or_404(ModelPrice, pk=price_id, model=model)
    return _price_form(request, model=model, price=price)


def _price_form(request, *, model: LlmModel, price: ModelPrice | None) -> HttpResponse:
    scope = page_scope(request)
    latest = None if price is not None else model.prices.order_by("-effective_from").first()
    if request.method == "POST":
        form = ModelPriceForm(request.POST, model=model, instance=price)
        if form.is_valid():
            try:
                saved = model_price_save(price=form.save(commit=False), actor=request.user)
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


@login_required
@require_GET
def focus_export(request):
    """The FOCUS CSV of the tenants the person may see (one with ?tenant=, else all of them)."""
    scope = page_scope(request)
    try:
        params = FocusExportParams.from_query(request.GET)
    except ApplicationError as error:
        return HttpResponseBadRequest(f"{error.message}\n", content_type="text/plain; charset=utf-8")
    if scope.tenant is not None:
        tenant_ids, account = [scope.tenant.pk], scope.tenant.slug
    else:
        tenant_ids, account = [t.pk for t in scope.choices], "all"
    rows = focus_rows(
        tenant_ids=tenant_ids,
        start=params.start,
        end=params.end,
        workflow=params.workflow,
        environment=params.environment,
    )
    response = StreamingHttpResponse(focus_csv(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{params.filename(account)}"'
    return response
