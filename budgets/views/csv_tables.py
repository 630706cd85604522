"""The budget pages' tables as CSV rows: the same rows and columns the page shows, amounts exact (USD
as decimal strings, tokens as integers) instead of rounded for reading."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from budgets.models import Alert, Anomaly, ApprovalRequest, Metric
from budgets.selectors import Burn, BurnStatus
from finops.pricing import nanos_to_usd

BUDGET_COLUMNS = (
    "budget", "tenant", "scope", "metric", "unit", "period", "time_zone", "period_start", "period_end",
    "spent", "reserved", "soft_limit", "hard_limit", "forecast", "status", "active",
)  # fmt: skip
ALERT_COLUMNS = (
    "raised_at", "tenant", "kind", "level_percent", "subject", "message", "budget_id", "acknowledged_at",
    "acknowledged_by",
)  # fmt: skip
APPROVAL_COLUMNS = (
    "requested_at", "id", "kind", "tenant", "workflow", "model", "environment", "estimated_cost_usd",
    "why", "status", "expires_at", "decided_at", "decided_by", "comment",
)  # fmt: skip
ANOMALY_COLUMNS = (
    "id", "status", "tenant", "workflow", "workflow_name", "kind", "metric", "model", "unit", "observed",
    "expected", "band_low", "band_high", "score", "opened_at", "last_hour", "cleared_at", "feedback",
    "feedback_note", "controls",
)  # fmt: skip


def _iso(value) -> str:
    return value.isoformat() if value is not None else ""


def _amount(value: int | None, metric: str) -> Any:
    if value is None:
        return ""
    return value if metric == Metric.TOKENS else nanos_to_usd(value)


def budget_rows(burns: Iterable[Burn]) -> Iterator[list[Any]]:
    for burn in burns:
        b, metric = burn.budget, burn.budget.metric
        yield [
            b.name,
            b.tenant.slug if b.tenant is not None else "",
            b.scope_label(),
            metric,
            "tokens" if metric == Metric.TOKENS else "USD",
            b.period,
            b.time_zone,
            _iso(burn.starts_at),
            _iso(burn.ends_at),
            _amount(burn.spent, metric),
            _amount(burn.reserved, metric),
            _amount(burn.soft_limit, metric),
            _amount(burn.hard_limit, metric),
            _amount(burn.forecast, metric),
            BurnStatus.LABELS.get(burn.status, burn.status) if b.is_active else "",
            "yes" if b.is_active else "no",
        ]


def alert_rows(alerts: Iterable[Alert]) -> Iterator[list[Any]]:
    for a in alerts:
        yield [
            _iso(a.created_at),
            a.tenant.slug if a.tenant is not None else "",
            a.kind,
            a.level,
            a.subject,
            a.message,
            a.budget_id or "",
            _iso(a.acknowledged_at),
            a.acknowledged_by.get_username() if a.acknowledged_by is not None else "",
        ]


def approval_rows(approvals: Iterable[ApprovalRequest]) -> Iterator[list[Any]]:
    for a in approvals:
        yield [
            _iso(a.created_at),
            str(a.pk),
            a.kind,
            a.tenant.slug,
            a.workflow.slug if a.workflow_id and a.workflow else "",
            a.model.name if a.model_id and a.model else "",
            a.environment,
            nanos_to_usd(a.estimated_cost_nanos) or "",
            "; ".join(str(r) for r in (a.reasons or [])),
            a.status,
            _iso(a.expires_at),
            _iso(a.decided_at),
            a.decided_by.get_username() if a.decided_by_id and a.decided_by else "",
            a.comment,
        ]


def _control_cell(control) -> str:
    """A control as the anomalies page says it: its kind, and whether it is still in force."""
    state = f"ended {_iso(control.ends_at)}" if control.ends_at is not None else "active"
    return f"{control.get_kind_display()} ({state})"


def anomaly_rows(anomalies: Iterable[Anomaly]) -> Iterator[list[Any]]:
    """Open and recently cleared anomalies as the page lists them; the measured values unrounded."""
    for a in anomalies:
        yield [
            str(a.pk),
            a.status,
            a.tenant.slug,
            a.workflow.slug if a.workflow_id and a.workflow else "",
            a.workflow.name if a.workflow_id and a.workflow else "",
            a.get_kind_display(),
            a.metric,
            a.subject_name,
            a.evidence.get("unit", ""),
            a.observed,
            "" if a.expected is None else a.expected,
            "" if a.low is None else a.low,
            "" if a.high is None else a.high,
            "" if a.score is None else round(a.score, 2),
            _iso(a.opened_at),
            _iso(a.last_hour),
            _iso(a.cleared_at),
            a.get_feedback_display() if a.feedback else "",
            a.feedback_note,
            "; ".join(_control_cell(c) for c in a.controls.all()) or "none",
        ]
