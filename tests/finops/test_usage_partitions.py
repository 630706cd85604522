"""The usage table's monthly partitions (PostgreSQL): created ahead, a month without one loses nothing, raw
retention waits for complete rollups, and a request_id is stored once across months and concurrent batches."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.db.models import Sum
from django.test import override_settings

from finops import tasks as finops_tasks
from finops.celery import app
from finops.models import RollupDirtyDay, UsageKey, UsageRecord, UsageRollup
from finops.services.ingest import ACCEPTED, CONFLICT, DUPLICATE, usage_ingest
from finops.services.partitions import (
    DEFAULT_PARTITION,
    partitioned,
    usage_partition_create,
    usage_partitions,
    usage_partitions_maintain,
)
from finops.services.rollups import rollups_refresh
from tenants.models import AuditEvent


@pytest.fixture
def postgres_only():
    if connection.vendor != "postgresql":
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail("REQUIRE_SERVICES=1 needs DATABASE_URL on PostgreSQL")
        pytest.skip("the usage table is partitioned on PostgreSQL only (SQLite keeps one table)")


def _partition_of(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM finops_usagerecord WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def _records(prefix: str, n: int, at: datetime | None = None) -> list[dict]:
    extra = {"occurred_at": at.isoformat()} if at else {}
    return [
        {"request_id": f"{prefix}-{i}", "model": "gpt-4o", "input_tokens": 1000 + i, "output_tokens": 10, **extra}
        for i in range(n)
    ]


# --- partitions ahead, the default partition ------------------------------------------------------------------


@pytest.mark.django_db
def test_the_migration_partitions_the_table_and_the_job_creates_months_ahead(postgres_only):
    assert partitioned()
    names = {p.name for p in usage_partitions()}
    this_month = datetime.now(UTC).date().replace(day=1)
    assert f"finops_usagerecord_p{this_month:%Y_%m}" in names and DEFAULT_PARTITION in names

    result = usage_partitions_maintain(now=datetime(2032, 5, 10, tzinfo=UTC), ahead=2, retention_months=0)
    assert result.created == [
        "finops_usagerecord_p2032_05",
        "finops_usagerecord_p2032_06",
        "finops_usagerecord_p2032_07",
    ]
    by_name = {p.name: p for p in usage_partitions()}
    assert by_name["finops_usagerecord_p2032_06"].month == date(2032, 6, 1)
    # Run again (a second beat, tomorrow's run): nothing new.
    assert usage_partitions_maintain(now=datetime(2032, 5, 11, tzinfo=UTC), ahead=2).created == []


def test_the_task_is_on_the_beat_schedule():
    entry = app.conf.beat_schedule["maintain-usage-partitions"]
    assert entry["task"] == "finops.tasks.maintain_usage_partitions"


@pytest.mark.django_db
def test_a_record_of_a_month_without_partition_lands_in_the_default_and_is_moved(postgres_only, tenant_a, catalog):
    now = datetime(2033, 3, 10, 12, tzinfo=UTC)
    assert "finops_usagerecord_p2033_03" not in {p.name for p in usage_partitions()}
    batch = _records("late", 3, at=now - timedelta(hours=1))
    result = usage_ingest(records=batch, bound_tenant=tenant_a, now=now)
    assert result.count(ACCEPTED) == 3
    ids = [item.id for item in result.items]
    assert {_partition_of(pk) for pk in ids} == {DEFAULT_PARTITION}

    moved = finops_tasks.maintain_usage_partitions()
    assert moved["moved"] == 3 and "finops_usagerecord_p2033_03" in moved["created"]
    assert {_partition_of(pk) for pk in ids} == {"finops_usagerecord_p2033_03"}
    assert UsageRecord.objects.filter(id__in=ids).count() == 3
    # The keys still point at the moved rows: the batch replayed is all duplicates, nothing stored twice.
    again = usage_ingest(records=batch, bound_tenant=tenant_a, now=now)
    assert again.count(DUPLICATE) == 3 and [item.id for item in again.items] == ids
    assert UsageRecord.objects.filter(tenant=tenant_a).count() == 3


@pytest.mark.django_db
def test_metrics_show_rows_in_the_default_partition_and_months_ahead(postgres_only, tenant_a, catalog, settings):
    from tests.finops.test_metrics import TOKEN, scrape, value

    settings.METRICS_ACCESS, settings.METRICS_TOKEN = "token", TOKEN
    usage_partitions_maintain(ahead=2, retention_months=0)
    before = scrape()
    assert value(before, "tokenspend_usage_default_partition_rows") == 0
    assert value(before, "tokenspend_usage_partitions_ahead_months") >= 2
    # A month far ahead without a partition (the maintenance job not run): stored, and the gauge says so.
    at = datetime(2034, 7, 1, tzinfo=UTC)
    assert usage_ingest(records=_records("far", 2, at=at), bound_tenant=tenant_a, now=at).count(ACCEPTED) == 2
    assert value(scrape(), "tokenspend_usage_default_partition_rows") == 2
    usage_partitions_maintain(now=at, ahead=0, retention_months=0)
    after = scrape()
    assert value(after, "tokenspend_usage_default_partition_rows") == 0
    assert value(after, "tokenspend_usage_partitions_ahead_months") > value(
        before, "tokenspend_usage_partitions_ahead_months"
    )


# --- idempotency across months and concurrent batches -----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("platform", [False, True], ids=["tenant-key", "platform-key"])
def test_a_request_id_is_never_stored_twice_across_months(tenant_a, tenant_b, catalog, platform):
    """A record sent without occurred_at is stamped on arrival: its retry after midnight at the end of a month
    belongs to the next month's partition. Sent with another occurred_at, it is a conflict. Either way one row."""
    if connection.vendor == "postgresql":
        usage_partition_create(date(2031, 1, 1))
        usage_partition_create(date(2031, 2, 1))
    before, after = datetime(2031, 1, 31, 23, 59, 50, tzinfo=UTC), datetime(2031, 2, 1, 0, 0, 10, tzinfo=UTC)
    bound = None if platform else tenant_a
    tag = {"tenant": "acme"} if platform else {}
    batch = [{**r, **tag} for r in _records("edge", 2)]
    if platform:  # two tenants in the batch: the lookup joins on the list of (tenant, request_id)
        batch.append({**_records("edge", 1)[0], "tenant": "globex"})

    first = usage_ingest(records=batch, bound_tenant=bound, now=before)
    assert first.count(ACCEPTED) == len(batch)
    retry = usage_ingest(records=batch, bound_tenant=bound, now=after)
    assert retry.count(DUPLICATE) == len(batch)
    assert [i.id for i in retry.items] == [i.id for i in first.items]

    moved = [{**r, "occurred_at": after.isoformat()} for r in batch]
    clash = usage_ingest(records=moved, bound_tenant=bound, now=after)
    assert clash.count(CONFLICT) == len(batch)
    assert UsageRecord.objects.filter(request_id__startswith="edge-").count() == len(batch)
    assert not UsageRecord.objects.filter(occurred_at__gte=datetime(2031, 2, 1, tzinfo=UTC)).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_concurrent_batches_with_the_same_request_ids_store_each_once(postgres_only, tenant_a, catalog, attempt):
    """Two clients send the same request ids at the same moment, one of them with occurred_at in another month
    (another partition): the key table's unique index makes one wait for the other, then see its rows."""
    now = datetime.now(UTC)
    last_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(hours=1)
    batches = [_records("race", 200), _records("race", 200, at=max(last_month, now - timedelta(days=20)))]
    barrier = threading.Barrier(2)

    def send(batch):
        try:
            barrier.wait(timeout=30)
            return usage_ingest(records=batch, bound_tenant=tenant_a, now=now)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(send, batches))

    assert UsageRecord.objects.filter(tenant=tenant_a, request_id__startswith="race-").count() == 200
    assert UsageKey.objects.filter(tenant=tenant_a, request_id__startswith="race-").count() == 200
    accepted = sorted(r.count(ACCEPTED) for r in results)
    assert accepted == [0, 200], accepted
    loser = next(r for r in results if r.count(ACCEPTED) == 0)
    # Different content (occurred_at was given in one batch only): the second comes back as conflicts.
    assert loser.count(CONFLICT) == 200


# --- retention -----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_retention_refuses_while_rollups_are_incomplete_and_the_rollups_survive_the_drop(
    postgres_only, tenant_a, catalog
):
    old = datetime(2024, 3, 15, 12, tzinfo=UTC)
    result = usage_ingest(records=_records("old", 5, at=old - timedelta(days=3)), bound_tenant=tenant_a, now=old)
    assert result.count(ACCEPTED) == 5
    cost = UsageRecord.objects.filter(tenant=tenant_a).aggregate(c=Sum("cost_nanos"))["c"]
    assert cost and RollupDirtyDay.objects.filter(day=date(2024, 3, 12)).exists()

    # The day is still marked dirty: its rollups do not stand for the raw records yet.
    first = usage_partitions_maintain(retention_months=13)
    assert first.moved_from_default == 5  # the month had no partition: it waited in the default one
    assert "finops_usagerecord_p2024_03" in first.refused and "marked" in first.refused["finops_usagerecord_p2024_03"]
    assert first.dropped == [] and UsageRecord.objects.filter(tenant=tenant_a).count() == 5

    # A mark cleared without its recompute (rollups lost): the counts disagree, and it still refuses.
    RollupDirtyDay.objects.all().delete()
    second = usage_partitions_maintain(retention_months=13)
    assert "daily rollups count 0 calls" in second.refused["finops_usagerecord_p2024_03"]
    assert UsageRecord.objects.filter(tenant=tenant_a).count() == 5

    RollupDirtyDay.objects.create(tenant=tenant_a, day=date(2024, 3, 12))
    rollups_refresh()
    third = usage_partitions_maintain(retention_months=13)
    assert third.dropped == ["finops_usagerecord_p2024_03"] and not third.refused
    assert "finops_usagerecord_p2024_03" not in {p.name for p in usage_partitions()}
    assert not UsageRecord.objects.filter(tenant=tenant_a).exists()
    assert not UsageKey.objects.filter(tenant=tenant_a).exists()
    daily = UsageRollup.objects.filter(tenant=tenant_a, grain=UsageRollup.Grain.DAY).aggregate(
        calls=Sum("calls"), cost=Sum("cost_nanos")
    )
    assert daily == {"calls": 5, "cost": cost}
    # A later mark on a dropped day (a re-pricing, a manual rebuild) does not recompute it from nothing.
    RollupDirtyDay.objects.create(tenant=tenant_a, day=date(2024, 3, 12))
    with override_settings(USAGE_RAW_RETENTION_MONTHS=13):
        rollups_refresh()
    assert (
        UsageRollup.objects.filter(tenant=tenant_a, grain=UsageRollup.Grain.DAY).aggregate(
            calls=Sum("calls"), cost=Sum("cost_nanos")
        )
        == daily
    )
    event = AuditEvent.objects.get(action="usage.partition_drop")
    assert event.after["partition"] == "finops_usagerecord_p2024_03" and event.after["records"] == 5


@pytest.mark.django_db
def test_retention_never_reaches_the_backfill_window_or_recent_months(postgres_only, tenant_a, catalog):
    now = datetime.now(UTC)
    usage_ingest(records=_records("new", 2, at=now - timedelta(days=30)), bound_tenant=tenant_a, now=now)
    rollups_refresh()
    result = usage_partitions_maintain(retention_months=1)
    assert result.dropped == [] and UsageRecord.objects.filter(tenant=tenant_a).count() == 2


# --- the command -------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_command_lists_partitions_with_rows_and_creates_a_month(postgres_only, tenant_a, catalog):
    usage_ingest(records=_records("cmd", 2), bound_tenant=tenant_a)
    out = StringIO()
    call_command("usage_partitions", "--exact", "--create", "2034-07", stdout=out)
    text = out.getvalue()
    this_month = datetime.now(UTC).date().replace(day=1)
    assert "partition ready: finops_usagerecord_p2034_07" in text
    assert f"finops_usagerecord_p{this_month:%Y_%m}" in text and "counting finops_usagerecord_default" in text
    assert "raw retention: off" in text and ", 2 rows," in text
    with pytest.raises(CommandError, match="YYYY-MM"):
        call_command("usage_partitions", "--create", "2034-13", stdout=StringIO())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stray", [False, True], ids=["empty-default", "rows-to-move"])
def test_ingest_into_a_month_whose_partition_is_being_created_loses_nothing(postgres_only, tenant_a, catalog, stray):
    """The maintenance job creates a month's partition (and moves that month's rows out of the default
    partition) while a batch of the same month arrives: the batch waits for the partition's lock, then
    is stored in the new partition, all of it, without an error."""
    import psycopg

    month = date(2036, 5 if stray else 4, 1)  # one month per case, dropped at the end (--reuse-db keeps DDL)
    name = f"finops_usagerecord_p{month:%Y_%m}"
    at = datetime(month.year, month.month, 15, 12, tzinfo=UTC)
    if stray:  # rows of the month already in the default partition: the function's move-then-attach path
        assert usage_ingest(records=_records("early", 3, at=at), bound_tenant=tenant_a, now=at).count(ACCEPTED) == 3
    settings_dict = connection.settings_dict
    creator = psycopg.connect(
        dbname=settings_dict["NAME"],
        user=settings_dict["USER"],
        host=settings_dict["HOST"] or None,
        port=settings_dict["PORT"] or None,
        password=settings_dict["PASSWORD"] or None,
    )
    try:
        assert creator.execute("SELECT to_regclass(%s)", [name]).fetchone()[0] is None
        creator.execute("SELECT finops_usage_month_partition(%s)", [month])  # holds its locks

        def send():
            try:
                return usage_ingest(records=_records("during", 50, at=at), bound_tenant=tenant_a, now=at)
            finally:
                connections.close_all()

        with ThreadPoolExecutor(1) as pool:
            sending = pool.submit(send)
            _wait_until_waiting_on_a_lock(creator)
            creator.commit()
            result = sending.result(timeout=30)
        assert result.count(ACCEPTED) == 50, [i.status for i in result.items][:5]
        rows = UsageRecord.objects.filter(tenant=tenant_a, occurred_at=at)
        assert rows.count() == 50 + (3 if stray else 0)
        assert {_partition_of(pk) for pk in rows.values_list("pk", flat=True)} == {name}
        assert UsageKey.objects.filter(tenant=tenant_a, request_id__startswith="during-").count() == 50
    finally:
        creator.rollback()
        creator.execute(f'DROP TABLE IF EXISTS "{name}"')  # its rows' keys go with the test's flush
        creator.commit()
        creator.close()


def _wait_until_waiting_on_a_lock(creator) -> None:
    for _ in range(400):
        waiting = creator.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE NOT l.granted AND d.datname = current_database()"
        ).fetchone()[0]
        if waiting:
            return
        threading.Event().wait(0.05)
    pytest.fail("the batch never waited for the partition being created")
