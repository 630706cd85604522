"""Shared by the dashboard selectors: UTC days, breakdown rows, stacked series, workflow names.

Dashboards read rollups, never raw usage, through `spend_query` (one query a call) and, where a page
needs token buckets per day, one aggregate over daily `UsageRollup` rows. Days are UTC calendar days,
the grain rollups keep. Money stays integer nano-USD here; templates and figures turn it into dollars
for display only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.utils import timezone

from finops.models import Workflow
from finops.pricing import cost_per_priced_call
from finops.selectors.spend import UNKNOWN, SpendGroup, SpendQuery

TOP_ROWS = 10
CHART_SERIES = 10  # stacked series shown; the rest is summed into "Other"
EXPLORER_MAX_ROWS = 500  # table rows; beyond them one "other" row, in the CSV too
OTHER = "Other"


def utc_today(now: datetime | None = None) -> date:
    return (now or timezone.now()).astimezone(UTC).date()


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass(frozen=True, slots=True)
class SpendRow:
    """One row of a breakdown: `key` is the dimension value (UNKNOWN for none), `label` is shown."""

    key: str
    label: str
    calls: int = 0
    tokens: int = 0
    cost_nanos: int = 0
    unpriced_calls: int = 0
    share: Decimal = Decimal(0)

    @property
    def is_none(self) -> bool:
        return self.key == UNKNOWN

    @property
    def cost_per_call_nanos(self) -> int | None:
        return cost_per_priced_call(self.cost_nanos, self.calls, self.unpriced_calls)


@dataclass(frozen=True, slots=True)
class Series:
    """One line or stack of a figure: integer values (nano-USD, calls or tokens) aligned with its x."""

    name: str
    values: list[int]
    key: str = ""


def rows_by(groups: Iterable[SpendGroup], index: int, total_cost: int, labels: Mapping[str, str]) -> list[SpendRow]:
    """Sum groups of a (possibly two-dimensional) query over one of their dimensions, costliest first."""
    acc: dict[str, list[int]] = {}
    for g in groups:
        a = acc.setdefault(g.key[index], [0, 0, 0, 0])
        a[0] += g.calls
        a[1] += g.tokens
        a[2] += g.cost_nanos
        a[3] += g.unpriced_calls
    rows = [
        SpendRow(
            key=key,
            label=labels.get(key, key),
            calls=calls,
            tokens=tokens,
            cost_nanos=cost,
            unpriced_calls=unpriced,
            share=Decimal(cost) / total_cost if total_cost else Decimal(0),
        )
        for key, (calls, tokens, cost, unpriced) in acc.items()
    ]
    rows.sort(key=lambda r: (-r.cost_nanos, -r.calls, r.label))
    return rows


def workflow_names(slugs: Iterable[str]) -> dict[str, str]:
    """Names of the workflows the caller already sees in spend (never a list of all workflows)."""
    wanted = {s for s in slugs if s and s != UNKNOWN}
    if not wanted:
        return {}
    return dict(Workflow.objects.filter(slug__in=wanted).values_list("slug", "name"))


def stack(
    points: Iterable[tuple[object, str, int]], x: list, order: list[str], labels: Mapping[str, str], limit: int
) -> list[Series]:
    """(bucket, key, value) points -> one series per key in `order` (top `limit`), the rest as Other."""
    position = {b: i for i, b in enumerate(x)}
    shown = order[:limit]
    values = {k: [0] * len(x) for k in shown}
    other = [0] * len(x)
    for bucket, key, value in points:
        i = position.get(bucket)
        if i is None:
            continue
        (values[key] if key in values else other)[i] += value
    series = [Series(name=labels.get(k, k), values=values[k], key=k) for k in shown]
    if len(order) > limit:
        series.append(Series(name=OTHER, values=other, key=""))
    return series


def query_fields(query: SpendQuery) -> dict:
    return {f: getattr(query, f) for f in ("start", "end", "granularity", "group_by", "filters")}


def relabel(row: SpendRow, labels: Mapping[str, str]) -> SpendRow:
    label = labels.get(row.key)
    if label is None:
        return row
    return SpendRow(row.key, label, row.calls, row.tokens, row.cost_nanos, row.unpriced_calls, row.share)


def acc_rows(acc: Mapping[str, list[int]], total_cost: int, labels: Mapping[str, str]) -> list[SpendRow]:
    rows = [
        SpendRow(
            key=key,
            label=labels.get(key, key),
            calls=calls,
            tokens=tokens,
            cost_nanos=cost,
            share=Decimal(cost) / total_cost if total_cost else Decimal(0),
        )
        for key, (cost, calls, tokens) in acc.items()
    ]
    rows.sort(key=lambda r: (-r.cost_nanos, -r.calls, r.label))
    return rows


def bucket_of(bucket: datetime, granularity: str) -> datetime:
    bucket = bucket.astimezone(UTC) if bucket.tzinfo else bucket.replace(tzinfo=UTC)
    if granularity == "month":
        return day_start(bucket.date().replace(day=1))
    return bucket
