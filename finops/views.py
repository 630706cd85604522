"""Pages for people: the spend overview and the usage record list/detail.

Views resolve which tenants the signed-in person may see, parse the query string, call selectors
and render. A tenant the person may not see answers 404, exactly like an unknown slug.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404
from django.shortcuts import render
from django.urls import reverse

from finops.charts import daily_spend_figure, figure_payload
from finops.models import Environment, UsageRecord
from finops.selectors.overview import (
    OverviewPeriods,
    UnpricedSummary,
    UsageCursor,
    UsageFilters,
    daily_spend,
    spend_by_environment,
    spend_totals,
    top_models,
    top_tenants,
    top_workflows,
    unpriced_summary,
    usage_exists,
    usage_filter_suggestions,
    usage_record_get,
    usage_record_list,
)
from tenants.models import Tenant
from tenants.scoping import tenants_for_user

USAGE_PAGE_SIZE = 50
UNPRICED_NAMES_SHOWN = 5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PageScope:
    """The tenants a page reads, and what the tenant switcher in the layout shows."""

    visible: QuerySet[Tenant]
    tenant: Tenant | None  # the one tenant the page is about, if it is about one
    selected_slug: str  # the `tenant` query parameter, when one was given (and is visible)
    choices: list[Tenant]  # every visible tenant, for the switcher
    is_operator: bool

    @property
    def tenants(self) -> Tenant | QuerySet[Tenant]:
        return self.tenant if self.tenant is not None else self.visible

    @property
    def spans_several(self) -> bool:
        return self.tenant is None and len(self.choices) != 1

    @property
    def show_switcher(self) -> bool:
        return len(self.choices) > 1

    @property
    def query(self) -> str:
        """The query string that keeps the current tenant selection on links to other pages."""
        return f"?tenant={self.selected_slug}" if self.selected_slug else ""


def _page_scope(request) -> PageScope:
    user = request.user
    visible = tenants_for_user(user)
    choices = list(visible.order_by("name", "slug"))
    slug = (request.GET.get("tenant") or "").strip()
    if slug:
        tenant = next((t for t in choices if t.slug == slug), None)
        if tenant is None:
            raise Http404("No such tenant.")
    else:
        # A member of exactly one tenant is always about that tenant; operators and members of
        # several see everything they may see until they pick one.
        tenant = choices[0] if len(choices) == 1 and not user.is_staff else None
    return PageScope(visible=visible, tenant=tenant, selected_slug=slug, choices=choices, is_operator=user.is_staff)


def _layout_context(request, scope: PageScope, *, switcher_action: str | None = None) -> dict:
    return {"scope": scope, "switcher_action": switcher_action or request.path}


@login_required
def home(request):
    scope = _page_scope(request)
    periods = OverviewPeriods.ending_today()
    month = periods.last_30_days
    totals = spend_totals(tenants=scope.tenants, periods=periods.as_dict())
    context = _layout_context(request, scope)
    context.update(
        periods=periods,
        totals=totals,
        cards=[
            {"label": "Today", "totals": totals["today"], "since": periods.today.start},
            {"label": "Last 7 days", "totals": totals["last_7_days"], "since": periods.last_7_days.start},
            {"label": "Last 30 days", "totals": totals["last_30_days"], "since": periods.last_30_days.start},
        ],
    )

    if totals["last_30_days"].calls == 0 and not usage_exists(tenants=scope.tenants):
        context.update(
            has_usage=False,
            ingest_url=request.build_absolute_uri(reverse("api-usage")),
            has_tenants=bool(scope.choices),
        )
        return render(request, "finops/home.html", context)

    unpriced = (
        unpriced_summary(tenants=scope.tenants, period=month)
        if totals["last_30_days"].unpriced_calls
        else UnpricedSummary()
    )
    has_recent = totals["last_30_days"].calls > 0
    context.update(
        has_usage=True,
        has_recent=has_recent,
        chart=(
            figure_payload(daily_spend_figure(daily_spend(tenants=scope.tenants, period=month), periods.days))
            if has_recent
            else None
        ),
        workflows=top_workflows(tenants=scope.tenants, period=month) if has_recent else [],
        models=top_models(tenants=scope.tenants, period=month) if has_recent else [],
        tenant_rows=(top_tenants(tenants=scope.tenants, period=month) if has_recent and scope.spans_several else []),
        environments=spend_by_environment(tenants=scope.tenants, period=month) if has_recent else [],
        unpriced=unpriced,
        unpriced_names=unpriced.model_names[:UNPRICED_NAMES_SHOWN],
        unpriced_more=max(0, len(unpriced.model_names) - UNPRICED_NAMES_SHOWN),
    )
    return render(request, "finops/home.html", context)


# --- Usage records ----------------------------------------------------------------------------------


def _encode_cursor(cursor: UsageCursor | None) -> str | None:
    if cursor is None:
        return None
    micros = (cursor.occurred_at - _EPOCH) // timedelta(microseconds=1)
    return f"{'n' if cursor.direction == 'newer' else 'o'}{micros}-{cursor.id}"


def _decode_cursor(raw: str) -> UsageCursor | None:
    """Cursors look like `o1735689600123456-42` (older than) or `n...` (newer than); junk means page one."""
    if len(raw) < 4 or raw[0] not in "on":
        return None
    micros, _, record_id = raw[1:].partition("-")
    if not (micros.isdigit() and record_id.isdigit()):
        return None
    try:
        occurred_at = _EPOCH + timedelta(microseconds=int(micros))
    except OverflowError:
        return None
    return UsageCursor(occurred_at=occurred_at, id=int(record_id), direction="newer" if raw[0] == "n" else "older")


def _usage_filters(params) -> UsageFilters:
    environment = params.get("environment", "")
    priced = {"true": True, "false": False}.get(params.get("priced", "").lower())
    return UsageFilters(
        workflow=params.get("workflow", "").strip(),
        model=params.get("model", "").strip(),
        environment=environment if environment in Environment.values else "",
        priced=priced,
    )


@login_required
def usage_list(request):
    scope = _page_scope(request)
    filters = _usage_filters(request.GET)
    cursor = _decode_cursor(request.GET.get("cursor", ""))
    page = usage_record_list(tenants=scope.tenants, filters=filters, cursor=cursor, page_size=USAGE_PAGE_SIZE)
    context = _layout_context(request, scope)
    context.update(
        page=page,
        filters=filters,
        is_filtered=filters != UsageFilters(),
        newer_cursor=_encode_cursor(page.newer_cursor),
        older_cursor=_encode_cursor(page.older_cursor),
        environments=Environment.choices,
        suggestions=usage_filter_suggestions(),
    )
    return render(request, "finops/usage_list.html", context)


@login_required
def usage_detail(request, record_id: int):
    scope = _page_scope(request)
    record: UsageRecord | None = usage_record_get(tenants=scope.tenants, record_id=record_id)
    if record is None:
        raise Http404("No such usage record.")
    context = _layout_context(request, scope, switcher_action=reverse("usage_list"))
    context.update(record=record, total_tokens=_total_tokens(record))
    return render(request, "finops/usage_detail.html", context)


def _total_tokens(record: UsageRecord) -> int:
    return (
        record.input_tokens
        + record.cached_input_tokens
        + record.cache_write_tokens
        + record.output_tokens
        + record.reasoning_tokens
    )
