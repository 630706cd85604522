"""Spend from rollups: totals, groups and time series by up to two dimensions.

Every page and the spend API read through `spend_query`, which reads the smallest rollup table that
keeps the dimensions a query uses (finops.selectors.spend_tables), never raw usage. What a query asks
and answers is in finops.selectors.spend_types; its names are importable from here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC
from decimal import Decimal
from functools import reduce
from operator import add, or_
from typing import Any

from django.db.models import BigIntegerField, Case, F, IntegerField, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Cast, Coalesce, TruncMonth

from finops.measures import MEASURES
from finops.selectors.spend_tables import (
    RollupTable,
    dim_columns,
    fetch,
    labeller,
    parse_bucket,
    table_for,
    table_rows,
)
from finops.selectors.spend_types import (
    DIMENSIONS,
    GRANULARITIES,
    MAX_GROUP_BY,
    TAG_PREFIX,
    UNKNOWN,
    SpendGroup,
    SpendPoint,
    SpendQuery,
    SpendResult,
    validate_query,
)
from tenants.scope import TenantScope


def _sums() -> dict:
    # Cast: PostgreSQL sums bigints as numeric, which would arrive as Decimal.
    return {f"sum_{m}": Cast(Coalesce(Sum(m), 0), BigIntegerField()) for m in MEASURES}


def _measure_kwargs(values: Iterable[int]) -> dict[str, Any]:
    """Keyword arguments for the Measures fields from values in MEASURES order."""
    return dict(zip(MEASURES, values, strict=True))


def _totals_and_groups(query: SpendQuery, group_sums: dict[tuple, list[int]]) -> tuple[SpendGroup, list[SpendGroup]]:
    totals = [sum(column) for column in zip(*group_sums.values(), strict=True)] or [0] * len(MEASURES)
    total = SpendGroup(key=(), **_measure_kwargs(totals))
    groups = []
    if query.group_by:
        for key, sums in group_sums.items():
            group = SpendGroup(key=key, **_measure_kwargs(sums))
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


def spend_query(
    *, scope: TenantScope, query: SpendQuery, series_top: int | None = None, top_groups: int | None = None
) -> SpendResult:
    """Spend over `query` for the scope's tenants (all of them for a platform scope that names none).

    One query: the sums per (bucket, group) from the smallest rollup table that keeps the query's
    dimensions; groups and totals are summed from those rows here, which is cheaper than two more
    scans of the same rows.

    `series_top` (for a chart): the series holds only the `series_top` costliest values of the first
    dimension, each summed over the second (key: that value alone), and the rest summed per bucket
    under the key (). Two queries, groups then series, each returning few rows; 0: no series.

    `top_groups` (the spend API's `top`): the series holds only the `top_groups` first groups (whole
    keys, in the order of `groups`), and the other groups summed per bucket under the key (). Groups
    and totals are complete either way.
    """
    validate_query(query)
    tenant_ids = scope.tenant_ids
    table = table_for(query, tenant_ids)
    qs = table_rows(query, tenant_ids, table)
    columns: list[str] = []  # once each: model and tier share model_id
    for dim in query.group_by:
        columns.extend(c for c in dim_columns(dim) if c not in columns)

    bucket = TruncMonth("bucket_start", tzinfo=UTC) if query.granularity == "month" else F("bucket_start")
    if top_groups is not None and query.group_by:
        return _top_series_query(query, table, qs, columns, bucket, top_groups, whole_keys=True)
    if series_top is not None and query.group_by:
        return _top_series_query(query, table, qs, columns, bucket, series_top)
    if query.granularity == "day" and table.key and table.key == set(columns):
        # The query's groups are the table's rows (all tenants by workflow, daily): read them as they
        # are. Aggregating 16,000 rows into 16,000 groups cost more than the scan.
        rows = fetch(qs.values_list("bucket_start", *columns, *MEASURES).order_by("bucket_start"))
    else:
        rows = fetch(qs.annotate(bucket=bucket).values_list("bucket", *columns).annotate(**_sums()).order_by("bucket"))
    labellers = [labeller(d, rows, columns) for d in query.group_by]
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
    # In bucket order: rows came sorted by bucket, and dicts keep insertion order.
    return SpendResult(query=query, totals=total, groups=groups, series=_points(by_point), source=table.source)


def _rows_with(columns: list[str], values: set[tuple]) -> Q:
    """Rows whose `columns` hold one of the tuples in `values` (None: NULL)."""
    if len(columns) == 1 or tuple(columns) == ("model_id", "unknown_model_name"):
        return _among(tuple(columns), values)
    conditions = [
        Q(
            **{
                (c if v is not None else f"{c}__isnull"): (True if v is None else v)
                for c, v in zip(columns, value, strict=True)
            }
        )
        for value in sorted(values, key=repr)
    ]
    return reduce(or_, conditions)


def _top_series_query(
    query: SpendQuery,
    table: RollupTable,
    qs: QuerySet,
    columns: list[str],
    bucket,
    series_top: int,
    *,
    whole_keys: bool = False,
) -> SpendResult:
    group_rows = fetch(qs.values_list(*columns).annotate(**_sums()).order_by())
    lookups: dict = {}
    labellers = [labeller(d, group_rows, columns, offset=0, lookups=lookups) for d in query.group_by]
    first_columns = dim_columns(query.group_by[0])
    first_positions = [columns.index(c) for c in first_columns]
    n = len(columns)
    by_group: dict[tuple, list[tuple[int, ...]]] = defaultdict(list)
    first_cost: dict[str, int] = defaultdict(int)
    first_values: dict[str, set[tuple]] = defaultdict(set)  # label -> the column values behind it
    key_values: dict[tuple, set[tuple]] = defaultdict(set)  # whole key -> the column values behind it
    for row in group_rows:
        key = tuple(label(row) for label in labellers)
        by_group[key].append(row[n:])
        first_cost[key[0]] += row[n + MEASURES.index("cost_nanos")]
        first_values[key[0]].add(tuple(row[i] for i in first_positions))
        key_values[key].add(row[:n])
    group_sums = {key: [sum(column) for column in zip(*parts, strict=True)] for key, parts in by_group.items()}
    total, groups = _totals_and_groups(query, group_sums)

    if not series_top:
        return SpendResult(query=query, totals=total, groups=groups, series=[], source=table.source)
    if whole_keys:
        return _top_groups_series(query, table, qs, columns, bucket, total, groups, key_values, series_top)
    top = sorted(first_cost, key=lambda k: (-first_cost[k], k))[:series_top]
    among = _among(first_columns, set().union(*(first_values[k] for k in top)))
    # One row per (bucket, top value) and one per bucket for the rest: the columns of the rest read NULL.
    masked = {f"top_{c}": Case(When(among, then=F(c)), default=Value(None)) for c in first_columns}
    is_top = Case(When(among, then=Value(1)), default=Value(0), output_field=IntegerField())
    series_rows = fetch(
        qs.annotate(bucket=bucket, is_top=is_top, **masked)
        .values_list("bucket", "is_top", *masked)
        .annotate(**_sums())
        .order_by("bucket")
    )
    label = labeller(query.group_by[0], series_rows, list(first_columns), offset=2, lookups=lookups)
    first = 2 + len(first_columns)
    by_point: dict[tuple, tuple[int, ...]] = {}
    for row in series_rows:
        point_key = (row[0], (label(row),) if row[1] else ())
        sums = row[first:]
        point = by_point.get(point_key)
        by_point[point_key] = sums if point is None else tuple(map(add, point, sums))
    return SpendResult(query=query, totals=total, groups=groups, series=_points(by_point), source=table.source)


def _top_groups_series(
    query: SpendQuery,
    table: RollupTable,
    qs: QuerySet,
    columns: list[str],
    bucket,
    total: SpendGroup,
    groups: list[SpendGroup],
    key_values: dict[tuple, set[tuple]],
    top: int,
) -> SpendResult:
    """The series of the first `top` groups, and the others summed per bucket under the key ().

    Each row gets the rank of the group it belongs to (0: none of them) in SQL and the sums are grouped
    by (bucket, rank): at most (top + 1) points per bucket come back, labelled by rank, whatever the
    number of groups. A group's label may stand for several column values (a tier is many models)."""
    top_keys = [g.key for g in groups[:top]]
    ranks = [When(_rows_with(columns, key_values[key]), then=Value(i)) for i, key in enumerate(top_keys, start=1)]
    rank = Case(*ranks, default=Value(0), output_field=IntegerField()) if ranks else Value(0)
    series_rows = fetch(
        qs.annotate(bucket=bucket, top_rank=rank)
        .values_list("bucket", "top_rank")
        .annotate(**_sums())
        .order_by("bucket")
    )
    keys = [(), *top_keys]
    by_point = {(row[0], keys[row[1]]): row[2:] for row in series_rows}
    return SpendResult(query=query, totals=total, groups=groups, series=_points(by_point), source=table.source)


def _points(by_point: dict[tuple, tuple[int, ...]]) -> list[SpendPoint]:
    """Series points from {(bucket as read, key): sums in MEASURES order}, in insertion (bucket) order."""
    when = {text: parse_bucket(text) for text in {b for b, _ in by_point}}
    return [
        SpendPoint(when[bucket_text], key, sums[6], sums[0], sums[1] + sums[2] + sums[3] + sums[4] + sums[5])
        for (bucket_text, key), sums in by_point.items()
    ]


__all__ = [
    "DIMENSIONS",
    "GRANULARITIES",
    "MAX_GROUP_BY",
    "TAG_PREFIX",
    "UNKNOWN",
    "SpendGroup",
    "SpendPoint",
    "SpendQuery",
    "SpendResult",
    "spend_query",
    "validate_query",
]
