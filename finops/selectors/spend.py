"""Spend from rollups: totals, groups and time series by up to two dimensions.

Every page and the spend API read through `spend_query`. It reads `UsageRollup` (hourly rows for
hour granularity, daily rows otherwise) or, when a tag key is involved, `UsageTagRollup`; never
raw usage: the smallest table that keeps the dimensions a query uses (see `_DAILY`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from operator import add
from typing import NamedTuple

from django.db import connection
from django.db.models import BigIntegerField, Case, F, IntegerField, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Cast, Coalesce, TruncMonth

from finops.errors import ApplicationError
from finops.models import (
    AllTenantsModelRollup,
    AllTenantsRollup,
    AllTenantsWorkflowRollup,
    LlmModel,
    TenantDayRollup,
    TenantWorkflowRollup,
    UsageRollup,
    UsageTagRollup,
    Workflow,
)
from finops.pricing import cost_per_priced_call
from finops.services.rollups import MEASURES, hourly_retention_start
from tenants.models import Tenant

GRANULARITIES = ("hour", "day", "month")
DIMENSIONS = ("tenant", "workflow", "model", "tier", "environment")
TAG_PREFIX = "tag:"
MAX_GROUP_BY = 2
UNKNOWN = "(none)"

_TAG_DIMS = frozenset({"tenant", "workflow", "environment"})


@dataclass(frozen=True)
class SpendQuery:
    start: datetime
    end: datetime
    granularity: str = "day"
    group_by: tuple[str, ...] = ()
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dimension -> values; "tag" -> key=value

    def tag_key(self) -> str | None:
        for dim in self.group_by:
            if dim.startswith(TAG_PREFIX):
                return dim[len(TAG_PREFIX) :]
        if self.filters.get("tag"):
            return self.filters["tag"][0].partition("=")[0]
        return None


@dataclass
class SpendGroup:
    key: tuple[str, ...]
    calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nanos: int = 0
    unpriced_calls: int = 0
    share: Decimal = Decimal(0)

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.cached_input_tokens
            + self.cache_write_tokens
            + self.output_tokens
            + self.reasoning_tokens
        )

    @property
    def cost_per_call_nanos(self) -> int | None:
        return cost_per_priced_call(self.cost_nanos, self.calls, self.unpriced_calls)


class SpendPoint(NamedTuple):
    """One bucket of one group. A named tuple: a query returns up to ~20,000 of them, and a tuple is
    several times cheaper to build than a dataclass instance."""

    bucket: datetime
    key: tuple[str, ...]
    cost_nanos: int
    calls: int
    tokens: int


@dataclass
class SpendResult:
    query: SpendQuery
    totals: SpendGroup
    groups: list[SpendGroup]
    series: list[SpendPoint]
    source: str


def validate_query(query: SpendQuery) -> None:
    if query.granularity not in GRANULARITIES:
        raise ApplicationError("invalid_granularity", f"granularity must be one of {', '.join(GRANULARITIES)}.")
    if query.end <= query.start:
        raise ApplicationError("invalid_range", "The end of the range must be after its start.")
    if len(query.group_by) > MAX_GROUP_BY or len(set(query.group_by)) != len(query.group_by):
        raise ApplicationError("invalid_group_by", f"Group by up to {MAX_GROUP_BY} different dimensions.")
    tag_dims = [d for d in query.group_by if d.startswith(TAG_PREFIX)]
    for dim in query.group_by:
        if dim not in DIMENSIONS and not (dim.startswith(TAG_PREFIX) and len(dim) > len(TAG_PREFIX)):
            raise ApplicationError(
                "invalid_group_by", f"Unknown dimension '{dim}': use {', '.join(DIMENSIONS)} or tag:<key>."
            )
    for dim in query.filters:
        if dim not in DIMENSIONS and dim != "tag":
            raise ApplicationError("invalid_filter", f"Unknown filter '{dim}'.")
    if query.filters.get("tag"):
        if len(query.filters["tag"]) != 1 or "=" not in query.filters["tag"][0]:
            raise ApplicationError("invalid_filter", "Filter one tag as key=value.")
    if query.tag_key() is not None:
        if len(tag_dims) > 1 or (
            tag_dims and query.filters.get("tag") and query.filters["tag"][0].partition("=")[0] != query.tag_key()
        ):
            raise ApplicationError("invalid_group_by", "Use one tag key at a time (group by it or filter on it).")
        other = {d for d in query.group_by if not d.startswith(TAG_PREFIX)} | (set(query.filters) - {"tag"})
        if not other <= _TAG_DIMS:
            raise ApplicationError(
                "invalid_group_by", "Tags combine with tenant, workflow and environment (not model or tier)."
            )
        if query.granularity == "hour":
            raise ApplicationError("invalid_granularity", "Tag spend is kept per day: use day or month.")
    if query.granularity == "hour" and query.start < hourly_retention_start():
        raise ApplicationError(
            "invalid_range",
            f"Hourly spend is kept for recent days only (from {hourly_retention_start():%Y-%m-%d}); "
            "use day granularity for older ranges.",
        )


@dataclass(frozen=True)
class _Table:
    """A rollup table `spend_query` can read: the dimensions it keeps, and how to select its rows."""

    model: type
    dims: frozenset[str]
    source: str  # what the API reports: the grain the figures come from
    where: tuple[tuple[str, object], ...] = ()
    key: frozenset[str] = frozenset()  # columns that, with bucket_start, make a row unique (daily tables)


_HOURLY = _Table(UsageRollup, frozenset(DIMENSIONS), "hourly", (("grain", UsageRollup.Grain.HOUR),))
_TAG = _Table(UsageTagRollup, _TAG_DIMS | {"tag"}, "tag")
# Daily tables, smallest first: the first that keeps every dimension a query groups or filters by
# (the tenant too, unless it reads all tenants) answers it. Row counts at 10M records, 90 days,
# 50 tenants: 4,500, 6,400, 16,000, 77,000, 95,000 and 355,000 (docs/performance.md).
_DAILY = (
    _Table(TenantDayRollup, frozenset({"tenant"}), "daily", key=frozenset({"tenant_id"})),
    _Table(
        AllTenantsModelRollup,
        frozenset({"model", "tier", "environment"}),
        "daily",
        key=frozenset({"model_id", "unknown_model_name", "environment"}),
    ),
    _Table(AllTenantsWorkflowRollup, frozenset({"workflow"}), "daily", key=frozenset({"workflow_id"})),
    _Table(
        AllTenantsRollup,
        frozenset({"workflow", "model", "tier", "environment"}),
        "daily",
        key=frozenset({"workflow_id", "model_id", "unknown_model_name", "environment"}),
    ),
    _Table(
        TenantWorkflowRollup, frozenset({"tenant", "workflow"}), "daily", key=frozenset({"tenant_id", "workflow_id"})
    ),
    _Table(UsageRollup, frozenset(DIMENSIONS), "daily", (("grain", UsageRollup.Grain.DAY),)),
)

# The columns each dimension is grouped by; labels are looked up afterwards (no joins, no text sort).
_COLUMNS = {
    "tenant": ("tenant_id",),
    "workflow": ("workflow_id",),
    "model": ("model_id", "unknown_model_name"),
    "tier": ("model_id",),
    "environment": ("environment",),
}


def _table(query: SpendQuery, tenant_ids: list[int] | None) -> _Table:
    if query.tag_key() is not None:
        return _TAG
    if query.granularity == "hour":
        return _HOURLY
    needed = {d for d in query.group_by} | {d for d, values in query.filters.items() if values}
    if tenant_ids is not None:
        needed.add("tenant")
    return next(t for t in _DAILY if needed <= t.dims)


def _base(query: SpendQuery, tenant_ids: list[int] | None, table: _Table) -> QuerySet:
    qs = table.model.objects.filter(bucket_start__gte=query.start, bucket_start__lt=query.end, **dict(table.where))
    if table is _TAG:
        qs = qs.filter(tag_key=query.tag_key())
        if query.filters.get("tag"):
            qs = qs.filter(tag_value=query.filters["tag"][0].partition("=")[2])
    if tenant_ids is not None:
        qs = qs.filter(tenant_id__in=tenant_ids)
    # Filters name things by slug or name: turned into ids here, so the rollup query joins nothing.
    for dim, values in query.filters.items():
        if dim == "tag" or not values:
            continue
        if dim == "tenant":
            qs = qs.filter(tenant_id__in=Tenant.objects.filter(slug__in=values).values("id"))
        elif dim == "workflow":
            qs = qs.filter(workflow_id__in=list(Workflow.objects.filter(slug__in=values).values_list("id", flat=True)))
        elif dim == "model":
            ids = list(LlmModel.objects.filter(name__in=values).values_list("id", flat=True))
            qs = qs.filter(Q(model_id__in=ids) | Q(unknown_model_name__in=values))
        elif dim == "tier":
            qs = qs.filter(
                model_id__in=list(LlmModel.objects.filter(tier__slug__in=values).values_list("id", flat=True))
            )
        else:
            qs = qs.filter(**{f"{dim}__in": values})
    return qs


def _dim_columns(dim: str) -> tuple[str, ...]:
    return ("tag_value",) if dim.startswith(TAG_PREFIX) else _COLUMNS[dim]


def _labeller(dim: str, rows: list[tuple], columns: list[str], offset: int = 1, lookups: dict | None = None):
    """A function from a result row to the dimension's label (UNKNOWN for none), with one lookup
    query for the ids that occur in `rows` (whose values are `offset` others, then `columns`).
    `lookups` keeps each dimension's id -> label map, for a second labeller over fewer ids."""
    position = offset + columns.index(_dim_columns(dim)[0])
    if dim.startswith(TAG_PREFIX) or dim == "environment":
        return lambda row: row[position] or UNKNOWN
    lookups = {} if lookups is None else lookups
    if dim not in lookups:
        ids = {row[position] for row in rows} - {None}
        if dim in ("model", "tier"):
            field_name = "name" if dim == "model" else "tier__slug"
            found = LlmModel.objects.filter(id__in=ids).order_by().values_list("id", field_name)
        else:
            found = (Tenant if dim == "tenant" else Workflow).objects.filter(id__in=ids).order_by()
            found = found.values_list("id", "slug")
        lookups[dim] = dict(found) if ids else {}
    names = lookups[dim]
    if dim == "model":
        unknown = offset + columns.index("unknown_model_name")
        return lambda row: names.get(row[position]) or row[unknown] or UNKNOWN
    return lambda row: names.get(row[position]) or UNKNOWN


def _fetch(qs: QuerySet) -> list[tuple]:
    """The rows of a values_list queryset as the database driver returns them: compiled by the ORM,
    fetched without its per-value converters, which cost more than the query itself on 16,000 rows
    (an int() per sum, and a timestamp parsed in Python per row: timestamps are read as text here
    and parsed once per bucket)."""
    sql, params = qs.query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            from psycopg.types.string import TextLoader

            for name in ("timestamptz", "timestamp"):
                cursor.cursor.adapters.register_loader(name, TextLoader)  # this cursor only
        cursor.execute(sql, params)
        return cursor.fetchall()


def _parse_bucket(value: str | datetime) -> datetime:
    # "2026-11-01 00:00:00+00" from PostgreSQL; naive UTC text or datetimes from SQLite.
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _sums() -> dict:
    # Cast: PostgreSQL sums bigints as numeric, which would arrive as Decimal.
    return {f"sum_{m}": Cast(Coalesce(Sum(m), 0), BigIntegerField()) for m in MEASURES}


def _totals_and_groups(query: SpendQuery, group_sums: dict[tuple, list[int]]) -> tuple[SpendGroup, list[SpendGroup]]:
    totals = [sum(column) for column in zip(*group_sums.values(), strict=True)] or [0] * len(MEASURES)
    total = SpendGroup(key=(), **dict(zip(MEASURES, totals, strict=True)))
    groups = []
    if query.group_by:
        for key, sums in group_sums.items():
            group = SpendGroup(key=key, **dict(zip(MEASURES, sums, strict=True)))
            group.share = Decimal(group.cost_nanos) / total.cost_nanos if total.cost_nanos else Decimal(0)
            groups.append(group)
        groups.sort(key=lambda g: (-g.cost_nanos, -g.calls, g.key))
    return total, groups


def _among(columns: tuple[str, ...], values: set[tuple]) -> Q:
    """Rows whose `columns` (one dimension's) hold one of `values`, NULLs included."""
    if columns == ("model_id", "unknown_model_name"):
        ids = [m for m, _ in values if m is not None]
        return Q(model_id__in=ids) | Q(
            model_id__isnull=True, unknown_model_name__in=[n for m, n in values if m is None]
        )
    (column,) = columns
    flat = {v for (v,) in values}
    q = Q(**{f"{column}__in": [v for v in flat if v is not None]})
    return q | Q(**{f"{column}__isnull": True}) if None in flat else q


def spend_query(*, tenant_ids: list[int] | None, query: SpendQuery, series_top: int | None = None) -> SpendResult:
    """Spend over `query` for the given tenants (None: all tenants, operators only).

    One query: the sums per (bucket, group) from the smallest rollup table that keeps the query's
    dimensions; groups and totals are summed from those rows here, which is cheaper than two more
    scans of the same rows.

    `series_top` (for a chart): the series holds only the `series_top` costliest values of the first
    dimension, each summed over the second (key: that value alone), and the rest summed per bucket
    under the key (). Two queries, groups then series, each returning few rows; 0: no series.
    """
    validate_query(query)
    table = _table(query, tenant_ids)
    qs = _base(query, tenant_ids, table)
    columns: list[str] = []  # once each: model and tier share model_id
    for dim in query.group_by:
        columns.extend(c for c in _dim_columns(dim) if c not in columns)

    bucket = TruncMonth("bucket_start", tzinfo=UTC) if query.granularity == "month" else F("bucket_start")
    if series_top is not None and query.group_by:
        return _top_series_query(query, table, qs, columns, bucket, series_top)
    if query.granularity == "day" and table.key and table.key == set(columns):
        # The query's groups are the table's rows (all tenants by workflow, daily): read them as they
        # are. Aggregating 16,000 rows into 16,000 groups cost more than the scan.
        rows = _fetch(qs.values_list("bucket_start", *columns, *MEASURES).order_by("bucket_start"))
    else:
        rows = _fetch(qs.annotate(bucket=bucket).values_list("bucket", *columns).annotate(**_sums()).order_by("bucket"))
    labellers = [_labeller(d, rows, columns) for d in query.group_by]
    first = 1 + len(columns)

    # Each row is one point; points whose labels coincide (the models of one tier) are added together.
    # Groups are the points summed over buckets: column sums with zip, in C rather than per row.
    single = labellers[0] if len(labellers) == 1 else None
    by_point: dict[tuple, tuple[int, ...]] = {}
    by_group: dict[tuple, list[tuple[int, ...]]] = defaultdict(list)
    for row in rows:
        key = (single(row),) if single else tuple(label(row) for label in labellers)
        sums = row[first:]
        point = by_point.get((row[0], key))
        by_point[(row[0], key)] = sums if point is None else tuple(map(add, point, sums))
        by_group[key].append(sums)
    group_sums = {key: [sum(column) for column in zip(*parts, strict=True)] for key, parts in by_group.items()}
    total, groups = _totals_and_groups(query, group_sums)
    when = {text: _parse_bucket(text) for text in {b for b, _ in by_point}}
    series = [  # in bucket order: rows came sorted by bucket, and dicts keep insertion order
        SpendPoint(when[bucket_text], key, sums[6], sums[0], sums[1] + sums[2] + sums[3] + sums[4] + sums[5])
        for (bucket_text, key), sums in by_point.items()
    ]
    return SpendResult(query=query, totals=total, groups=groups, series=series, source=table.source)


def _top_series_query(
    query: SpendQuery, table: _Table, qs: QuerySet, columns: list[str], bucket, series_top: int
) -> SpendResult:
    group_rows = _fetch(qs.values_list(*columns).annotate(**_sums()).order_by())
    lookups: dict = {}
    labellers = [_labeller(d, group_rows, columns, offset=0, lookups=lookups) for d in query.group_by]
    first_columns = _dim_columns(query.group_by[0])
    first_positions = [columns.index(c) for c in first_columns]
    n = len(columns)
    by_group: dict[tuple, list[tuple[int, ...]]] = defaultdict(list)
    first_cost: dict[str, int] = defaultdict(int)
    first_values: dict[str, set[tuple]] = defaultdict(set)  # label -> the column values behind it
    for row in group_rows:
        key = tuple(label(row) for label in labellers)
        by_group[key].append(row[n:])
        first_cost[key[0]] += row[n + MEASURES.index("cost_nanos")]
        first_values[key[0]].add(tuple(row[i] for i in first_positions))
    group_sums = {key: [sum(column) for column in zip(*parts, strict=True)] for key, parts in by_group.items()}
    total, groups = _totals_and_groups(query, group_sums)

    if not series_top:
        return SpendResult(query=query, totals=total, groups=groups, series=[], source=table.source)
    top = sorted(first_cost, key=lambda k: (-first_cost[k], k))[:series_top]
    among = _among(first_columns, set().union(*(first_values[k] for k in top)))
    # One row per (bucket, top value) and one per bucket for the rest: the columns of the rest read NULL.
    masked = {f"top_{c}": Case(When(among, then=F(c)), default=Value(None)) for c in first_columns}
    is_top = Case(When(among, then=Value(1)), default=Value(0), output_field=IntegerField())
    series_rows = _fetch(
        qs.annotate(bucket=bucket, is_top=is_top, **masked)
        .values_list("bucket", "is_top", *masked)
        .annotate(**_sums())
        .order_by("bucket")
    )
    label = _labeller(query.group_by[0], series_rows, list(first_columns), offset=2, lookups=lookups)
    first = 2 + len(first_columns)
    by_point: dict[tuple, tuple[int, ...]] = {}
    for row in series_rows:
        point_key = (row[0], (label(row),) if row[1] else ())
        sums = row[first:]
        point = by_point.get(point_key)
        by_point[point_key] = sums if point is None else tuple(map(add, point, sums))
    when = {text: _parse_bucket(text) for text in {b for b, _ in by_point}}
    series = [
        SpendPoint(when[bucket_text], key, sums[6], sums[0], sums[1] + sums[2] + sums[3] + sums[4] + sums[5])
        for (bucket_text, key), sums in by_point.items()
    ]
    return SpendResult(query=query, totals=total, groups=groups, series=series, source=table.source)


__all__ = [
    "DIMENSIONS",
    "GRANULARITIES",
    "SpendGroup",
    "SpendPoint",
    "SpendQuery",
    "SpendResult",
    "spend_query",
    "validate_query",
]
