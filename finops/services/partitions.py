"""Monthly partitions of the usage table on PostgreSQL: created ahead, and raw months dropped after retention.

Migration 0016 made `finops_usagerecord` a table partitioned by RANGE (occurred_at), one partition per UTC
month named `finops_usagerecord_pYYYY_MM`, plus `finops_usagerecord_default` for a record whose month has
no partition yet: no record is ever refused or lost for a missing partition. The database function
`finops_usage_month_partition(day)` creates a month's partition and first moves that month's rows out of
the default partition. `usage_partitions_maintain` (the `maintain-usage-partitions` beat task, daily)
creates USAGE_PARTITIONS_AHEAD months ahead, empties the default partition into proper months, and, with
USAGE_RAW_RETENTION_MONTHS set, detaches and drops raw months whose rollups are complete.

A month's raw records go only when (a) the month ended more than USAGE_RAW_RETENTION_MONTHS months ago and
before the ingest backfill window (USAGE_BACKFILL_DAYS), so no late record can be sent for it any more;
(b) no tenant-day in it is marked dirty; (c) its daily rollups count exactly the partition's records.
Dashboards, budgets and the spend API read rollups, so they keep showing the dropped months.

SQLite (the embedded default) has one unpartitioned table: every function here is a no-op there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from finops.models import RollupDirtyDay, UsageRollup
from tenants.services import audit_record

logger = logging.getLogger(__name__)

TABLE = "finops_usagerecord"
DEFAULT_PARTITION = f"{TABLE}_default"
_MONTH_NAME = re.compile(rf"^{TABLE}_p(\d{{4}})_(\d{{2}})$")


@dataclass(frozen=True)
class Partition:
    name: str
    month: date | None  # None: the default partition
    rows: int  # an estimate (pg_class.reltuples) unless counted
    bytes: int  # table + indexes + TOAST
    exact: bool = False


@dataclass
class MaintenanceResult:
    created: list[str] = field(default_factory=list)
    moved_from_default: int = 0
    dropped: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # partition -> why it was kept


def partitioned() -> bool:
    """True when the usage table is partitioned (PostgreSQL after migration 0016)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(%s)", [TABLE])
        row = cursor.fetchone()
    return bool(row and row[0])


def month_start(day: date) -> date:
    return day.replace(day=1)


def add_months(month: date, n: int) -> date:
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def month_bounds(month: date) -> tuple[datetime, datetime]:
    return datetime(month.year, month.month, 1, tzinfo=UTC), datetime.combine(
        add_months(month, 1), datetime.min.time(), tzinfo=UTC
    )


def usage_partitions(*, exact: bool = False, progress: Callable[[str], None] | None = None) -> list[Partition]:
    """Every partition of the usage table, oldest month first, the default partition last."""
    if not partitioned():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid) "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        rows = cursor.fetchall()
        found = []
        for name, estimate, size in rows:
            match = _MONTH_NAME.match(name)
            month = date(int(match[1]), int(match[2]), 1) if match else None
            count, is_exact = estimate, False
            if exact or name == DEFAULT_PARTITION:
                if progress:
                    progress(f"counting {name}")
                cursor.execute(f'SELECT count(*) FROM "{name}"')
                count, is_exact = cursor.fetchone()[0], True
            found.append(Partition(name=name, month=month, rows=count, bytes=size, exact=is_exact))
    return sorted(found, key=lambda p: (p.month is None, p.month or date.min))


def partition_months() -> list[date]:
    """The months that have their own partition, oldest first (no counting, no sizes: cheap)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        names = [row[0] for row in cursor.fetchall()]
    return sorted(date(int(m[1]), int(m[2]), 1) for m in map(_MONTH_NAME.match, names) if m)


def usage_partition_create(month: date) -> str:
    """Create the partition of `month` (any day in it), moving its rows out of the default partition."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT finops_usage_month_partition(%s)", [month_start(month)])
        return cursor.fetchone()[0]


def _default_months() -> list[date]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date FROM {DEFAULT_PARTITION}"
        )
        return sorted(row[0] for row in cursor.fetchall())


def retention_cutoff(now: datetime | None = None, months: int | None = None) -> date | None:
    """The first month kept: raw months before it may be dropped. None when retention is off."""
    now = now or timezone.now()
    months = settings.USAGE_RAW_RETENTION_MONTHS if months is None else months
    if not months:
        return None
    by_age = add_months(month_start(now.date()), -months)
    # Never a month that ingest still accepts records for (the backfill window).
    by_backfill = month_start((now - timedelta(days=settings.USAGE_BACKFILL_DAYS)).date())
    return min(by_age, by_backfill)


def raw_month_dropped(day: date, now: datetime | None = None) -> bool:
    """True when `day`'s raw records were dropped by retention: its rollups are then final, and recomputing
    them from (no) raw records would erase them. Only months before the retention cutoff are looked up."""
    cutoff = retention_cutoff(now)
    if cutoff is None or day >= cutoff or not partitioned():
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NULL", [f"{TABLE}_p{day:%Y_%m}"])
        return bool(cursor.fetchone()[0])


def _rollups_incomplete(partition: Partition) -> str | None:
    """Why the month's rollups cannot stand in for its raw records yet, or None when they can."""
    assert partition.month is not None
    start, end = month_bounds(partition.month)
    dirty = RollupDirtyDay.objects.filter(day__gte=start.date(), day__lt=end.date()).count()
    if dirty:
        return f"{dirty} tenant-day(s) still marked for a rollup recompute"
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{partition.name}"')
        raw = cursor.fetchone()[0]
    rolled = (
        UsageRollup.objects.filter(
            grain=UsageRollup.Grain.DAY, bucket_start__gte=start, bucket_start__lt=end
        ).aggregate(calls=Sum("calls"))["calls"]
        or 0
    )
    if rolled != raw:
        return f"daily rollups count {rolled:,} calls, the partition holds {raw:,} records"
    return None


def _drop(partition: Partition) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE {TABLE} DETACH PARTITION "{partition.name}"')
        # The month's idempotency keys go with it: ingest refuses records older than the backfill window,
        # which the cutoff never reaches, so no retry can land in a dropped month.
        cursor.execute(
            f'DELETE FROM finops_usagekey k USING "{partition.name}" u '
            "WHERE k.tenant_id = u.tenant_id AND k.request_id = u.request_id AND k.usage_id = u.id"
        )
        keys = cursor.rowcount
        cursor.execute(
            f'SELECT count(*), pg_total_relation_size(%s::regclass) FROM "{partition.name}"', [partition.name]
        )
        rows, size = cursor.fetchone()
        cursor.execute(f'DROP TABLE "{partition.name}"')
        audit_record(
            action="usage.partition_drop",
            after={
                "partition": partition.name,
                "month": partition.month.isoformat() if partition.month else None,
                "records": rows,
                "keys": keys,
                "bytes": size,
            },
        )
    logger.warning("usage retention: dropped %s (%s records, %s bytes); its rollups stay", partition.name, rows, size)


def usage_partitions_maintain(
    *,
    now: datetime | None = None,
    ahead: int | None = None,
    retention_months: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> MaintenanceResult:
    """Create partitions ahead, move stray rows out of the default partition, apply raw retention."""
    result = MaintenanceResult()
    if not partitioned():
        return result
    now = now or timezone.now()
    ahead = settings.USAGE_PARTITIONS_AHEAD if ahead is None else ahead
    say = progress or (lambda message: None)

    existing = {p.name for p in usage_partitions()}
    for i in range(ahead + 1):
        month = add_months(month_start(now.date()), i)
        name = f"{TABLE}_p{month:%Y_%m}"
        if name not in existing:
            usage_partition_create(month)
            result.created.append(name)
            say(f"created {name}")

    for month in _default_months():
        with connection.cursor() as cursor:
            start, end = month_bounds(month)
            cursor.execute(
                f"SELECT count(*) FROM {DEFAULT_PARTITION} WHERE occurred_at >= %s AND occurred_at < %s", [start, end]
            )
            moved = cursor.fetchone()[0]
        name = usage_partition_create(month)
        result.moved_from_default += moved
        if name not in existing:
            result.created.append(name)
        logger.warning("usage partitions: %s records moved from the default partition to %s", moved, name)
        say(f"moved {moved:,} records from {DEFAULT_PARTITION} to {name}")

    cutoff = retention_cutoff(now, retention_months)
    if cutoff is not None:
        for partition in usage_partitions():
            if partition.month is None or partition.month >= cutoff:
                continue
            why = _rollups_incomplete(partition)
            if why:
                result.refused[partition.name] = why
                logger.warning("usage retention: kept %s: %s", partition.name, why)
                say(f"kept {partition.name}: {why}")
                continue
            _drop(partition)
            result.dropped.append(partition.name)
            say(f"dropped {partition.name}")
    return result
