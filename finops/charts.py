"""Plotly figures for the spend pages, built on the server and rendered by the local Plotly bundle.

Money arrives as integer nano-USD; it becomes a float only here, at the figure boundary, because
Plotly plots floats. Totals shown as text on the pages never come from these numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date
from typing import Any

import plotly.graph_objects as go

from finops.models import Environment
from finops.pricing import NANOS_PER_USD, nanos_to_decimal
from finops.selectors.overview import DailySpend

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "displayModeBar": False}
FONT_FAMILY = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'

# Production first and darkest: it is where the money goes; the other environments stack on top.
ENVIRONMENT_COLORS = {
    Environment.PROD: "#2563eb",
    Environment.STAGE: "#93c5fd",
    Environment.DEV: "#cbd5e1",
}


def _usd_float(nanos: int) -> float:
    return float(nanos_to_decimal(nanos))


def daily_spend_figure(rows: Iterable[DailySpend], days: list[date]) -> go.Figure:
    """Stacked daily bars per environment over `days` (every day gets a bar slot, empty days too)."""
    by_env: dict[str, dict[date, DailySpend]] = {}
    for row in rows:
        by_env.setdefault(row.environment, {})[row.day] = row

    fig = go.Figure()
    environments = [env for env in ENVIRONMENT_COLORS if env in by_env] + sorted(
        env for env in by_env if env not in ENVIRONMENT_COLORS
    )
    labels = dict(Environment.choices)
    for env in environments:
        per_day = by_env[env]
        fig.add_trace(
            go.Bar(
                name=labels.get(env, env),
                x=[d.isoformat() for d in days],
                y=[_usd_float(per_day[d].cost_nanos) if d in per_day else 0.0 for d in days],
                customdata=[per_day[d].calls if d in per_day else 0 for d in days],
                marker_color=ENVIRONMENT_COLORS.get(env, "#94a3b8"),
                hovertemplate="$%{y:,.4f} · %{customdata:,} calls",
            )
        )
    fig.update_layout(
        barmode="stack",
        height=300,
        margin={"l": 56, "r": 16, "t": 8, "b": 36},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        font={"family": FONT_FAMILY, "size": 12, "color": "#334155"},
        legend={
            "orientation": "h",
            "yanchor": "bottom",
            "y": 1.0,
            "xanchor": "right",
            "x": 1.0,
            "traceorder": "normal",
        },
        hovermode="x unified",
        hoverlabel={"font": {"family": FONT_FAMILY}},
        bargap=0.25,
        showlegend=len(environments) > 1,
    )
    fig.update_xaxes(
        type="date", tickformat="%d %b", hoverformat="%a %d %b %Y", showgrid=False, linecolor="#cbd5e1", fixedrange=True
    )
    daily_totals: dict[date, int] = {}
    for per_day in by_env.values():
        for d, row in per_day.items():
            daily_totals[d] = daily_totals.get(d, 0) + row.cost_nanos
    fig.update_yaxes(
        tickprefix="$",
        # Cents are enough once a day costs dollars; below that, significant digits keep ticks apart.
        tickformat=",.2~f" if max(daily_totals.values(), default=0) >= NANOS_PER_USD else ".3~g",
        gridcolor="#e2e8f0",
        zeroline=False,
        rangemode="tozero",
        fixedrange=True,
    )
    return fig


def figure_payload(fig: go.Figure) -> dict[str, Any]:
    """What the page embeds (via `json_script`): the figure as Plotly serialises it, plus the config."""
    return {"figure": json.loads(fig.to_json()), "config": PLOTLY_CONFIG}
