"""Plotly figures for the spend pages, built on the server and rendered by the local Plotly bundle.

Money arrives as integer nano-USD; it becomes a float only here, at the figure boundary, because
Plotly plots floats. Totals shown as text on the pages never come from these numbers.

Figures are built as the JSON Plotly.js reads ({"data": [...], "layout": {...}}), not through
plotly.graph_objects: those validate every property on every assignment, which cost the overview
about as much time as all its queries. Tests load each figure into `go.Figure` to check it against
Plotly's schema instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

from finops.measures import TOKEN_BUCKETS
from finops.pricing import NANOS_PER_USD, nanos_to_decimal
from finops.selectors.dashboard import OTHER, Series, SpendRow
from finops.selectors.details import DayProfile

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "displayModeBar": False}
FONT_FAMILY = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'

# Categorical colours, distinguishable side by side and for common colour-vision deficiencies;
# "Other" is always the same quiet grey.
PALETTE = (
    "#2563eb",
    "#f59e0b",
    "#10b981",
    "#8b5cf6",
    "#ef4444",
    "#06b6d4",
    "#ec4899",
    "#84cc16",
    "#6366f1",
    "#f97316",
)
OTHER_COLOR = "#cbd5e1"
# Production first and darkest: it is where the money goes; the other environments stack on top.
ENVIRONMENT_COLORS = {"prod": "#2563eb", "stage": "#93c5fd", "dev": "#cbd5e1"}
TIER_COLORS = {"premium": "#7c3aed", "standard": "#2563eb", "economy": "#10b981"}
TOKEN_COLORS = {
    "input_tokens": "#2563eb",
    "cached_input_tokens": "#93c5fd",
    "cache_write_tokens": "#a78bfa",
    "output_tokens": "#f59e0b",
    "reasoning_tokens": "#ef4444",
}
ENVELOPE_BAND = "rgba(16, 185, 129, 0.14)"
ENVELOPE_LINE = "#059669"
BARS_UP_TO = 62  # more buckets than this read better as stacked areas


class Figure:
    """The few figure operations the pages use, on plain dicts (same names as plotly's Figure)."""

    def __init__(self, *traces: dict[str, Any]):
        self.data: list[dict[str, Any]] = list(traces)
        self.layout: dict[str, Any] = {}

    def add_trace(self, trace: dict[str, Any]) -> None:
        self.data.append(trace)

    def update_layout(self, **props: Any) -> None:
        _merge(self.layout, props)

    def update_xaxes(self, **props: Any) -> None:
        _merge(self.layout.setdefault("xaxis", {}), props)

    def update_yaxes(self, **props: Any) -> None:
        _merge(self.layout.setdefault("yaxis", {}), props)

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "layout": self.layout}


def _merge(target: dict[str, Any], props: dict[str, Any]) -> None:
    for key, value in props.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _trace(kind: str, **props: Any) -> dict[str, Any]:
    return {"type": kind, **props}


def _usd_float(nanos: int) -> float:
    return float(nanos_to_decimal(nanos))


def series_colors(series: Sequence[Series], fixed: dict[str, str] | None = None) -> list[str]:
    """The colour of each series: a fixed one by key when given, else the palette in order."""
    colors, i = [], 0
    for s in series:
        if s.name == OTHER and not s.key:
            colors.append(OTHER_COLOR)
        elif fixed and s.key in fixed:
            colors.append(fixed[s.key])
        else:
            colors.append(PALETTE[i % len(PALETTE)])
            i += 1
    return colors


def _layout(fig: Figure, *, height: int, legend: bool, hovermode: str | bool = "x unified") -> None:
    fig.update_layout(
        height=height,
        margin={"l": 60, "r": 16, "t": 8 if not legend else 28, "b": 36},
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
        hovermode=hovermode,
        hoverlabel={"font": {"family": FONT_FAMILY}},
        showlegend=legend,
    )


def _time_axis(fig: Figure, granularity: str) -> None:
    tickformat, hoverformat = {
        "hour": ("%H:%M\n%d %b", "%a %d %b %Y %H:%M UTC"),
        "day": ("%d %b", "%a %d %b %Y"),
        "month": ("%b %Y", "%B %Y"),
    }[granularity]
    fig.update_xaxes(
        type="date",
        tickformat=tickformat,
        hoverformat=hoverformat,
        showgrid=False,
        linecolor="#cbd5e1",
        fixedrange=True,
    )


def _day_range(fig: Figure, profile: Sequence[DayProfile]) -> None:
    """Lines span the same days as the bars beside them: half a day of margin on each side."""
    if profile:
        first = datetime.combine(profile[0].day, time.min) - timedelta(hours=12)
        last = datetime.combine(profile[-1].day, time.min) + timedelta(hours=12)
        fig.update_xaxes(range=[first.isoformat(), last.isoformat()])


def _money_axis(fig: Figure, largest_nanos: int) -> None:
    fig.update_yaxes(
        tickprefix="$",
        # Cents are enough once a bar costs dollars; below that, significant digits keep ticks apart.
        tickformat=",.2~f" if largest_nanos >= NANOS_PER_USD else ".3~g",
        gridcolor="#e2e8f0",
        zeroline=False,
        rangemode="tozero",
        fixedrange=True,
    )


def _count_axis(fig: Figure, **extra: Any) -> None:
    fig.update_yaxes(tickformat="~s", gridcolor="#e2e8f0", zeroline=False, rangemode="tozero", fixedrange=True, **extra)


def _x(buckets: Sequence[date | datetime]) -> list[str]:
    return [b.isoformat() for b in buckets]


def stacked_spend_figure(
    buckets: Sequence[date | datetime],
    series: Sequence[Series],
    *,
    granularity: str = "day",
    colors: dict[str, str] | None = None,
    height: int = 300,
) -> Figure:
    """Cost per bucket stacked by series: bars for short ranges, areas for long ones."""
    fig = Figure()
    x = _x(buckets)
    as_bars = len(buckets) <= BARS_UP_TO
    hover = "%{fullData.name}: $%{y:,.2f}" if granularity != "hour" else "%{fullData.name}: $%{y:,.4f}"
    for s, color in zip(series, series_colors(series, colors), strict=True):
        y = [_usd_float(v) for v in s.values]
        if as_bars:
            fig.add_trace(
                _trace("bar", name=s.name, x=x, y=y, marker={"color": color}, hovertemplate=hover + "<extra></extra>")
            )
        else:
            fig.add_trace(
                _trace(
                    "scatter",
                    name=s.name,
                    x=x,
                    y=y,
                    mode="lines",
                    stackgroup="spend",
                    line={"width": 0.5, "color": color},
                    fillcolor=color,
                    hovertemplate=hover + "<extra></extra>",
                )
            )
    _layout(fig, height=height, legend=len(series) > 1)
    fig.update_layout(barmode="stack", bargap=0.2 if len(buckets) > 10 else 0.45)
    _time_axis(fig, granularity)
    per_bucket = [sum(s.values[i] for s in series) for i in range(len(buckets))]
    _money_axis(fig, max(per_bucket, default=0))
    return fig


def row_colors(rows: Sequence[SpendRow], fixed: dict[str, str] | None = None) -> list[str]:
    """A colour per breakdown row: fixed by key when known, else the palette in order."""
    palette = iter(PALETTE * 10)
    return [(fixed or {}).get(r.key) or (OTHER_COLOR if r.is_none else next(palette)) for r in rows]


def donut_figure(rows: Sequence[SpendRow], colors: Sequence[str], *, height: int = 200) -> Figure:
    """Share of cost per row as a ring; the table beside it is the legend."""
    fig = Figure(
        _trace(
            "pie",
            labels=[r.label for r in rows],
            values=[_usd_float(r.cost_nanos) for r in rows],
            hole=0.62,
            sort=False,
            direction="clockwise",
            marker={"colors": list(colors), "line": {"color": "#ffffff", "width": 2}},
            textinfo="none",
            hovertemplate="%{label}: $%{value:,.2f} (%{percent})<extra></extra>",
        )
    )
    _layout(fig, height=height, legend=False, hovermode="closest")
    fig.update_layout(margin={"l": 4, "r": 4, "t": 4, "b": 4})
    return fig


def token_mix_figure(profile: Sequence[DayProfile], *, height: int = 280) -> Figure:
    """Tokens per day stacked by bucket (input, cached input, cache write, output, reasoning)."""
    fig = Figure()
    x = _x([p.day for p in profile])
    for field_name, label in TOKEN_BUCKETS:
        values = [getattr(p, field_name) for p in profile]
        if not any(values):
            continue
        fig.add_trace(
            _trace(
                "bar",
                name=label,
                x=x,
                y=values,
                marker={"color": TOKEN_COLORS[field_name]},
                hovertemplate=f"{label}: %{{y:,}}<extra></extra>",
            )
        )
    _layout(fig, height=height, legend=True)
    fig.update_layout(barmode="stack", bargap=0.2)
    _time_axis(fig, "day")
    _count_axis(fig)
    return fig


def cost_per_call_figure(profile: Sequence[DayProfile], *, height: int = 240) -> Figure:
    """Average cost of a priced call per day; days without priced calls leave a gap."""
    values = [p.cost_per_call_nanos for p in profile]
    fig = Figure(
        _trace(
            "scatter",
            name="Cost per call",
            x=_x([p.day for p in profile]),
            y=[_usd_float(v) if v is not None else None for v in values],
            mode="lines+markers",
            line={"color": "#2563eb", "width": 2},
            marker={"size": 4},
            connectgaps=False,
            hovertemplate="$%{y:,.5f} per call<extra></extra>",
        )
    )
    _layout(fig, height=height, legend=False)
    _time_axis(fig, "day")
    _day_range(fig, profile)
    _money_axis(fig, max((v for v in values if v is not None), default=0))
    fig.update_yaxes(tickformat="$.3~g", tickprefix="")
    return fig


def calls_figure(profile: Sequence[DayProfile], *, expected_per_tenant: int | None, height: int = 260) -> Figure:
    """Calls per day as bars; with an envelope, the expected calls (per tenant using it that day) as a line."""
    x = _x([p.day for p in profile])
    fig = Figure(
        _trace(
            "bar",
            name="Calls",
            x=x,
            y=[p.calls for p in profile],
            marker={"color": "#93c5fd"},
            hovertemplate="%{y:,} calls<extra></extra>",
        )
    )
    if expected_per_tenant:
        fig.add_trace(
            _trace(
                "scatter",
                name="Expected",
                x=x,
                y=[expected_per_tenant * p.tenants if p.tenants else None for p in profile],
                mode="lines",
                line={"color": ENVELOPE_LINE, "width": 2, "dash": "dash", "shape": "hv"},
                hovertemplate="expected %{y:,}<extra></extra>",
            )
        )
    _layout(fig, height=height, legend=bool(expected_per_tenant))
    fig.update_layout(bargap=0.2)
    _time_axis(fig, "day")
    _count_axis(fig)
    return fig


def per_call_envelope_figure(
    profile: Sequence[DayProfile],
    *,
    measure: str,
    p50: int | None,
    p95: int | None,
    color: str,
    height: int = 240,
) -> Figure:
    """Mean tokens per call each day against the envelope: the p50-p95 band and both lines."""
    x = _x([p.day for p in profile])
    values = [getattr(p, measure) / p.calls if p.calls else None for p in profile]
    fig = Figure()
    if p50 is not None and p95 is not None:
        fig.add_trace(
            _trace(
                "scatter", x=x, y=[p95] * len(x), mode="lines", line={"width": 0}, hoverinfo="skip", showlegend=False
            )
        )
        fig.add_trace(
            _trace(
                "scatter",
                name="Envelope p50–p95",
                x=x,
                y=[p50] * len(x),
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor=ENVELOPE_BAND,
                hoverinfo="skip",
            )
        )
    for value, label, dash in ((p50, "p50", "dot"), (p95, "p95", "dash")):
        if value is not None:
            fig.add_trace(
                _trace(
                    "scatter",
                    name=f"Expected {label}",
                    x=x,
                    y=[value] * len(x),
                    mode="lines",
                    line={"color": ENVELOPE_LINE, "width": 1.5, "dash": dash},
                    hovertemplate=f"expected {label}: %{{y:,}}<extra></extra>",
                )
            )
    fig.add_trace(
        _trace(
            "scatter",
            name="Mean per call",
            x=x,
            y=values,
            mode="lines+markers",
            line={"color": color, "width": 2},
            marker={"size": 4},
            hovertemplate="%{y:,.0f} per call<extra></extra>",
        )
    )
    _layout(fig, height=height, legend=True)
    _time_axis(fig, "day")
    _day_range(fig, profile)
    _count_axis(fig)
    return fig


def figure_payload(fig: Figure) -> dict[str, Any]:
    """What the page embeds (via `json_script`): the figure and the config Plotly.js is given."""
    return {"figure": fig.to_dict(), "config": PLOTLY_CONFIG}
