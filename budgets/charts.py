"""The burn-down figure of the budget page, built on the server like the spend figures (finops/charts.py).

Times are drawn in the budget's own time zone, where its periods start at midnight, as naive local
ISO strings (Plotly does not convert zones). Amounts become floats only here, at the figure boundary.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from budgets.selectors import Burn, BurnPoint
from finops.charts import Figure, _count_axis, _layout, _money_axis, _time_axis, _trace, _usd_float

ACTUAL_COLOR = "#2563eb"
ACTUAL_FILL = "rgba(37, 99, 235, 0.10)"
SOFT_COLOR = "#d97706"
HARD_COLOR = "#dc2626"
FORECAST_COLOR = "#64748b"


def _local(at: datetime, tz: ZoneInfo) -> str:
    return at.astimezone(tz).replace(tzinfo=None).isoformat(timespec="minutes")


def burn_down_figure(burn: Burn, points: list[BurnPoint], *, now: datetime, height: int = 320) -> Figure:
    """Cumulative spend over the current window against the soft and hard limits, and the run-rate
    forecast from now to the end of the window."""
    tz = ZoneInfo(burn.budget.time_zone)
    is_cost = burn.is_cost

    def value(amount: int) -> float | int:
        return _usd_float(amount) if is_cost else amount

    hover = "$%{y:,.2f}" if is_cost else "%{y:,} tokens"
    start, end = _local(burn.starts_at, tz), _local(burn.ends_at, tz)
    fig = Figure(
        _trace(
            "scatter",
            name="Spent",
            x=[_local(p.at, tz) for p in points],
            y=[value(p.cumulative) for p in points],
            mode="lines",
            line={"color": ACTUAL_COLOR, "width": 2.5},
            fill="tozeroy",
            fillcolor=ACTUAL_FILL,
            hovertemplate=f"spent {hover}<extra></extra>",
        )
    )
    if now < burn.ends_at:
        fig.add_trace(
            _trace(
                "scatter",
                name="Forecast",
                x=[_local(now, tz), end],
                y=[value(burn.spent), value(burn.forecast)],
                mode="lines",
                line={"color": FORECAST_COLOR, "width": 2, "dash": "dot"},
                hovertemplate=f"forecast {hover}<extra></extra>",
            )
        )
    for limit, name, color, dash in (
        (burn.soft_limit, "Soft limit", SOFT_COLOR, "dash"),
        (burn.hard_limit, "Hard limit", HARD_COLOR, "solid"),
    ):
        if limit is not None:
            fig.add_trace(
                _trace(
                    "scatter",
                    name=name,
                    x=[start, end],
                    y=[value(limit), value(limit)],
                    mode="lines",
                    line={"color": color, "width": 1.5, "dash": dash},
                    hovertemplate=f"{name.lower()} {hover}<extra></extra>",
                )
            )
    _layout(fig, height=height, legend=True)
    _time_axis(fig, "hour" if burn.budget.period == "day" else "day")
    fig.update_xaxes(range=[start, end], hoverformat="%a %d %b %Y %H:%M")
    largest = max(burn.hard_limit or 0, burn.soft_limit or 0, burn.forecast, burn.spent)
    if is_cost:
        _money_axis(fig, largest)
    else:
        _count_axis(fig)
    return fig


BAND_FILL = "rgba(100, 116, 139, 0.15)"
ANOMALY_COLOR = "#dc2626"


def anomaly_figure(series: list[list], *, unit: str, opened_at: datetime, height: int = 260) -> Figure:
    """An anomaly's evidence: the hourly actual against the expected value and its band (UTC hours), the
    anomalous hours marked. `series` rows are [iso hour, actual, expected, low, high] (Anomaly.evidence)."""
    x = [row[0][:16] for row in series]
    hover = "$%{y:,.2f}" if unit.startswith("USD") else "%{y:,.0f}"
    fig = Figure(
        _trace(
            "scatter",
            name="Band low",
            x=x,
            y=[row[3] for row in series],
            mode="lines",
            line={"width": 0},
            showlegend=False,
            hoverinfo="skip",
        ),
        _trace(
            "scatter",
            name="Expected band",
            x=x,
            y=[row[4] for row in series],
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor=BAND_FILL,
            hovertemplate=f"band top {hover}<extra></extra>",
        ),
        _trace(
            "scatter",
            name="Expected",
            x=x,
            y=[row[2] for row in series],
            mode="lines",
            line={"color": FORECAST_COLOR, "width": 1.5, "dash": "dot"},
            hovertemplate=f"expected {hover}<extra></extra>",
        ),
        _trace(
            "scatter",
            name=f"Actual ({unit})",
            x=x,
            y=[row[1] for row in series],
            mode="lines",
            line={"color": ACTUAL_COLOR, "width": 2.5},
            hovertemplate=f"actual {hover}<extra></extra>",
        ),
    )
    opened = opened_at.replace(tzinfo=None).isoformat(timespec="minutes")
    flagged = [row for row in series if row[0][:16] >= opened and row[1] is not None and row[4] is not None]
    if flagged:
        fig.add_trace(
            _trace(
                "scatter",
                name="Anomalous",
                x=[row[0][:16] for row in flagged],
                y=[row[1] for row in flagged],
                mode="markers",
                marker={"color": ANOMALY_COLOR, "size": 7},
                hoverinfo="skip",
            )
        )
    _layout(fig, height=height, legend=True)
    _time_axis(fig, "hour")
    _count_axis(fig)
    if unit.startswith("USD"):
        fig.update_yaxes(tickprefix="$", tickformat=",.2~f")
    return fig
