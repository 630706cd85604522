"""Rollups: usage summed per day (all time) and per hour (recent days), recomputed, never added to.

Ingest and re-pricing mark the (tenant, UTC day) they touch in `RollupDirtyDay`, in the same
transaction as the records. `rollups_refresh` recomputes each marked day from the raw records
and replaces its rows, so a job that runs twice, or dies half-way and runs again, ends with the
same totals. A mark is cleared only if nobody re-marked the day while it was being recomputed.

Coarser daily tables are derived from the daily rows, never from raw records, so they are equal
to them by construction: per tenant-day, with it, `TenantWorkflowRollup` and `TenantDayRollup`;
per day across tenants, the `AllTenants*Rollup` tables, under a lock per day so that two
tenant-days of one day recomputed at once cannot each write a total that misses the other.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, CharField, Count, F, Func, Q, Sum, Value, When
from django.db.models.functions import Coalesce, TruncDate, TruncHour
from django.utils import timezone

from finops.envelopes import HIST_SQL, OUTPUT_EXPR, PROMPT_EXPR, hist_annotations, hist_pop
from finops.measures import MEASURES, TOKEN_FIELDS
from finops.models import (
    AllTenantsHourRollup,
    AllTenantsModelRollup,
    AllTenantsRollup,
    AllTenantsWorkflowRollup,
    RollupDirtyDay,
    TenantDayRollup,
    TenantWorkflowRollup,
    UsageRecord,
    UsageRollup,
    UsageTagRollup,
)

logger = logging.getLogger(__name__)


def _aggregates() -> dict:
    aggs: dict[str, Func] = {"calls": Count("id")}
    aggs.update({f: Coalesce(Sum(f), 0) for f in TOKEN_FIELDS})
    aggs["cost_nanos"] = Coalesce(Sum("cost_nanos"), 0)
    aggs["unpriced_calls"] = Count("id", filter=Q(priced=False))
    return aggs


def _unknown_model_name():
    return Case(When(model__isnull=True, then=F("model_name")), default=Value(""), output_field=CharField())


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def rollup_mark_dirty(*, pairs: Iterable[tuple[int, date]]) -> None:
    """Mark (tenant_id, UTC day) pairs for recomputation; one statement however many pairs.

    In key order: two ingest batches marking the same days in different orders would each lock a row
    the other wants next and one would fail with a deadlock (bench/load.py found it: a 503 per minute)."""
    now = timezone.now()
    rows = [RollupDirtyDay(tenant_id=t, day=d, marked_at=now) for t, d in sorted(set(pairs))]
    if rows:
        RollupDirtyDay.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["tenant", "day"], update_fields=["marked_at"]
        )


def hourly_retention_start(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return datetime.combine(now.date(), time.min, tzinfo=UTC) - timedelta(days=settings.ROLLUP_HOURLY_RETENTION_DAYS)


@transaction.atomic
def rollup_recompute_day(*, tenant_id: int, day: date, all_tenants: bool = True) -> int:
    """Replace one tenant-day's daily, hourly and tag rollups with sums over its raw records, and the
    coarser daily tables derived from them. `all_tenants=False` leaves the day's `AllTenantsRollup`
    rows to the caller, who recomputes them once after the day's last tenant (`rollups_refresh`)."""
    if settings.USAGE_RAW_RETENTION_MONTHS and connection.vendor == "postgresql":
        from finops.services.partitions import raw_month_dropped  # partitions reads rollups: imported here

        if raw_month_dropped(day):
            # Its raw month was dropped once its rollups were complete: they are all that is left of it.
            logger.warning(
                "rollups: tenant %s day %s kept as is, its raw usage was dropped by retention", tenant_id, day
            )
            return 0
    if connection.vendor == "postgresql":
        # Held until commit: two recomputes of one tenant-day at once (two beats' refreshes, a re-pricing)
        # would each delete, then each insert, and double the day. The second waits and redoes it.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [tenant_id * 1_000_000 + day.toordinal()])
    start, end = day_bounds(day)
    UsageRollup.objects.filter(tenant_id=tenant_id, grain=UsageRollup.Grain.DAY, bucket_start=start).delete()
    UsageRollup.objects.filter(
        tenant_id=tenant_id, grain=UsageRollup.Grain.HOUR, bucket_start__gte=start, bucket_start__lt=end
    ).delete()
    UsageTagRollup.objects.filter(tenant_id=tenant_id, bucket_start=start).delete()
    write_rows = _ROW_WRITERS.get(connection.vendor, _write_rows_python)
    rows = write_rows(tenant_id=tenant_id, start=start, end=end, hourly=end > hourly_retention_start())
    TenantWorkflowRollup.objects.filter(tenant_id=tenant_id, bucket_start=start).delete()
    TenantDayRollup.objects.filter(tenant_id=tenant_id, bucket_start=start).delete()
    rows += _derive_from_daily(TenantWorkflowRollup, ("tenant_id", "workflow_id"), start, tenant_id=tenant_id)
    rows += _derive_from_daily(TenantDayRollup, ("tenant_id",), start, tenant_id=tenant_id)
    if all_tenants:
        rows += rollup_recompute_all_tenants_day(day=day)
    return rows


def _write_rows_sql(*, tenant_id: int, start: datetime, end: datetime, hourly: bool) -> int:
    """The tenant-day's daily, hourly and tag rows as `INSERT ... SELECT ... GROUP BY` over its raw records
    (PostgreSQL): no row goes through Python. Writes what `_write_rows_python` writes, row for row,
    histograms included (tests/finops/test_rollups.py compares the two on random records)."""
    quote = connection.ops.quote_name
    measures = ", ".join(quote(m) for m in MEASURES)
    sums = ", ".join(f"COALESCE(SUM({quote(f)}), 0)" for f in (*TOKEN_FIELDS, "cost_nanos"))
    aggregates = f"COUNT(*), {sums}, COUNT(*) FILTER (WHERE NOT {quote('priced')})"
    rollup, tags = quote(UsageRollup._meta.db_table), quote(UsageTagRollup._meta.db_table)
    dims = "workflow_id, model_id, unknown_model_name, environment"
    raw = (
        "SELECT workflow_id, model_id, environment, occurred_at, priced, tags, "
        f"{', '.join(quote(f) for f in (*TOKEN_FIELDS, 'cost_nanos'))}, "
        "CASE WHEN model_id IS NULL THEN model_name ELSE '' END AS unknown_model_name, "
        "input_tokens + cached_input_tokens + cache_write_tokens AS prompt_total "
        f"FROM {quote(UsageRecord._meta.db_table)} WHERE tenant_id = %(tenant)s "
        "AND occurred_at >= %(start)s AND occurred_at < %(end)s"
    )
    params: dict[str, int | datetime] = {"tenant": tenant_id, "start": start, "end": end}
    # One statement, so the day's raw records are read once (MATERIALIZED), not once per kind of row.
    writes = {
        "daily": f"INSERT INTO {rollup} (grain, bucket_start, tenant_id, {dims}, {measures}, token_hist) "
        f"SELECT 'day', %(start)s, %(tenant)s, {dims}, {aggregates}, {HIST_SQL} FROM raw GROUP BY {dims}",
        # UTC hours whatever the session's time zone.
        "hourly": f"INSERT INTO {rollup} (grain, bucket_start, tenant_id, {dims}, {measures}) "
        f"SELECT 'hour', date_trunc('hour', occurred_at, 'UTC') AS hour, %(tenant)s, {dims}, {aggregates} "
        f"FROM raw GROUP BY hour, {dims}",
        "tags": f"INSERT INTO {tags} (bucket_start, tenant_id, workflow_id, environment, tag_key, tag_value, "
        f"{measures}) SELECT %(start)s, %(tenant)s, workflow_id, environment, tag.key, tag.value, {aggregates} "
        # Ingest stores objects only; anything else would make jsonb_each_text fail the whole refresh.
        "FROM raw CROSS JOIN LATERAL jsonb_each_text(CASE jsonb_typeof(raw.tags) WHEN 'object' THEN raw.tags "
        "ELSE '{}' END) AS tag "
        "GROUP BY workflow_id, environment, tag.key, tag.value",
    }
    if not hourly:
        del writes["hourly"]
    ctes = ", ".join(f"{name} AS ({statement} RETURNING 1)" for name, statement in writes.items())
    counts = " + ".join(f"(SELECT count(*) FROM {name})" for name in writes)
    with connection.cursor() as cursor:
        cursor.execute(f"WITH raw AS MATERIALIZED ({raw}), {ctes} SELECT {counts}", params)
        return cursor.fetchone()[0]


def _write_rows_python(*, tenant_id: int, start: datetime, end: datetime, hourly: bool) -> int:
    """The tenant-day's daily, hourly and tag rows summed by the ORM (tags in Python) and bulk-created:
    what SQLite (the embedded default) runs, and what PostgreSQL ran before `_write_rows_sql`
    (bench/rollups.py times both)."""
    raw = UsageRecord.objects.filter(tenant_id=tenant_id, occurred_at__gte=start, occurred_at__lt=end)
    dims = {"unknown_model_name": _unknown_model_name()}
    keys = ("workflow_id", "model_id", "unknown_model_name", "environment")
    # Daily rows also keep log-spaced histograms of tokens per call (finops/envelopes.py): envelopes'
    # percentiles then come from sums of rollup rows, never from raw records.
    daily = [
        UsageRollup(
            grain=UsageRollup.Grain.DAY, bucket_start=start, tenant_id=tenant_id, token_hist=hist_pop(row), **row
        )
        for row in raw.annotate(prompt_total=PROMPT_EXPR, output_total=OUTPUT_EXPR, **dims)
        .values(*keys)
        .annotate(**_aggregates(), **hist_annotations())
        .order_by()
    ]
    hourly_rows = []
    if hourly:
        hourly_rows = [
            UsageRollup(grain=UsageRollup.Grain.HOUR, tenant_id=tenant_id, bucket_start=row.pop("hour"), **row)
            for row in raw.annotate(hour=TruncHour("occurred_at", tzinfo=UTC), **dims)
            .values("hour", *keys)
            .annotate(**_aggregates())
            .order_by()
        ]
    tags = _tag_rows(raw, tenant_id, start)
    UsageRollup.objects.bulk_create(daily + hourly_rows, batch_size=2000)
    UsageTagRollup.objects.bulk_create(tags, batch_size=2000)
    return len(daily) + len(hourly_rows) + len(tags)


# How each database writes a tenant-day's rows from raw records; any other runs `_write_rows_python`.
_ROW_WRITERS = {"postgresql": _write_rows_sql}


# Any constant: the first half of the advisory lock key on an AllTenantsRollup day.
_ALL_TENANTS_LOCK = 0x726F6C6C


@transaction.atomic
def rollup_recompute_all_tenants_day(*, day: date) -> int:
    """Replace one day's rows of the all-tenant tables (`AllTenantsRollup`, `AllTenantsModelRollup`,
    `AllTenantsWorkflowRollup`) with the sums of that day's daily rows of all tenants, and its
    `AllTenantsHourRollup` rows with the sums of its hourly rows."""
    start, end = day_bounds(day)
    if connection.vendor == "postgresql":
        # Held until commit: a second recompute of this day waits, then reads the first one's rows.
        # (SQLite lets one transaction write at a time and refuses a write based on a stale read.)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_ALL_TENANTS_LOCK, day.toordinal()])
    AllTenantsRollup.objects.filter(bucket_start=start).delete()
    AllTenantsWorkflowRollup.objects.filter(bucket_start=start).delete()
    AllTenantsModelRollup.objects.filter(bucket_start=start).delete()
    AllTenantsHourRollup.objects.filter(bucket_start__gte=start, bucket_start__lt=end).delete()
    keys = ("workflow_id", "model_id", "unknown_model_name", "environment")
    rows = _derive_from_daily(AllTenantsRollup, keys, start)
    rows += _derive_from_daily(AllTenantsModelRollup, keys[1:], start)
    rows += _derive_hours(start, end)
    return rows + _derive_from_daily(AllTenantsWorkflowRollup, ("workflow_id",), start)


def _derive_hours(start: datetime, end: datetime) -> int:
    """INSERT ... SELECT the hourly rows of [start, end) of every tenant summed per hour into
    `AllTenantsHourRollup` (none outside the hourly retention window: there are no hourly rows)."""
    quote = connection.ops.quote_name
    adapt = connection.ops.adapt_datetimefield_value
    measures = ", ".join(quote(m) for m in MEASURES)
    sql = (
        f"INSERT INTO {quote(AllTenantsHourRollup._meta.db_table)} ({quote('bucket_start')}, {measures}) "
        f"SELECT {quote('bucket_start')}, {', '.join(f'SUM({quote(m)})' for m in MEASURES)} "
        f"FROM {quote(UsageRollup._meta.db_table)} WHERE {quote('grain')} = %s AND {quote('bucket_start')} >= %s "
        f"AND {quote('bucket_start')} < %s GROUP BY {quote('bucket_start')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [UsageRollup.Grain.HOUR, adapt(start), adapt(end)])
        return max(cursor.rowcount, 0)


def _derive_from_daily(model, keys: tuple[str, ...], start: datetime, tenant_id: int | None = None) -> int:
    """INSERT ... SELECT the day's daily rows summed by `keys` into `model`'s table: one statement,
    no rows through Python, plain SQL that PostgreSQL and SQLite both run."""
    quote = connection.ops.quote_name
    columns = ", ".join(quote(c) for c in keys)
    where = f"{quote('grain')} = %s AND {quote('bucket_start')} = %s"
    params: list = [UsageRollup.Grain.DAY, connection.ops.adapt_datetimefield_value(start)]
    if tenant_id is not None:
        where += f" AND {quote('tenant_id')} = %s"
        params.append(tenant_id)
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({quote('bucket_start')}, {columns}, "
        f"{', '.join(quote(m) for m in MEASURES)}) "
        f"SELECT %s, {columns}, {', '.join(f'SUM({quote(m)})' for m in MEASURES)} "
        f"FROM {quote(UsageRollup._meta.db_table)} WHERE {where} GROUP BY {columns}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [connection.ops.adapt_datetimefield_value(start), *params])
        return max(cursor.rowcount, 0)


def _tag_rows(raw, tenant_id: int, start: datetime) -> list[UsageTagRollup]:
    # Tags are free-form JSON: summed in Python so the same code runs on PostgreSQL and SQLite.
    sums: dict[tuple, list[int]] = {}
    fields = ("workflow_id", "environment", "tags", *TOKEN_FIELDS, "cost_nanos", "priced")
    for workflow_id, env, tags, *tokens, cost, priced in raw.exclude(tags={}).values_list(*fields).iterator(2000):
        for key, value in (tags or {}).items():
            acc = sums.setdefault((workflow_id, env, key, value), [0] * 8)
            acc[0] += 1
            for i, n in enumerate(tokens, start=1):
                acc[i] += n
            acc[6] += cost or 0
            acc[7] += 0 if priced else 1
    return [
        UsageTagRollup(
            bucket_start=start,
            tenant_id=tenant_id,
            workflow_id=wf,
            environment=env,
            tag_key=key,
            tag_value=value,
            **dict(zip(MEASURES, acc, strict=True)),
        )
        for (wf, env, key, value), acc in sums.items()
    ]


@dataclass
class RefreshResult:
    days: int = 0
    rows: int = 0
    remaining: int = 0
    pruned_hourly: int = 0
    skipped_days: int = 0  # UTC days another refresh was working on


# Two refreshes at once (a refresh that outlasts its minute, two workers, `rebuild_rollups --jobs`) split
# the work by UTC day: each claims a day (a session advisory lock, key (_DAY_CLAIM_LOCK, day ordinal)) and
# recomputes all its marked tenant-days, then the day's all-tenant rows, exactly as one refresh alone
# does; a day claimed by another is left to it. Without the claim both would take the same oldest marks
# and take turns on each tenant-day's lock: correct, but never in parallel.
_DAY_CLAIM_LOCK = 0x72646179


def _days_claimed_elsewhere() -> list[date]:
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s::oid "
            "AND objsubid = 2 AND pid <> pg_backend_pid() "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [_DAY_CLAIM_LOCK],
        )
        return [date.fromordinal(row[0]) for row in cursor.fetchall()]


def _day_claim(day: date) -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite: one worker, one writer
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_DAY_CLAIM_LOCK, day.toordinal()])
        return bool(cursor.fetchone()[0])


def _day_release(day: date) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_DAY_CLAIM_LOCK, day.toordinal()])


def rollups_refresh(*, limit: int = 500) -> RefreshResult:
    """Recompute the marked tenant-days of the days of the oldest `limit` marks (each day whole, days
    another refresh has claimed left to it) and prune old hourly rows."""
    result = RefreshResult()
    days = list(
        RollupDirtyDay.objects.exclude(day__in=_days_claimed_elsewhere())
        .order_by("day", "tenant_id")
        .values_list("day", flat=True)[:limit]
    )
    for day, _ in itertools.groupby(days):
        if not _day_claim(day):
            result.skipped_days += 1  # claimed since the list was read
            continue
        try:
            # Read again under the claim: another refresh may have done the day since the list was read.
            day_marks = list(
                RollupDirtyDay.objects.filter(day=day).order_by("tenant_id").values_list("id", "tenant_id", "marked_at")
            )
            for i, (mark_id, tenant_id, marked_at) in enumerate(day_marks):
                # The day's AllTenantsRollup rows are recomputed once, with its last tenant-day of this batch:
                # if the run stops before that, the last mark is still set and the next run does it.
                last_of_day = i + 1 == len(day_marks)
                with transaction.atomic():
                    result.rows += rollup_recompute_day(tenant_id=tenant_id, day=day, all_tenants=last_of_day)
                    # Cleared only if unchanged: a day re-marked meanwhile stays marked for the next run.
                    RollupDirtyDay.objects.filter(id=mark_id, marked_at=marked_at).delete()
                result.days += 1
        finally:
            _day_release(day)
    result.pruned_hourly, _ = UsageRollup.objects.filter(
        grain=UsageRollup.Grain.HOUR, bucket_start__lt=hourly_retention_start()
    ).delete()
    AllTenantsHourRollup.objects.filter(bucket_start__lt=hourly_retention_start()).delete()
    result.remaining = RollupDirtyDay.objects.count()
    if result.days:
        logger.info(
            "rollups: recomputed %s tenant-days (%s rows), %s still marked", result.days, result.rows, result.remaining
        )
    return result


def rollups_rebuild(*, tenant_ids: Iterable[int] | None = None, progress=None, jobs: int = 1) -> RefreshResult:
    """Mark every tenant-day that has usage and recompute them all (after a bulk load or a restore).

    `jobs` > 1 (PostgreSQL): that many forked processes, each draining the days the others have not
    claimed. `progress` gets the running totals (in parallel: days done and still marked, rows at the end)."""
    rollups_mark_all(tenant_ids=tenant_ids)
    if jobs <= 1 or connection.vendor != "postgresql":
        return rollups_drain(progress=progress)
    return _drain_in_parallel(jobs, progress)


def _drain_job(_job: int) -> tuple[int, int]:
    from django.db import connections

    try:
        result = rollups_drain()
        return result.days, result.rows
    finally:
        connections.close_all()


def _drain_in_parallel(jobs: int, progress) -> RefreshResult:
    import multiprocessing

    from django.db import connections

    marked = RollupDirtyDay.objects.count()
    connections.close_all()  # each forked job opens its own connection
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        pending = pool.map_async(_drain_job, range(jobs))
        while not pending.ready():
            pending.wait(10)
            if progress is not None:
                left = RollupDirtyDay.objects.count()
                progress(RefreshResult(days=max(marked - left, 0), remaining=left))
                connections.close_all()
        parts = pending.get()
    # A job stops when what is left is claimed by another; a day re-marked by ingest meanwhile is done here.
    rest = rollups_drain()
    total = RefreshResult(
        days=sum(d for d, _ in parts) + rest.days, rows=sum(r for _, r in parts) + rest.rows, remaining=rest.remaining
    )
    if progress is not None:
        progress(total)
    return total


def rollups_mark_all(*, tenant_ids: Iterable[int] | None = None) -> int:
    """Mark every tenant-day that has usage (of these tenants) for recomputation; returns how many."""
    raw = UsageRecord.objects.all()
    if tenant_ids is not None:
        raw = raw.filter(tenant_id__in=list(tenant_ids))
    pairs = list(raw.annotate(day=TruncDate("occurred_at", tzinfo=UTC)).values_list("tenant_id", "day").distinct())
    rollup_mark_dirty(pairs=pairs)
    return len(pairs)


def rollups_drain(*, progress=None) -> RefreshResult:
    """Recompute marked tenant-days until none is left that another refresh is not working on."""
    total = RefreshResult()
    while True:
        step = rollups_refresh(limit=200)
        total.days += step.days
        total.rows += step.rows
        total.remaining = step.remaining
        if progress is not None and step.days:
            progress(total)
        if not step.days or not step.remaining:
            return total
