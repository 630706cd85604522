"""The attribution explorer: spend grouped by one or two dimensions, its figure, table and CSV."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from urllib.parse import urlencode

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from finops import charts
from finops.models import Environment
from finops.pricing import nanos_to_usd
from finops.selectors.dashboard import Series, day_start, utc_today
from finops.selectors.explore import EXPLORER_SORTS, Exploration, ExplorerRow, explore, explorer_options
from finops.selectors.overview import ENVIRONMENT_LABELS
from finops.selectors.spend import DIMENSIONS, TAG_PREFIX, UNKNOWN, SpendQuery
from finops.templatetags.money import tokens as humanize_tokens
from finops.templatetags.money import usd
from tenants.errors import ApplicationError
from tenants.scope import TenantScope
from tenants.scoping import tenant_page

from .layout import layout_context

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
    filters: dict[str, tuple[str, ...]] = {f: (v,) for f, v in form.filters.items()}
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

    def __init__(self, exploration: Exploration, scope: TenantScope):
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
            return Cell(name, name, sub=key, url=tenant_url(key))
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


def tenant_url(slug: str) -> str:
    return reverse("tenant_detail", args=[slug])


def _explorer_params(request, scope: TenantScope) -> dict[str, str]:
    """The explorer's parameters as given, for links that keep the view (sorting, CSV, switcher).
    An empty `by` stays: it means "no grouping", which differs from leaving it out (the default)."""
    params = {k: request.GET[k] for k in _EXPLORER_PARAMS if request.GET.get(k) or (k == "by" and k in request.GET)}
    params.update(scope.tenant_param())
    return params


def explorer_url(params: dict, **changes) -> str:
    merged = {k: v for k, v in {**params, **changes}.items() if v or k == "by"}
    return reverse("explore") + ("?" + urlencode(merged) if merged else "")


def _explorer_state(
    request, *, chart: bool = True
) -> tuple[TenantScope, ExplorerForm, SpendQuery | None, Exploration | None, str]:
    scope = request.scope
    form, query = _explorer_form(request.GET, timezone.now())
    exploration, error = None, ""
    if query is not None:
        try:
            exploration = explore(scope=scope, query=query, sort=form.sort, chart=chart)
        except ApplicationError as exc:
            error = exc.message
    return scope, form, query, exploration, error or " ".join(form.errors)


@tenant_page
def explorer(request):
    scope, form, query, exploration, error = _explorer_state(request)
    params = _explorer_params(request, scope)
    options = explorer_options(scope=scope)
    workflow_choices = list(options.workflows)
    if form.filters.get("workflow") and form.filters["workflow"] not in dict(workflow_choices):
        workflow_choices.append((form.filters["workflow"], form.filters["workflow"]))
    tag_dimensions = [(f"{TAG_PREFIX}{k}", f"Tag: {k}") for k in options.tag_keys]
    for dim in form.group_by:
        if dim.startswith(TAG_PREFIX) and dim not in dict(tag_dimensions):
            tag_dimensions.append((dim, f"Tag: {dim[len(TAG_PREFIX) :]}"))
    context = layout_context(request, scope)
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
    if exploration is not None and query is not None:  # an exploration always has its query
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
    return explorer_url(params, sort=target if target != "-cost" else ""), state


def _stack_colors(group_by: tuple[str, ...]) -> dict[str, str] | None:
    if not group_by:
        return None
    return {"environment": charts.ENVIRONMENT_COLORS, "tier": charts.TIER_COLORS}.get(group_by[0])


def _labelled_stacks(exploration: Exploration, scope: TenantScope):
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


@tenant_page
def explorer_export(request):
    scope, form, query, exploration, error = _explorer_state(request, chart=False)
    if exploration is None or query is None:  # an exploration always has its query
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
