"""The attribution explorer: spend grouped by one or two dimensions, its figure, table and CSV."""

from __future__ import annotations

import io
from datetime import UTC, timedelta
from urllib.parse import urlencode

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from finops import charts
from finops.models import Environment
from finops.selectors.dashboard import Series
from finops.selectors.explore import Exploration, explore, explorer_options
from finops.selectors.overview import ENVIRONMENT_LABELS
from finops.selectors.spend import TAG_PREFIX, UNKNOWN, SpendQuery
from tenants.csv_safe import csv_writer
from tenants.errors import ApplicationError
from tenants.scope import TenantScope
from tenants.scoping import tenant_page

from .explore_form import (
    DIMENSION_LABELS,
    EXPLORER_PARAMS,
    GRANULARITIES,
    RANGE_PRESETS,
    ExplorerForm,
    dimension_label,
    explorer_form_parse,
)
from .explore_table import ExplorerTable, tenant_url
from .layout import layout_context

__all__ = ["explorer", "explorer_export", "explorer_url", "tenant_url"]


def _explorer_params(request, scope: TenantScope) -> dict[str, str]:
    """The explorer's parameters as given, for links that keep the view (sorting, CSV, switcher).
    An empty `by` stays: it means "no grouping", which differs from leaving it out (the default)."""
    params = {k: request.GET[k] for k in EXPLORER_PARAMS if request.GET.get(k) or (k == "by" and k in request.GET)}
    params.update(scope.tenant_param())
    return params


def explorer_url(params: dict, **changes) -> str:
    merged = {k: v for k, v in {**params, **changes}.items() if v or k == "by"}
    return reverse("explore") + ("?" + urlencode(merged) if merged else "")


def _explorer_state(
    request, *, chart: bool = True
) -> tuple[TenantScope, ExplorerForm, SpendQuery | None, Exploration | None, str]:
    scope = request.scope
    form, query = explorer_form_parse(request.GET, timezone.now())
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
    writer = csv_writer(out, lineterminator="\n")
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
