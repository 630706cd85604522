"""Rollups equal sums over raw records after ingest, late records, re-pricing and repeated runs."""

import csv
import io
import os
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from django.db import connection
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate

from finops.envelopes import EDGES
from finops.measures import MEASURES
from finops.models import (
    AllTenantsHourRollup,
    AllTenantsModelRollup,
    AllTenantsRollup,
    AllTenantsWorkflowRollup,
    ModelPrice,
    RollupDirtyDay,
    TenantDayRollup,
    TenantWorkflowRollup,
    UsageRecord,
    UsageRollup,
    UsageTagRollup,
)
from finops.selectors.spend import SpendQuery, spend_query
from finops.services import rollups
from finops.services.repricing import model_price_save
from finops.services.rollups import hourly_retention_start, rollups_refresh
from tenants.scope import TenantScope
from tests.factories import WorkflowFactory

pytestmark = pytest.mark.django_db
# Half past the previous hour: always in the past (ingest refuses the future), same day-split every run.
NOW = (datetime.now(UTC) - timedelta(hours=1)).replace(minute=30, second=0, microsecond=0)


def post(client, records):
    response = client.post("/api/v1/usage", orjson.dumps({"records": records}), content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def sample(prefix: str, n: int, *, hours_back: int = 50) -> list[dict]:
    models = ["gpt-4o", "o3", "claude-sonnet-4-5", "mystery-model"]
    return [
        {
            "request_id": f"{prefix}-{i}",
            "workflow": ["chat", "summary", "search"][i % 3],
            "model": models[i % 4],
            "environment": ["prod", "prod", "stage", "dev"][i % 4],
            "occurred_at": (NOW - timedelta(hours=(i * 7) % hours_back)).isoformat(),
            "input_tokens": 100 + i,
            "cached_input_tokens": i % 5 * 10,
            "output_tokens": 50 + 3 * i,
            "reasoning_tokens": i % 3,
            "tags": {"region": ["eu", "us"][i % 2]} if i % 3 else {},
        }
        for i in range(n)
    ]


def raw_by(dims: list[str], **filters) -> dict:
    qs = (
        UsageRecord.objects.filter(**filters)
        .values(*dims)
        .annotate(
            calls=Count("id"),
            cost=Sum("cost_nanos"),
            tokens_in=Sum("input_tokens"),
            unpriced=Count("id", Q(priced=False)),
        )
    )
    return {tuple(r[d] for d in dims): (r["calls"], r["cost"] or 0, r["tokens_in"], r["unpriced"]) for r in qs}


def rollup_by(dims: list[str], **filters) -> dict:
    qs = (
        UsageRollup.objects.filter(grain="day", **filters)
        .values(*dims)
        .annotate(
            calls=Sum("calls"), cost=Sum("cost_nanos"), tokens_in=Sum("input_tokens"), unpriced=Sum("unpriced_calls")
        )
    )
    return {tuple(r[d] for d in dims): (r["calls"], r["cost"], r["tokens_in"], r["unpriced"]) for r in qs}


def by_day(rows, dims: list[str]) -> dict:
    """{(day, *dims): (calls, cost, input tokens, unpriced)} from rows carrying those sums."""
    return {
        (r["day"], *(r[d] for d in dims)): (r["calls"], r["cost"] or 0, r["tokens_in"], r["unpriced"]) for r in rows
    }


def coarse_by_day(model, dims: list[str]) -> dict:
    rows = (
        model.objects.annotate(day=TruncDate("bucket_start", tzinfo=UTC))
        .values("day", *dims)
        .annotate(
            calls=Sum("calls"), cost=Sum("cost_nanos"), tokens_in=Sum("input_tokens"), unpriced=Sum("unpriced_calls")
        )
    )
    return by_day(rows, dims)


def raw_by_day(dims: list[str]) -> dict:
    rows = (
        UsageRecord.objects.annotate(day=TruncDate("occurred_at", tzinfo=UTC))
        .values("day", *dims)
        .annotate(
            calls=Count("id"),
            cost=Sum("cost_nanos"),
            tokens_in=Sum("input_tokens"),
            unpriced=Count("id", Q(priced=False)),
        )
    )
    return by_day(rows, dims)


def assert_rollups_match_raw():
    for dims in (["tenant_id"], ["tenant_id", "workflow_id", "model_id", "environment"]):
        assert rollup_by(dims) == raw_by(dims)
    # The coarser daily tables: every day and key equal to the raw records (one row per key and day).
    tenant_workflow = ["tenant_id", "workflow_id"]
    assert coarse_by_day(TenantWorkflowRollup, tenant_workflow) == raw_by_day(tenant_workflow)
    assert TenantWorkflowRollup.objects.count() == len(raw_by_day(tenant_workflow))
    everyone = ["workflow_id", "model_id", "environment"]
    assert coarse_by_day(AllTenantsRollup, everyone) == raw_by_day(everyone)
    assert coarse_by_day(TenantDayRollup, ["tenant_id"]) == raw_by_day(["tenant_id"])
    assert TenantDayRollup.objects.count() == len(raw_by_day(["tenant_id"]))
    assert coarse_by_day(AllTenantsModelRollup, everyone[1:]) == raw_by_day(everyone[1:])
    model_keys = ("bucket_start", "model_id", "unknown_model_name", "environment")
    daily = UsageRollup.objects.filter(grain="day")
    assert AllTenantsModelRollup.objects.count() == daily.values(*model_keys).distinct().count()
    assert coarse_by_day(AllTenantsWorkflowRollup, ["workflow_id"]) == raw_by_day(["workflow_id"])
    assert AllTenantsWorkflowRollup.objects.count() == len(raw_by_day(["workflow_id"]))
    keys = ("bucket_start", *everyone, "unknown_model_name")
    assert AllTenantsRollup.objects.count() == UsageRollup.objects.filter(grain="day").values(*keys).distinct().count()
    # Every tenant's hours summed per hour (the all-tenant variance series), hour by hour.
    hours = dict(
        UsageRollup.objects.filter(grain="hour")
        .values_list("bucket_start")
        .annotate(cost=Sum("cost_nanos"))
        .order_by()
        .values_list("bucket_start", "cost")
    )
    assert dict(AllTenantsHourRollup.objects.values_list("bucket_start", "cost_nanos")) == hours
    hourly = UsageRollup.objects.filter(grain="hour").aggregate(c=Sum("calls"), cost=Sum("cost_nanos"))
    # Hourly rows cover the retention window only; daily rows all time.
    recent = UsageRecord.objects.filter(occurred_at__gte=hourly_retention_start())
    raw = recent.aggregate(c=Count("id"), cost=Sum("cost_nanos"))
    assert (hourly["c"], hourly["cost"]) == (raw["c"], raw["cost"])
    assert not RollupDirtyDay.objects.exists()


def test_rollups_equal_raw_sums_after_ingest_late_records_repricing_and_reruns(
    api_a, api_b, catalog, django_capture_on_commit_callbacks
):
    post(api_a.client, sample("a", 60))
    post(api_b.client, sample("b", 25))
    assert RollupDirtyDay.objects.count() >= 2
    rollups_refresh()
    assert_rollups_match_raw()
    rows_before = Counter(
        UsageRollup.objects.values_list(
            "grain",
            "bucket_start",
            "tenant_id",
            "workflow_id",
            "model_id",
            "unknown_model_name",
            "environment",
            "calls",
            "cost_nanos",
        )
    )

    # Running again changes nothing, even with every day marked again.
    from finops.services.rollups import rollups_rebuild

    rollups_rebuild()
    assert (
        Counter(
            UsageRollup.objects.values_list(
                "grain",
                "bucket_start",
                "tenant_id",
                "workflow_id",
                "model_id",
                "unknown_model_name",
                "environment",
                "calls",
                "cost_nanos",
            )
        )
        == rows_before
    )

    # A late record for an old day marks that day; the next run folds it in.
    late = sample("late", 1)
    late[0]["occurred_at"] = (NOW - timedelta(days=20)).isoformat()
    post(api_a.client, late)
    rollups_refresh()
    assert_rollups_match_raw()

    # A corrected price re-prices raw records and marks their days again.
    price = ModelPrice.objects.get(model=catalog["o3"])
    price.output = Decimal("9.00")
    with django_capture_on_commit_callbacks(execute=True):
        model_price_save(price=price)
    rollups_refresh()
    assert_rollups_match_raw()

    # Tag rollups: the sum per tag value equals the raw records carrying it.
    for value in ("eu", "us"):
        tagged = UsageRecord.objects.filter(tags__region=value).aggregate(c=Count("id"), cost=Sum("cost_nanos"))
        rolled = UsageTagRollup.objects.filter(tag_key="region", tag_value=value).aggregate(
            c=Sum("calls"), cost=Sum("cost_nanos")
        )
        assert (rolled["c"], rolled["cost"]) == (tagged["c"], tagged["cost"])


def test_a_day_marked_again_during_recompute_stays_marked(api_a, catalog, monkeypatch):
    post(api_a.client, sample("a", 3, hours_back=1))
    from finops.services import rollups

    real = rollups.rollup_recompute_day

    def racing(**kwargs):
        rows = real(**kwargs)
        # Another ingest touches the same day after the recompute read the raw records.
        rollups.rollup_mark_dirty(pairs=[(kwargs["tenant_id"], kwargs["day"])])
        return rows

    monkeypatch.setattr(rollups, "rollup_recompute_day", racing)
    rollups.rollups_refresh()
    assert RollupDirtyDay.objects.count() == 1
    monkeypatch.setattr(rollups, "rollup_recompute_day", real)
    rollups.rollups_refresh()
    assert not RollupDirtyDay.objects.exists()


def test_spend_query_groups_and_series_add_up(api_a, catalog):
    post(api_a.client, sample("a", 40))
    rollups_refresh()
    tenant_ids = [api_a.key.tenant_id]
    query = SpendQuery(start=NOW - timedelta(days=5), end=NOW + timedelta(days=1), group_by=("workflow", "model"))
    result = spend_query(scope=TenantScope.for_tenant_ids(tenant_ids), query=query)
    raw_total = UsageRecord.objects.aggregate(cost=Sum("cost_nanos"), calls=Count("id"))
    assert (result.totals.cost_nanos, result.totals.calls) == (raw_total["cost"], raw_total["calls"])
    assert sum(g.cost_nanos for g in result.groups) == raw_total["cost"]
    assert sum(p.cost_nanos for p in result.series) == raw_total["cost"]
    assert [g.cost_nanos for g in result.groups] == sorted((g.cost_nanos for g in result.groups), reverse=True)
    assert ("chat", "mystery-model") in {g.key for g in result.groups}
    assert sum(g.share for g in result.groups) == pytest.approx(1)

    tier = spend_query(
        scope=TenantScope.for_tenant_ids(tenant_ids),
        query=SpendQuery(start=query.start, end=query.end, group_by=("tier",)),
    )
    assert {g.key[0] for g in tier.groups} == {"standard", "premium", "(none)"}
    tagged = spend_query(
        scope=TenantScope.for_tenant_ids(tenant_ids),
        query=SpendQuery(start=query.start, end=query.end, group_by=("tag:region", "environment")),
    )
    assert {g.key[0] for g in tagged.groups} == {"eu", "us"} and tagged.source == "tag"
    hourly = spend_query(
        scope=TenantScope.for_tenant_ids(tenant_ids),
        query=SpendQuery(start=NOW - timedelta(days=3), end=query.end, granularity="hour"),
    )
    assert hourly.source == "hourly" and hourly.totals.calls == raw_total["calls"]


# --- the spend API ----------------------------------------------------------------------------------


def test_spend_api_for_a_tenant_key_and_cross_tenant_404(api_a, api_b, catalog):
    post(api_a.client, sample("a", 12))
    post(api_b.client, sample("marker-b", 5))
    rollups_refresh()
    body = api_a.client.get("/api/v1/spend", {"group_by": "workflow", "start": (NOW - timedelta(days=5)).isoformat()})
    assert body.status_code == 200
    data = body.json()
    expected = UsageRecord.objects.filter(tenant=api_a.key.tenant).aggregate(c=Sum("cost_nanos"))["c"]
    assert Decimal(data["totals"]["cost_usd"]) == Decimal(expected) / 10**9
    assert data["totals"]["calls"] == 12 and {g["key"]["workflow"] for g in data["groups"]} == {
        "chat",
        "summary",
        "search",
    }
    assert api_a.client.get("/api/v1/spend", {"tenant": "globex"}).status_code == 404
    both = api_a.client.get("/api/v1/spend", {"group_by": "tenant"}).json()
    assert [g["key"]["tenant"] for g in both["groups"]] == ["acme"]


def test_spend_api_platform_key_reads_all_tenants_or_one(api_platform, api_a, api_b, catalog):
    post(api_a.client, sample("a", 6))
    post(api_b.client, sample("b", 4))
    rollups_refresh()
    everyone = api_platform.client.get("/api/v1/spend", {"group_by": "tenant"}).json()
    assert {g["key"]["tenant"]: g["calls"] for g in everyone["groups"]} == {"acme": 6, "globex": 4}
    one = api_platform.client.get("/api/v1/spend", {"tenant": "globex"}).json()
    assert one["totals"]["calls"] == 4 and one["tenant"] == "globex"


def test_spend_csv_has_the_groups_and_a_total(api_a, catalog):
    post(api_a.client, sample("a", 9))
    rollups_refresh()
    response = api_a.client.get("/api/v1/spend.csv", {"group_by": "environment,model"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0][:3] == ["environment", "model", "calls"]
    assert rows[-1][0] == "total" and int(rows[-1][2]) == 9
    assert sum(int(r[2]) for r in rows[1:-1]) == 9


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"group_by": "colour"}, "invalid_group_by"),
        ({"group_by": "tenant,workflow,model"}, "invalid_group_by"),
        ({"granularity": "week"}, "invalid_granularity"),
        ({"start": "yesterday"}, "invalid_range"),
        ({"start": "2026-01-10", "end": "2026-01-01"}, "invalid_range"),
        ({"group_by": "tag:region,model"}, "invalid_group_by"),
        ({"granularity": "hour", "start": "2020-01-01"}, "invalid_range"),
    ],
)
def test_spend_api_explains_bad_queries(api_a, params, code):
    response = api_a.client.get("/api/v1/spend", params)
    assert response.status_code == 400 and response.json()["error"]["code"] == code


# --- a real worker ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_real_celery_worker_refreshes_rollups(api_a, catalog):
    """The beat task run by a real worker over the real broker (PostgreSQL + Redis in CI)."""
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if connection.vendor != "postgresql" or not broker.startswith("redis://"):
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail("REQUIRE_SERVICES=1 needs DATABASE_URL on PostgreSQL and CELERY_BROKER_URL on Redis")
        pytest.skip("needs PostgreSQL and a Redis broker (CI sets them)")
    post(api_a.client, sample("w", 30))
    settings_db = connection.settings_dict
    env = {
        **os.environ,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "DATABASE_URL": f"postgres://{settings_db['USER']}@{settings_db['HOST']}:{settings_db['PORT']}/"
        f"{settings_db['NAME']}",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "finops",
            "worker",
            "--pool=solo",
            "--loglevel=WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-Q",
            "rollups-test",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        from finops.celery import app

        for _ in range(2):  # twice: the second run must change nothing
            app.send_task("finops.tasks.refresh_rollups", queue="rollups-test")
        deadline = time.monotonic() + 60
        while RollupDirtyDay.objects.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(1.5)  # let the second task finish too
        assert not RollupDirtyDay.objects.exists(), "the worker did not refresh the rollups within 60 s"
        assert_rollups_match_raw()
    finally:
        worker.terminate()
        output = worker.communicate(timeout=20)[0].decode(errors="replace")
    assert "Traceback" not in output, output


def test_rebuild_rollups_command(api_a, catalog):
    from io import StringIO

    from django.core.management import call_command

    post(api_a.client, sample("a", 10))
    out = StringIO()
    call_command("rebuild_rollups", stdout=out)
    assert "Recomputed" in out.getvalue() and "0 still marked" in out.getvalue()
    UsageRollup.objects.all().delete()
    out = StringIO()
    call_command("rebuild_rollups", "--all", "--tenant", "acme", stdout=out)
    assert_rollups_match_raw()


def _postgres_only():
    if connection.vendor != "postgresql":
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail("REQUIRE_SERVICES=1 needs DATABASE_URL on PostgreSQL")
        pytest.skip("day claims are PostgreSQL advisory locks")


def test_a_day_another_refresh_claimed_is_left_to_it(api_a, api_b, catalog):
    """Two refreshes at once split the work by UTC day instead of taking turns on the same marks."""
    import psycopg

    _postgres_only()
    post(api_a.client, sample("a", 30, hours_back=72))
    post(api_b.client, sample("b", 30, hours_back=72))
    days = sorted(set(RollupDirtyDay.objects.values_list("day", flat=True)))
    assert len(days) >= 3
    claimed = days[1]
    other = psycopg.connect(
        dbname=connection.settings_dict["NAME"],
        user=connection.settings_dict["USER"],
        host=connection.settings_dict["HOST"] or None,
        port=connection.settings_dict["PORT"] or None,
        autocommit=True,
    )
    try:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [rollups._DAY_CLAIM_LOCK, claimed.toordinal()])
        result = rollups_refresh()
        # Everything but the claimed day is done; its marks wait for their claimant.
        assert set(RollupDirtyDay.objects.values_list("day", flat=True)) == {claimed}
        assert result.days > 0
        assert not UsageRollup.objects.filter(grain="day", bucket_start__date=claimed).exists()
    finally:
        other.close()  # the claimant goes away: its lock with it
    rollups_refresh()
    assert_rollups_match_raw()


@pytest.mark.django_db(transaction=True)
def test_rebuild_rollups_in_parallel_jobs_equals_the_raw_sums(api_a, api_b, catalog):
    from io import StringIO

    from django.core.management import CommandError, call_command

    _postgres_only()
    post(api_a.client, sample("a", 80, hours_back=24 * 9))
    post(api_b.client, sample("b", 80, hours_back=24 * 9))
    rollups_refresh()
    UsageRollup.objects.all().delete()
    AllTenantsRollup.objects.all().delete()
    tenant_days = UsageRecord.objects.annotate(day=TruncDate("occurred_at", tzinfo=UTC)).values("tenant_id", "day")
    out = StringIO()
    call_command("rebuild_rollups", "--all", "--jobs", "2", stdout=out)
    # Each tenant-day once: a day one job finished is not done again by the other.
    assert f"Recomputed {tenant_days.distinct().count():,} tenant-days" in out.getvalue(), out.getvalue()
    assert out.getvalue().rstrip().endswith("0 still marked."), out.getvalue()
    assert "tenant-days done" in out.getvalue()
    assert_rollups_match_raw()
    with pytest.raises(CommandError, match="--jobs goes with --all"):
        call_command("rebuild_rollups", "--jobs", "2")


@pytest.mark.parametrize("group_by", [(), ("workflow",), ("model",), ("tier", "environment"), ("tenant", "workflow")])
@pytest.mark.parametrize("scope", ["all", "one"])
def test_spend_query_equals_raw_whichever_table_answers(api_a, api_b, catalog, group_by, scope):
    post(api_a.client, sample("a", 30))
    post(api_b.client, sample("b", 17))
    rollups_refresh()
    tenant_ids = [api_a.key.tenant_id] if scope == "one" else None
    query = SpendQuery(start=NOW - timedelta(days=5), end=NOW + timedelta(days=1), group_by=group_by)
    result = spend_query(scope=TenantScope.for_tenant_ids(tenant_ids), query=query)
    raw = UsageRecord.objects.filter(**({"tenant_id__in": tenant_ids} if tenant_ids else {}))
    fields = {
        "tenant": "tenant__slug",
        "workflow": "workflow__slug",
        "model": "model__name",
        "tier": "model__tier__slug",
        "environment": "environment",
    }
    expected: Counter = Counter()
    calls: Counter = Counter()
    for row in raw.values(*(fields[d] for d in group_by), "model_name", "cost_nanos"):
        key = tuple(row[fields[d]] or (row["model_name"] if d == "model" else None) or "(none)" for d in group_by)
        expected[key] += row["cost_nanos"] or 0
        calls[key] += 1
    if group_by:
        assert {g.key: (g.cost_nanos, g.calls) for g in result.groups} == {k: (expected[k], calls[k]) for k in calls}
    assert (result.totals.cost_nanos, result.totals.calls) == (sum(expected.values()), sum(calls.values()))
    per_key: Counter = Counter()
    for p in result.series:
        per_key[p.key] += p.cost_nanos
    assert per_key == Counter({k: v for k, v in expected.items() if v} if group_by else {(): sum(expected.values())})


@pytest.mark.parametrize(
    ("tenant_ids", "group_by", "table"),
    [
        (None, ("workflow",), "finops_alltenantsworkflowrollup"),
        (None, (), "finops_tenantdayrollup"),
        (None, ("model",), "finops_alltenantsmodelrollup"),
        (None, ("tier", "environment"), "finops_alltenantsmodelrollup"),
        (None, ("workflow", "model"), "finops_alltenantsrollup"),
        (None, ("tenant",), "finops_tenantdayrollup"),
        ([1], ("workflow",), "finops_tenantworkflowrollup"),
        ([1], (), "finops_tenantdayrollup"),
        ([1], ("model",), "finops_usagerollup"),
        (None, ("tenant", "model"), "finops_usagerollup"),
    ],
)
def test_spend_query_reads_the_smallest_table_that_keeps_its_dimensions(tenant_ids, group_by, table):
    from django.test.utils import CaptureQueriesContext

    query = SpendQuery(start=NOW - timedelta(days=5), end=NOW, group_by=group_by)
    with CaptureQueriesContext(connection) as ctx:
        spend_query(scope=TenantScope.for_tenant_ids(tenant_ids), query=query)
    rollup_reads = [q["sql"] for q in ctx.captured_queries if "rollup" in q["sql"]]
    assert len(rollup_reads) == 1 and f'FROM "{table}"' in rollup_reads[0]


@pytest.mark.parametrize("group_by", [("workflow",), ("model", "environment"), ("tier",), ("tenant", "workflow")])
def test_spend_query_series_top_keeps_the_costliest_first_values_and_sums_the_rest(api_a, api_b, catalog, group_by):
    post(api_a.client, sample("a", 30))
    post(api_b.client, sample("b", 17))
    rollups_refresh()
    query = SpendQuery(start=NOW - timedelta(days=5), end=NOW + timedelta(days=1), group_by=group_by)
    full = spend_query(scope=TenantScope.system(), query=query)
    top = spend_query(scope=TenantScope.system(), query=query, series_top=2)
    assert (top.totals, top.groups) == (full.totals, full.groups)
    first: Counter = Counter()
    for g in full.groups:
        first[g.key[0]] += g.cost_nanos
    best = sorted(first, key=lambda k: (-first[k], k))[:2]
    by_key: Counter = Counter()
    by_bucket: Counter = Counter()
    for p in full.series:
        by_key[(p.key[0],) if p.key[0] in best else ()] += p.cost_nanos
        by_bucket[p.bucket] += p.calls
    assert {p.key for p in top.series} <= set(by_key)  # the top two values, and () for the rest
    top_by_key: Counter = Counter()
    top_by_bucket: Counter = Counter()
    for p in top.series:
        top_by_key[p.key] += p.cost_nanos
        top_by_bucket[p.bucket] += p.calls
    assert (top_by_key, top_by_bucket) == (by_key, by_bucket)


# --- the set-based writer (PostgreSQL) writes what the Python one writes ----------------------------


def _random_records(rng: random.Random, tenant, other_tenant, models, workflows, day_start) -> list[UsageRecord]:
    """Records of one tenant-day with token counts on, next to and between every histogram edge, unknown
    and unpriced models, tags or none; and records just outside the day and of another tenant."""
    records = []
    for i in range(600):
        model = rng.choice([*models, None])
        priced = model is not None and rng.random() < 0.9
        if i < 500:
            owner, when = tenant, day_start + timedelta(seconds=rng.randrange(86_400))
        else:  # must not count: the day before, the day after, another tenant
            owner, when = rng.choice(
                [
                    (tenant, day_start - timedelta(seconds=rng.randrange(1, 3600))),
                    (tenant, day_start + timedelta(days=1, seconds=rng.randrange(3600))),
                    (other_tenant, day_start + timedelta(seconds=rng.randrange(86_400))),
                ]
            )

        def tokens() -> int:
            edge = rng.choice(EDGES)
            return rng.choice([0, edge - 1, edge, edge + 1, rng.randrange(1, 2**20), rng.randrange(1, 50)])

        tags = rng.choice([{}, {}, {"region": rng.choice(["eu", "us"])}])
        if rng.random() < 0.3:
            tags = {**tags, rng.choice(["team", "feature flag", "ü"]): rng.choice(["a", "b", 'é "q"', ""])}
        records.append(
            UsageRecord(
                tenant=owner,
                workflow=rng.choice([*workflows, None]),
                model=model,
                model_name=model.name if model else rng.choice(["mystery", "other-model"]),
                environment=rng.choice(["prod", "stage", "dev"]),
                input_tokens=tokens(),
                cached_input_tokens=rng.choice([0, tokens()]),
                cache_write_tokens=rng.choice([0, 0, tokens()]),
                output_tokens=tokens(),
                reasoning_tokens=rng.choice([0, tokens()]),
                cost_nanos=rng.randrange(0, 10**12) if priced else None,
                priced=priced,
                occurred_at=when,
                received_at=when,
                request_id=f"rand-{i}",
                content_hash="x",
                tags=tags,
            )
        )
    return records


def _written_rows(tenant_id: int) -> Counter:
    rollups = UsageRollup.objects.filter(tenant_id=tenant_id).values_list(
        "grain", "bucket_start", "workflow_id", "model_id", "unknown_model_name", "environment", *MEASURES, "token_hist"
    )
    tags = UsageTagRollup.objects.filter(tenant_id=tenant_id).values_list(
        "bucket_start", "workflow_id", "environment", "tag_key", "tag_value", *MEASURES
    )
    return Counter(
        [(*row[:-1], orjson.dumps(row[-1], option=orjson.OPT_SORT_KEYS)) for row in rollups]
        + [("tag", *row) for row in tags]
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_set_based_rollup_writes_equal_the_python_ones_on_random_records(catalog, tenant_a, tenant_b, seed):
    if connection.vendor != "postgresql":
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail("REQUIRE_SERVICES=1 needs DATABASE_URL on PostgreSQL")
        pytest.skip("the set-based writer is PostgreSQL's (SQLite runs the Python one)")
    rng = random.Random(seed)
    day_start = datetime.combine(NOW.date() - timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    workflows = [WorkflowFactory(slug=f"wf-{n}") for n in range(3)]
    UsageRecord.objects.bulk_create(
        _random_records(rng, tenant_a, tenant_b, list(catalog.values()), workflows, day_start)
    )
    written = {}
    for writer in (rollups._write_rows_python, rollups._write_rows_sql):
        UsageRollup.objects.all().delete()
        UsageTagRollup.objects.all().delete()
        rows = writer(tenant_id=tenant_a.id, start=day_start, end=day_start + timedelta(days=1), hourly=True)
        written[writer.__name__] = _written_rows(tenant_a.id)
        assert rows == sum(written[writer.__name__].values())
    python, sql = written["_write_rows_python"], written["_write_rows_sql"]
    grains = Counter(row[0] for row in python.elements())
    assert grains["day"] > 20 and grains["hour"] > 100 and grains["tag"] > 20, grains  # the data reaches every kind
    assert sql == python
    # and the daily rows hold every record of the day (none of the others)
    assert sum(row[6] for row in sql.elements() if row[0] == "day") == 500
