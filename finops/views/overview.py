"""The spend overview: today, this week and month to date, with the top tenants, workflows and models."""

from __future__ import annotations

from urllib.parse import urlencode

from django.shortcuts import render
from django.urls import reverse

from finops import charts
from finops.selectors.overview import (
    overview_get,
)
from tenants.csv_safe import csv_download, wants_csv
from tenants.scoping import tenant_page

from .csv_tables import SPEND_COLUMNS, spend_rows
from .layout import layout_context
from .variance import variance_context

UNPRICED_NAMES_SHOWN = 5
# The overview's lists that download as CSV (`?format=csv&table=...`): the last 30 days, as shown.
OVERVIEW_TABLES = ("tenants", "workflows", "models", "tiers", "environments")


@tenant_page
def home(request):
    scope = request.scope
    overview = overview_get(scope=scope, with_tenants=scope.spans_several)
    table = request.GET.get("table", "")
    if wants_csv(request) and table in OVERVIEW_TABLES:
        rows = spend_rows(getattr(overview, table))
        return csv_download(name=f"overview-{table}", scope=scope, header=SPEND_COLUMNS, rows=rows)
    context = layout_context(request, scope)
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
        unpriced_url=reverse("usage_list") + "?" + urlencode({"priced": "false", **scope.tenant_param()}),
        **variance_context(scope),
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
