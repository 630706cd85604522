"""Which rollup table answers a spend query, its rows for the query, and reading them fast.

`spend_query` (finops.selectors.spend) reads `UsageRollup` (hourly rows for hour granularity,
daily rows otherwise) or, when a tag key is involved, `UsageTagRollup`; otherwise the smallest daily
table that keeps the dimensions a query uses (see `_DAILY`). Never raw usage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import Model, Q, QuerySet

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
from finops.selectors.spend_types import DIMENSIONS, TAG_DIMENSIONS, TAG_PREFIX, UNKNOWN, SpendQuery
from tenants.models import Tenant


@dataclass(frozen=True)
class RollupTable:
    """A rollup table `spend_query` can read: the dimensions it keeps, and how to select its rows."""

    model: type[Model]
    dims: frozenset[str]
    source: str  # what the API reports: the grain the figures come from
    where: tuple[tuple[str, object], ...] = ()
    key: frozenset[str] = frozenset()  # columns that, with bucket_start, make a row unique (daily tables)


_HOURLY = RollupTable(UsageRollup, frozenset(DIMENSIONS), "hourly", (("grain", UsageRollup.Grain.HOUR),))
_TAG = RollupTable(UsageTagRollup, TAG_DIMENSIONS | {"tag"}, "tag")
# Daily tables, smallest first: the first that keeps every dimension a query groups or filters by
# (the tenant too, unless it reads all tenants) answers it. Row counts at 10M records, 90 days,
# 50 tenants: 4,500, 6,400, 16,000, 77,000, 95,000 and 355,000 (docs/performance.md).
_DAILY = (
    RollupTable(TenantDayRollup, frozenset({"tenant"}), "daily", key=frozenset({"tenant_id"})),
    RollupTable(
        AllTenantsModelRollup,
        frozenset({"model", "tier", "environment"}),
        "daily",
        key=frozenset({"model_id", "unknown_model_name", "environment"}),
    ),
    RollupTable(AllTenantsWorkflowRollup, frozenset({"workflow"}), "daily", key=frozenset({"workflow_id"})),
    RollupTable(
        AllTenantsRollup,
        frozenset({"workflow", "model", "tier", "environment"}),
        "daily",
        key=frozenset({"workflow_id", "model_id", "unknown_model_name", "environment"}),
    ),
    RollupTable(
        TenantWorkflowRollup, frozenset({"tenant", "workflow"}), "daily", key=frozenset({"tenant_id", "workflow_id"})
    ),
    RollupTable(UsageRollup, frozenset(DIMENSIONS), "daily", (("grain", UsageRollup.Grain.DAY),)),
)

# The columns each dimension is grouped by; labels are looked up afterwards (no joins, no text sort).
_COLUMNS = {
    "tenant": ("tenant_id",),
    "workflow": ("workflow_id",),
    "model": ("model_id", "unknown_model_name"),
    "tier": ("model_id",),
    "environment": ("environment",),
}


def table_for(query: SpendQuery, tenant_ids: list[int] | None) -> RollupTable:
    """The table that answers `query` for the given tenants (None: all tenants)."""
    if query.tag_key() is not None:
        return _TAG
    if query.granularity == "hour":
        return _HOURLY
    needed = {d for d in query.group_by} | {d for d, values in query.filters.items() if values}
    if tenant_ids is not None:
        needed.add("tenant")
    return next(t for t in _DAILY if needed <= t.dims)


def table_rows(query: SpendQuery, tenant_ids: list[int] | None, table: RollupTable) -> QuerySet:
    """The rows of `table` in the query's range, tenants and filters."""
    # _default_manager: the generic spelling of `objects` (no rollup model declares another manager).
    qs = table.model._default_manager.filter(
        bucket_start__gte=query.start, bucket_start__lt=query.end, **dict(table.where)
    )
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


def dim_columns(dim: str) -> tuple[str, ...]:
    return ("tag_value",) if dim.startswith(TAG_PREFIX) else _COLUMNS[dim]


def labeller(dim: str, rows: list[tuple], columns: list[str], offset: int = 1, lookups: dict | None = None):
    """A function from a result row to the dimension's label (UNKNOWN for none), with one lookup
    query for the ids that occur in `rows` (whose values are `offset` others, then `columns`).
    `lookups` keeps each dimension's id -> label map, for a second labeller over fewer ids."""
    position = offset + columns.index(dim_columns(dim)[0])
    if dim.startswith(TAG_PREFIX) or dim == "environment":
        return lambda row: row[position] or UNKNOWN
    lookups = {} if lookups is None else lookups
    if dim not in lookups:
        ids = {row[position] for row in rows} - {None}
        found: Iterable[tuple[Any, Any]]
        if dim in ("model", "tier"):
            field_name = "name" if dim == "model" else "tier__slug"
            found = LlmModel.objects.filter(id__in=ids).order_by().values_list("id", field_name)
        else:
            owner: type[Tenant] | type[Workflow] = Tenant if dim == "tenant" else Workflow
            found = owner.objects.filter(id__in=ids).order_by().values_list("id", "slug")
        lookups[dim] = dict(found) if ids else {}
    names = lookups[dim]
    if dim == "model":
        unknown = offset + columns.index("unknown_model_name")
        return lambda row: names.get(row[position]) or row[unknown] or UNKNOWN
    return lambda row: names.get(row[position]) or UNKNOWN


def fetch(qs: QuerySet) -> list[tuple]:
    """The rows of a values_list queryset as the database driver returns them: compiled by the ORM,
    fetched without its per-value converters, which cost more than the query itself on 16,000 rows
    (an int() per sum, and a timestamp parsed in Python per row: timestamps are read as text here
    and parsed once per bucket)."""
    try:
        sql, params = qs.query.sql_with_params()
    except EmptyResultSet:  # a filter that matches nothing (an unknown workflow): the ORM builds no SQL
        return []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            from psycopg.types.string import TextLoader

            for name in ("timestamptz", "timestamp"):
                cursor.cursor.adapters.register_loader(name, TextLoader)  # this cursor only
        cursor.execute(sql, params)
        return cursor.fetchall()


def parse_bucket(value: str | datetime) -> datetime:
    # "2026-11-01 00:00:00+00" from PostgreSQL; naive UTC text or datetimes from SQLite.
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
