"""The usage table's storage layout: what ingest's COPY costs on the monthly-partitioned table (with its
idempotency-key trigger) against the single table it replaced, in the same run on the same rows.

Ingest writes each batch with one COPY in its own transaction (finops/services/ingest.py). This bench COPYs the
same rows, in transactions of --batch rows as ingest does, alternately into:

- `partitioned`: finops_usagerecord as migration 0016 leaves it on PostgreSQL (RANGE partitions by month, primary
  key (id, occurred_at), the statement trigger that writes finops_usagekey (tenant_id, request_id));
- `single`: a table built like finops_usagerecord was before 0016 (primary key (id), UNIQUE (tenant_id,
  request_id), the same other indexes and tenant foreign key), in the same database.

Each round measures both (the order alternates), and the ratio partitioned/single is printed per round and for
the best of each, with the share of the machine other processes used meanwhile. The API path on top of this is
unchanged by the layout; bench/ingest.py measures it end to end.

Then (--explain-rows, 0 skips) it loads rows over several months and prints EXPLAIN ANALYZE of the queries that
read raw usage on hot paths, to show which partitions each one touches (docs/performance.md quotes them).

    .venv/bin/python bench/usage_layout.py                 # 100,000 rows, 3 rounds, EXPLAIN on 400,000 rows
    .venv/bin/python bench/usage_layout.py --quick         # 10,000 rows, 1 round, EXPLAIN on 50,000 rows

It drops and recreates its own database (default `finops_bench_layout`; the name must contain "bench").
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.ingest import CpuMeter, django_setup, log, recreate_database  # noqa: E402

TABLE = "finops_usagerecord"
SINGLE = "bench_usage_single"
TENANTS = 5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/finops_bench_layout")
    parser.add_argument("--rows", type=int, default=100_000, help="rows per measurement (default 100000)")
    parser.add_argument("--batch", type=int, default=1000, help="rows per COPY transaction (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each measuring both layouts (default 3)")
    parser.add_argument("--wait-quiet", type=float, default=60, help="seconds to wait for a quiet machine per phase")
    parser.add_argument(
        "--explain-rows",
        type=int,
        default=400_000,
        help="then load this many rows over --explain-months months and EXPLAIN the hot queries (0 skips)",
    )
    parser.add_argument("--explain-months", type=int, default=8, help="months the EXPLAIN data spans (default 8)")
    parser.add_argument("--quick", action="store_true", help="10,000 rows, 1 round, EXPLAIN on 50,000 rows")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.rounds, args.explain_rows = 10_000, 1, 50_000
    return args


def build_single_table(conn: psycopg.Connection) -> None:
    """The pre-0016 layout, beside the partitioned table, with the same columns in the same order."""
    fk = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f'", [TABLE]
    ).fetchone()[0]
    for statement in (
        f"CREATE TABLE {SINGLE} (LIKE {TABLE} INCLUDING DEFAULTS)",
        f"ALTER TABLE {SINGLE} ADD PRIMARY KEY (id)",
        f"ALTER TABLE {SINGLE} ADD CONSTRAINT {SINGLE}_unique UNIQUE (tenant_id, request_id)",
        f"CREATE INDEX {SINGLE}_tenant_time ON {SINGLE} (tenant_id, occurred_at, id)",
        f"CREATE INDEX {SINGLE}_unpriced ON {SINGLE} (model_name) WHERE NOT priced",
        f"CREATE INDEX {SINGLE}_time ON {SINGLE} USING brin (occurred_at)",
        f"ALTER TABLE {SINGLE} ADD CONSTRAINT {SINGLE}_tenant {fk}",
    ):
        conn.execute(statement)


def make_rows(names: list[str], tenant_ids: list[int], n: int, days: int = 35) -> list[tuple]:
    """Rows like ingest's: occurred_at over the last 35 days (two or three months' partitions), JSON tags as text."""
    rng = random.Random(42)
    now = datetime.now(UTC)
    models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "claude-haiku-4-5", "gemini-2.5-flash"]
    rows = []
    for i in range(n):
        values = {
            "id": i + 1,
            "tenant_id": tenant_ids[i % len(tenant_ids)],
            "workflow_id": None,
            "model_id": None,
            "model_name": rng.choice(models),
            "environment": "prod",
            "input_tokens": rng.randint(100, 5000),
            "cached_input_tokens": 0,
            "cache_write_tokens": 0,
            "output_tokens": rng.randint(10, 800),
            "reasoning_tokens": 0,
            "cost_nanos": rng.randint(10_000, 50_000_000),
            "priced": True,
            "price_id": None,
            "tokens_counted": False,
            "tokens_estimated": False,
            "occurred_at": now - timedelta(seconds=rng.randint(0, days * 86400)),
            "received_at": now,
            "request_id": f"req-{i:09d}-{rng.getrandbits(40):010x}",
            "content_hash": f"{rng.getrandbits(128):032x}",
            "reservation_id": None,
            "api_key_id": None,
            "tags": orjson.dumps({"team": rng.choice(["search", "support", "growth"])}).decode(),
            "prompt_version": "",
            "cache_write_1h_tokens": 0,
            "service_tier": "standard",
            "channel": "api",
            "price_rule": "",
        }
        rows.append(tuple(values[name] for name in names))
    return rows


def copy_into(db: str, table: str, names: list[str], rows: list[tuple], batch: int) -> float:
    with psycopg.connect(db) as conn:
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names))
        )
        started = time.perf_counter()
        for start in range(0, len(rows), batch):
            with conn.cursor() as cursor, cursor.copy(statement) as copy:
                for row in rows[start : start + batch]:
                    copy.write_row(row)
            conn.commit()
        return time.perf_counter() - started


def explain(db: str, names: list[str], tenant_ids: list[int], rows: int, months: int) -> None:
    """EXPLAIN (ANALYZE) of the queries that read raw usage on the hot paths, on `months` months of data."""
    import re

    from django.db import connection

    from finops.models import UsageRecord
    from finops.services.ingest import stored_lookup_sql
    from finops.services.partitions import add_months, month_start, usage_partition_create
    from finops.services.rollups import _aggregates, _unknown_model_name, day_bounds

    today = datetime.now(UTC).date()
    for i in range(months + 1):
        usage_partition_create(add_months(month_start(today), -i))
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLE}")
    log(f"EXPLAIN: loading {rows:,} rows over {months} months")
    data = make_rows(names, tenant_ids, rows, days=months * 30)
    copy_into(db, TABLE, names, data, 10_000)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TABLE}")
        cursor.execute("ANALYZE finops_usagekey")
        cursor.execute("SELECT count(DISTINCT tableoid) FROM finops_usagerecord")
        print(f"\n## EXPLAIN on {rows:,} rows in {cursor.fetchone()[0]} monthly partitions ({TENANTS} tenants)")
    rng = random.Random(7)
    tenant = tenant_ids[0]
    index = names.index("request_id")
    own = [r[index] for r in data if r[names.index("tenant_id")] == tenant]
    own_ids = [r[names.index("id")] for r in data if r[names.index("tenant_id")] == tenant]
    stored = rng.sample(own, 1000)
    mixed = rng.sample(data, 1500)

    def show(title: str, query: str, params) -> None:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + query, params)
            lines = [re.sub(r"'\{[^}]{80,}\}'", "'{...}'", row[0]) for row in cursor.fetchall()]
        print(f"\n### {title}\n")
        print("\n".join("    " + line for line in lines))

    show(
        "ingest duplicate lookup, a tenant key's batch (1,000 stored request ids)",
        *stored_lookup_sql([tenant] * 1000, stored),
    )
    show(
        "ingest duplicate lookup, a platform key's batch (1,500 stored request ids of 5 tenants)",
        *stored_lookup_sql([r[names.index("tenant_id")] for r in mixed], [r[index] for r in mixed]),
    )
    start, end = day_bounds(today - timedelta(days=20))
    raw = UsageRecord.objects.filter(tenant_id=tenant, occurred_at__gte=start, occurred_at__lt=end)
    daily = (
        raw.annotate(unknown_model_name=_unknown_model_name())
        .values("workflow_id", "model_id", "unknown_model_name", "environment")
        .annotate(**_aggregates())
        .order_by()
    )
    show("rollup recompute of one tenant-day: the daily GROUP BY", *daily.query.sql_with_params())
    page = UsageRecord.objects.filter(tenant_id=tenant).order_by("-occurred_at", "-id")[:51]
    show("the usage list page: a tenant's newest 50 records", *page.query.sql_with_params())
    export = (
        UsageRecord.objects.filter(
            tenant_id__in=tenant_ids[:2], occurred_at__gte=start - timedelta(days=6), occurred_at__lt=end
        )
        .order_by("tenant_id", "occurred_at", "id")
        .values_list("id", "cost_nanos")
    )
    show("the FOCUS export: two tenants, one week", *export.query.sql_with_params())
    one = UsageRecord.objects.filter(tenant_id=tenant, pk=own_ids[-1])
    show(
        "one record by id (the record page): no occurred_at, so every partition's primary key is probed",
        *one.query.sql_with_params(),
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    db = args.database_url
    log(f"Recreating {db.rsplit('/', 1)[-1]} and migrating")
    recreate_database(db)
    django_setup(db)
    from django.core.management import call_command

    from tenants.models import Tenant

    call_command("migrate", verbosity=0)
    tenant_ids = [Tenant.objects.create(slug=f"bench-{i}", name=f"Bench {i}").pk for i in range(TENANTS)]
    with psycopg.connect(db, autocommit=True) as conn:
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [TABLE]).fetchone()[0]
        if kind != "p":
            raise SystemExit(f"{TABLE} is not partitioned here (relkind {kind!r}): run this on a branch with 0016.")
        build_single_table(conn)
        names = [
            r[0]
            for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
                "ORDER BY attnum",
                [TABLE],
            ).fetchall()
        ]
    rows = make_rows(names, tenant_ids, args.rows)
    meter = CpuMeter(db)
    results: dict[str, list[tuple[float, float]]] = {"partitioned": [], "single": []}
    for round_ in range(args.rounds):
        order = ["partitioned", "single"] if round_ % 2 == 0 else ["single", "partitioned"]
        for layout in order:
            table = TABLE if layout == "partitioned" else SINGLE
            with psycopg.connect(db, autocommit=True) as conn:
                conn.execute(f"TRUNCATE {table}")  # the partitioned table's trigger empties finops_usagekey too
                conn.execute("CHECKPOINT")
            meter.wait_quiet(args.wait_quiet)
            before = meter.snapshot()
            seconds = copy_into(db, table, names, rows, args.batch)
            load = meter.background(before)
            results[layout].append((args.rows / seconds, load))
            log(f"round {round_ + 1}: {layout}: {args.rows / seconds:,.0f} rows/s, other load {load:.0%}")
    with psycopg.connect(db, autocommit=True) as conn:
        keys = conn.execute("SELECT count(*) FROM finops_usagekey").fetchone()[0]
        parts = conn.execute(
            "SELECT count(DISTINCT tableoid) FROM finops_usagerecord",
        ).fetchone()[0]
    meter.conn.close()

    print(f"\n## Usage layout: COPY of {args.rows:,} rows in {args.batch:,}-row transactions, {args.rounds} rounds\n")
    print("| layout | best rows/s | rounds, rows/s | other load |")
    print("|---|---:|---|---|")
    for layout, runs in results.items():
        best = max(r for r, _ in runs)
        print(
            f"| {layout} | {best:,.0f} | {' / '.join(f'{r / 1000:.1f}k' for r, _ in runs)} | "
            f"{' / '.join(f'{load:.0%}' for _, load in runs)} |"
        )
    ratios = [p / s for (p, _), (s, _) in zip(results["partitioned"], results["single"], strict=True)]
    best_ratio = max(r for r, _ in results["partitioned"]) / max(r for r, _ in results["single"])
    print(f"\npartitioned / single: best {best_ratio:.2f}; per round {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"(last round: {parts} partitions written, {keys:,} keys in finops_usagekey)")
    if args.explain_rows:
        explain(db, names, tenant_ids, args.explain_rows, args.explain_months)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
