"""Pages for people: the spend overview, the attribution explorer, tenant and workflow pages, and
the usage record list/detail.

Views resolve which tenants the signed-in person may see, parse the query string, call selectors
and render. A tenant the person may not see answers 404, exactly like an unknown slug. Every spend
figure comes from rollups (finops.selectors.overview); days are UTC calendar days.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from finops import charts
from finops.errors import ApplicationError
from finops.models import Environment, UsageRecord, Workflow
from finops.pricing import nanos_to_usd
from finops.selectors.overview import (
    ENVIRONMENT_LABELS,
    EXPLORER_SORTS,
    UNKNOWN,
    Exploration,
    ExplorerRow,
    Series,
    UsageCursor,
    UsageFilters,
    day_start,
    days_between,
    explore,
    explorer_options,
    overview_get,
    tenant_dashboard,
    usage_filter_suggestions,
    usage_record_get,
    usage_record_list,
    utc_today,
    workflow_dashboard,
    workflow_seen_by,
)
from finops.selectors.spend import DIMENSIONS, TAG_PREFIX, SpendQuery
from finops.templatetags.money import tokens as humanize_tokens
from finops.templatetags.money import usd
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

    @property
    def tenant_ids(self) -> list[int] | None:
        """What selectors take: one tenant, the member's tenants, or None for all (operators)."""
        if self.tenant is not None:
            return [self.tenant.pk]
        if self.is_operator:
            return None
        return [t.pk for t in self.choices]

    @property
    def tenant_names(self) -> dict[str, str]:
        return {t.slug: t.name for t in self.choices}


def _page_scope(request, *, slug: str | None = None) -> PageScope:
    """The visible tenants and the one the page is about: `slug` (a tenant page) or `?tenant=`."""
    user = request.user
    visible = tenants_for_user(user)
    choices = list(visible.order_by("name", "slug"))
    slug = slug if slug is not None else (request.GET.get("tenant") or "").strip()
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


# --- Overview -----------------------------------------------------------------------------------------


@login_required
def home(request):
    scope = _page_scope(request)
    overview = overview_get(
        tenant_ids=scope.tenant_ids, tenant_names=scope.tenant_names, with_tenants=scope.spans_several
    )
    context = _layout_context(request, scope)
    context["overview"] = overview
    if not overview.has_usage:
        context.update(
            has_usage=False,
            ingest_url=request.build_absolute_uri(reverse("api-usage")),
            has_tenants=bool(scope.choices),
        )
        return render(request, "finops/home.html", context)

    unpriced_calls = sum(m.unpriced_calls for m in overview.unpriced_models)
    context.update(
        has_usage=True,
        has_recent=overview.has_recent,
        unpriced_calls=unpriced_calls,
        unpriced_names=[m.key for m in overview.unpriced_models[:UNPRICED_NAMES_SHOWN]],
        unpriced_more=max(0, len(overview.unpriced_models) - UNPRICED_NAMES_SHOWN),
        unpriced_url=reverse("usage_list") + "?" + urlencode({"priced": "false", **_tenant_param(scope)}),
    )
    if overview.has_recent:
        context.update(
            chart=charts.figure_payload(
                charts.stacked_spend_figure(
                    overview.days, overview.daily_by_environment, colors=charts.ENVIRONMENT_COLORS
                )
            ),
            tier_split=_split(overview.tiers, charts.TIER_COLORS),
            environment_split=_split(overview.environments, charts.ENVIRONMENT_COLORS),
        )
    return render(request, "finops/home.html", context)


def _split(rows, fixed_colors) -> dict:
    """A breakdown drawn as a ring beside its table: rows paired with their colour, and the figure."""
    colors = charts.row_colors(rows, fixed_colors)
    priced = [(r, c) for r, c in zip(rows, colors, strict=True) if r.cost_nanos]
    figure = None
    if priced:
        figure = charts.figure_payload(charts.donut_figure([r for r, _ in priced], [c for _, c in priced]))
    return {"rows": list(zip(rows, colors, strict=True)), "figure": figure}


def _tenant_param(scope: PageScope) -> dict[str, str]:
    return {"tenant": scope.selected_slug} if scope.selected_slug else {}


# --- Attribution explorer -----------------------------------------------------------------------------

RANGE_PRESETS = (
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("90d", "Last 90 days"),
    ("mtd", "Month to date"),
    ("custom", "Custom dates"),
)
_PRESET_DAYS = {"7d": 7, "30d": 30, "90d": 90}
GRANULARITIES = (("hour", "Hour"), ("day", "Day"), ("month", "Month"))
DIMENSION_LABELS = {
    "tenant": "Tenant",
    "workflow": "Workflow",
    "model": "Model",
    "tier": "Model tier",
    "environment": "Environment",
}
EXPLORER_FILTERS = ("workflow", "model", "tier", "environment")
MAX_RANGE_DAYS = 400
_TAG_KEY_RE = re.compile(r"^[\w.:-]{1,64}$")
# Every parameter the explorer reads; the tenant switcher carries the others along.
_EXPLORER_PARAMS = ("by", "by2", "range", "start", "end", "granularity", *EXPLORER_FILTERS, "tag", "sort")


@dataclass
class ExplorerForm:
    """The explorer's controls as parsed from the query string, with what was wrong with them."""

    by: str = "workflow"
    by2: str = ""
    range: str = "30d"
    start: str = ""
    end: str = ""
    granularity: str = "day"
    filters: dict[str, str] = field(default_factory=dict)
    tag: str = ""
    sort: str = "-cost"
    errors: list[str] = field(default_factory=list)

    @property
    def group_by(self) -> tuple[str, ...]:
        return tuple(d for d in (self.by, self.by2) if d)


def dimension_label(dim: str) -> str:
    if dim.startswith(TAG_PREFIX):
        return f"Tag {dim[len(TAG_PREFIX) :]}"
    return DIMENSION_LABELS.get(dim, dim)


def _parse_dimension(value: str, form: ExplorerForm) -> str:
    value = value.strip()
    if not value or value in DIMENSIONS:
        return value
    if value.startswith(TAG_PREFIX) and _TAG_KEY_RE.match(value[len(TAG_PREFIX) :]):
        return value
    form.errors.append(f"“{value[:80]}” is not something spend can be grouped by.")
    return ""


_EARLIEST_DAY, _LATEST_DAY = date(2000, 1, 1), date(2999, 12, 31)


def _parse_day(value: str, name: str, form: ExplorerForm) -> date | None:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        form.errors.append(f"The {name} date “{value[:40]}” is not a date (use YYYY-MM-DD).")
        return None
    if not _EARLIEST_DAY <= day <= _LATEST_DAY:
        form.errors.append(f"The {name} date {day.isoformat()} is out of range.")
        return None
    return day


def _explorer_form(params, now: datetime) -> tuple[ExplorerForm, SpendQuery | None]:
    """Parse the explorer's query string. Returns the query to run, or None with `form.errors` set."""
    form = ExplorerForm()
    form.by = _parse_dimension(params.get("by", "workflow"), form)
    form.by2 = _parse_dimension(params.get("by2", ""), form)
    if not form.by and form.by2:
        form.by, form.by2 = form.by2, ""
    if form.by2 == form.by:
        form.by2 = ""
    form.range = params.get("range", "30d")
    form.start, form.end = params.get("start", "").strip(), params.get("end", "").strip()
    if form.start or form.end:
        form.range = "custom"  # dates typed in win over the preset still selected beside them
    if form.range not in dict(RANGE_PRESETS):
        form.errors.append("Pick a time range from the list.")
        form.range = "30d"
    form.granularity = params.get("granularity") or ("hour" if form.range == "24h" else "day")
    if form.granularity not in dict(GRANULARITIES):
        form.errors.append("Granularity is hour, day or month.")
        form.granularity = "day"
    form.filters = {f: params.get(f, "").strip() for f in EXPLORER_FILTERS if params.get(f, "").strip()}
    if form.filters.get("environment", "") not in ("", *Environment.values):
        form.errors.append(f"There is no environment “{form.filters['environment'][:40]}”.")
    form.tag = params.get("tag", "").strip()
    if any("\x00" in v for v in (*form.filters.values(), form.tag)):
        form.errors.append("A filter holds a NUL character, which no name contains.")
        form.filters, form.tag = (
            {k: v.replace("\x00", "") for k, v in form.filters.items()},
            form.tag.replace("\x00", ""),
        )
    if form.tag and ("=" not in form.tag or not form.tag.partition("=")[0]):
        form.errors.append("Filter on a tag as key=value, e.g. region=eu-west-1.")
    sort = params.get("sort", "-cost")
    form.sort = sort if sort.lstrip("-") in EXPLORER_SORTS else "-cost"

    today = utc_today(now)
    start = end = None
    if form.range == "custom":
        first = _parse_day(form.start, "start", form) if form.start else today - timedelta(days=29)
        last = _parse_day(form.end, "end", form) if form.end else today
        if first and last:
            if last < first:
                form.errors.append("The end date is before the start date.")
            elif (last - first).days >= MAX_RANGE_DAYS:
                form.errors.append(f"Pick at most {MAX_RANGE_DAYS} days at a time.")
            else:
                start, end = day_start(first), day_start(last + timedelta(days=1))
                form.start, form.end = first.isoformat(), last.isoformat()
    elif form.range == "24h" and form.granularity == "hour":
        end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        start = end - timedelta(hours=24)
    else:
        end = day_start(today + timedelta(days=1))
        if form.range == "mtd":
            start = day_start(today.replace(day=1))
        else:  # the last 24 hours at day grain: today and yesterday, whole days
            start = end - timedelta(days=_PRESET_DAYS.get(form.range, 2))
    if form.errors or start is None or end is None:
        return form, None
    filters = {f: (v,) for f, v in form.filters.items()}
    if form.tag:
        filters["tag"] = (form.tag,)
    return form, SpendQuery(start=start, end=end, granularity=form.granularity, group_by=form.group_by, filters=filters)


@dataclass(frozen=True, slots=True)
class Cell:
    """A table cell: what the page shows and the exact value the CSV (and `data-value`) holds."""

    display: str
    value: str
    sub: str = ""  # a second line (a slug under a name)
    url: str = ""
    muted: bool = False
    keyed: bool = False  # a tenant or workflow column: `sub` (the slug) is a CSV column of its own


def _share(share) -> str:
    pct = share * 100
    if 0 < pct < 0.1:
        return "<0.1%"
    return f"{pct:.1f}%"


@dataclass(frozen=True, slots=True)
class TableRow:
    cells: list[Cell]
    other: bool = False  # the row that sums the groups beyond the table's length


class ExplorerTable:
    """The rows and columns the explorer shows, built once for the page and for the CSV.

    Every cell carries the exact value the CSV holds (also the cell's `data-value` on the page); a
    tenant or workflow cell also its slug, which the CSV gives a column of its own.
    """

    def __init__(self, exploration: Exploration, scope: PageScope):
        self.result = exploration
        self.scope = scope
        self.dims = exploration.query.group_by
        self.label_columns = max(1, len(self.dims))  # without grouping, one column says "Total"
        self.show_unpriced = exploration.totals.unpriced_calls > 0

    @property
    def columns(self) -> list[tuple[str, str, bool]]:
        """(label, sort key, numeric) per column."""
        cols = [(dimension_label(d), "name" if i == 0 else "name2", False) for i, d in enumerate(self.dims)]
        cols = cols or [("", "", False)]
        cols.append(("Calls", "calls", True))
        if self.show_unpriced:
            cols.append(("Unpriced calls", "", True))
        cols += [
            ("Tokens", "tokens", True),
            ("Cost (USD)", "cost", True),
            ("Cost per call (USD)", "cost_per_call", True),
            ("Share of spend (%)", "share", True),
        ]
        return cols

    def csv_header(self) -> list[str]:
        header = []
        for i, (label, _, numeric) in enumerate(self.columns):
            header.append(label)
            if not numeric and i < len(self.dims) and self.dims[i] in ("tenant", "workflow"):
                header.append(f"{label} slug")
        return header

    def _dim_cell(self, dim: str, key: str) -> Cell:
        if key == UNKNOWN:
            none = {"workflow": "(no workflow)", "tier": "(no tier)"}.get(dim, "(none)")
            return Cell(none, none, muted=True)
        if dim == "tenant":
            name = self.scope.tenant_names.get(key, key)
            return Cell(name, name, sub=key, url=_tenant_url(key))
        if dim == "workflow":
            name = self.result.workflow_names.get(key, key)
            return Cell(name, name, sub=key, url=reverse("workflow_detail", args=[key]) + self.scope.query)
        if dim == "environment":
            return Cell(ENVIRONMENT_LABELS.get(key, key), key)
        return Cell(key, key)

    def _row(self, row: ExplorerRow, labels: list[Cell], *, other: bool = False) -> TableRow:
        keyed = [i < len(self.dims) and self.dims[i] in ("tenant", "workflow") for i in range(len(labels))]
        cells = [replace(cell, keyed=k) for cell, k in zip(labels, keyed, strict=True)]
        cells.append(Cell(f"{row.calls:,}", str(row.calls)))
        if self.show_unpriced:
            cells.append(Cell(f"{row.unpriced_calls:,}" if row.unpriced_calls else "—", str(row.unpriced_calls)))
        per_call = row.cost_per_call_nanos
        cells += [
            Cell(humanize_tokens(row.tokens), str(row.tokens)),
            Cell(usd(row.cost_nanos), nanos_to_usd(row.cost_nanos)),
            Cell(usd(per_call), nanos_to_usd(per_call) if per_call is not None else ""),
            Cell(_share(row.share), f"{row.share * 100:.2f}"),
        ]
        return TableRow(cells=cells, other=other)

    @cached_property
    def rows(self) -> list[TableRow]:
        out = [
            self._row(r, [self._dim_cell(d, k) for d, k in zip(self.dims, r.key, strict=True)])
            for r in self.result.rows
        ]
        if self.result.other is not None:
            label = f"Other ({self.result.other.folded:,} smaller groups)"
            blanks = [Cell("", "")] * (self.label_columns - 1)
            out.append(self._row(self.result.other, [Cell(label, label, muted=True), *blanks], other=True))
        return out

    @cached_property
    def totals(self) -> TableRow:
        t = self.result.totals
        row = ExplorerRow(
            key=(),
            calls=t.calls,
            tokens=t.tokens,
            cost_nanos=t.cost_nanos,
            unpriced_calls=t.unpriced_calls,
            share=Decimal(1) if t.cost_nanos else Decimal(0),
        )
        return self._row(row, [Cell("Total", "Total"), *[Cell("", "")] * (self.label_columns - 1)])

    def csv_rows(self) -> list[list[str]]:
        def flat(row: TableRow) -> list[str]:
            out = []
            for cell in row.cells:
                out.append(cell.value)
                if cell.keyed:
                    out.append(cell.sub)
            return out

        return [flat(r) for r in self.rows] + [flat(self.totals)]


def _tenant_url(slug: str) -> str:
    return reverse("tenant_detail", args=[slug])


def _explorer_params(request, scope: PageScope) -> dict[str, str]:
    """The explorer's parameters as given, for links that keep the view (sorting, CSV, switcher).
    An empty `by` stays: it means "no grouping", which differs from leaving it out (the default)."""
    params = {k: request.GET[k] for k in _EXPLORER_PARAMS if request.GET.get(k) or (k == "by" and k in request.GET)}
    params.update(_tenant_param(scope))
    return params


def _explorer_url(params: dict, **changes) -> str:
    merged = {k: v for k, v in {**params, **changes}.items() if v or k == "by"}
    return reverse("explore") + ("?" + urlencode(merged) if merged else "")


def _explorer_state(request) -> tuple[PageScope, ExplorerForm, SpendQuery | None, Exploration | None, str]:
    scope = _page_scope(request)
    form, query = _explorer_form(request.GET, timezone.now())
    exploration, error = None, ""
    if query is not None:
        try:
            exploration = explore(tenant_ids=scope.tenant_ids, query=query, sort=form.sort)
        except ApplicationError as exc:
            error = exc.message
    return scope, form, query, exploration, error or " ".join(form.errors)


@login_required
def explorer(request):
    scope, form, query, exploration, error = _explorer_state(request)
    params = _explorer_params(request, scope)
    options = explorer_options(tenant_ids=scope.tenant_ids)
    workflow_choices = list(options.workflows)
    if form.filters.get("workflow") and form.filters["workflow"] not in dict(workflow_choices):
        workflow_choices.append((form.filters["workflow"], form.filters["workflow"]))
    tag_dimensions = [(f"{TAG_PREFIX}{k}", f"Tag: {k}") for k in options.tag_keys]
    for dim in form.group_by:
        if dim.startswith(TAG_PREFIX) and dim not in dict(tag_dimensions):
            tag_dimensions.append((dim, f"Tag: {dim[len(TAG_PREFIX) :]}"))
    context = _layout_context(request, scope)
    context.update(
        form=form,
        error=error,
        options=options,
        workflow_choices=workflow_choices,
        tag_dimensions=tag_dimensions,
        range_presets=RANGE_PRESETS,
        granularities=GRANULARITIES,
        dimensions=list(DIMENSION_LABELS.items()),
        environments=[(v, ENVIRONMENT_LABELS[v]) for v in Environment.values],
        switcher_keep=[(k, v) for k, v in params.items() if k != "tenant"],
        exploration=exploration,
    )
    if exploration is not None:
        table = ExplorerTable(exploration, scope)
        last_day = (query.end - timedelta(microseconds=1)).astimezone(UTC)
        context.update(
            table=table,
            columns=[
                (label, key, numeric, _sort_link(params, key, form.sort)) for label, key, numeric in table.columns
            ],
            range_first=query.start,
            range_last=last_day,
            csv_url=reverse("explore_export") + ("?" + urlencode(params) if params else ""),
            group_count=len(exploration.rows) + (exploration.other.folded if exploration.other else 0),
            chart=(
                charts.figure_payload(
                    charts.stacked_spend_figure(
                        exploration.buckets,
                        _labelled_stacks(exploration, scope),
                        granularity=query.granularity,
                        colors=_stack_colors(query.group_by),
                        height=340,
                    )
                )
                if exploration.totals.calls
                else None
            ),
            stack_label=dimension_label(query.group_by[0]) if query.group_by else "",
        )
    return render(request, "finops/explore.html", context, status=400 if error else 200)


def _sort_link(params: dict, key: str, current: str) -> tuple[str, str]:
    """(url, state) of a sortable column header; names sort ascending first, numbers descending."""
    if not key:
        return "", ""
    active = current.lstrip("-") == key
    descending = current.startswith("-")
    if active:
        target = key if descending else f"-{key}"
    else:
        target = key if key.startswith("name") else f"-{key}"
    state = ("descending" if descending else "ascending") if active else ""
    return _explorer_url(params, sort=target if target != "-cost" else ""), state


def _stack_colors(group_by: tuple[str, ...]) -> dict[str, str] | None:
    if not group_by:
        return None
    return {"environment": charts.ENVIRONMENT_COLORS, "tier": charts.TIER_COLORS}.get(group_by[0])


def _labelled_stacks(exploration: Exploration, scope: PageScope):
    dim = exploration.query.group_by[0] if exploration.query.group_by else ""
    labels = {
        "tenant": scope.tenant_names,
        "workflow": exploration.workflow_names,
        "environment": ENVIRONMENT_LABELS,
    }.get(dim, {})
    out = []
    for s in exploration.stacks:
        name = s.name
        if s.key == UNKNOWN:
            name = "(none)"
        elif s.key:
            name = labels.get(s.key, s.key)
        elif not dim:
            name = "Spend"
        out.append(Series(name=name, values=s.values, key=s.key))
    return out


@login_required
def explorer_export(request):
    scope, form, query, exploration, error = _explorer_state(request)
    if exploration is None:
        return HttpResponse(error + "\n", status=400, content_type="text/plain; charset=utf-8")
    table = ExplorerTable(exploration, scope)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.csv_header())
    writer.writerows(table.csv_rows())
    last = (query.end - timedelta(microseconds=1)).astimezone(UTC)
    who = scope.tenant.slug if scope.tenant else ("all-tenants" if scope.is_operator else "my-tenants")
    by = "-".join(d.replace(TAG_PREFIX, "tag-") for d in query.group_by) or "total"
    name = f"spend-{who}-by-{by}-{query.start:%Y%m%d}-{last:%Y%m%d}.csv"
    return HttpResponse(
        out.getvalue(),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# --- Tenant and workflow pages ------------------------------------------------------------------------

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


@login_required
def tenant_detail(request, slug: str):
    switch_to = request.GET.get("tenant")
    if switch_to is not None and switch_to != slug:
        # The layout's tenant switcher submits here: go to the chosen tenant's page, or the overview.
        return redirect(_tenant_url(switch_to) if switch_to else reverse("home"))
    scope = _page_scope(request, slug=slug)
    tenant = scope.tenant
    n, days = _detail_days(request)
    dash = tenant_dashboard(tenant=tenant, days=days)
    context = _layout_context(request, scope)
    context.update(
        tenant=tenant,
        dash=dash,
        days_n=n,
        day_choices=DETAIL_DAYS,
        explore_url=_explorer_url({"tenant": tenant.slug, "by": "workflow", "by2": "model"}),
        **_detail_figures(dash),
    )
    return render(request, "finops/tenant_detail.html", context)


@login_required
def workflow_detail(request, slug: str):
    scope = _page_scope(request)
    workflow = Workflow.objects.select_related("default_tier").filter(slug=slug).first()
    if workflow is None or not workflow_seen_by(workflow=workflow, tenant_ids=scope.tenant_ids):
        raise Http404("No such workflow.")
    n, days = _detail_days(request)
    dash = workflow_dashboard(
        tenant_ids=scope.tenant_ids,
        workflow=workflow,
        days=days,
        tenant_names=scope.tenant_names,
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
    context = _layout_context(request, scope)
    context.update(
        workflow=workflow,
        dash=dash,
        days_n=n,
        day_choices=DETAIL_DAYS,
        has_envelope=envelope,
        explore_url=_explorer_url({**_tenant_param(scope), "workflow": workflow.slug, "by": "model"}),
        **figures,
    )
    return render(request, "finops/workflow_detail.html", context)


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
