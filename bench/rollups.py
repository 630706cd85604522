"""Rollup writes, old and new in one run: the full rebuild and the busiest tenant-day's recompute.

A tenant-day's daily, hourly and tag rows used to be aggregated by the ORM, built in Python (token
histograms, tag sums) and bulk-created; on PostgreSQL they are now `INSERT ... SELECT ... GROUP BY`
(`finops/services/rollups.py`: `_write_rows_sql`). The Python path is still the code SQLite runs
(`_write_rows_python`, unchanged from commit 56e5a79 apart from its name), so this bench times both on
the same records in the same run by switching `_ROW_WRITERS` for PostgreSQL:

1. loads `--records` usage records with bench/dashboard.py's generator (same tenants, workflows,
   models, tags, seasonality; its own database, default `finops_rollupbench`);
2. `rollups_rebuild()` of every tenant-day from empty rollup tables, `--rounds` times per writer,
   alternating (old, new, old, new, ...); after the first round, every row of the seven rollup tables
   written by the new writer is compared with the old one's (EXCEPT both ways, histograms included);
3. `rollup_recompute_day` of the largest tenant's busiest day among the last 7 (so with hourly rows),
   `--runs` times per writer, alternating, with the time spent in SQL from Django's query log.

Prints each time, the other load on the machine meanwhile, and old / new (the speed-up; target 2x).

    .venv/bin/python bench/rollups.py --records 2000000 --wait-quiet 30
    .venv/bin/python bench/rollups.py --quick          # 500,000 records, 1 round, 5 runs: a smoke run
    .venv/bin/python bench/rollups.py --reuse          # keep the records of a previous run

Figures and method: docs/performance.md, section "Dashboards" -> "Rollups".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import psycopg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.dashboard import (  # noqa: E402 - after the sys.path line above
    DAYS,
    ROLLUP_TABLES,
    TABLE,
    DashboardCpuMeter,
    create_dimensions,
    load_records,
    make_plan,
    meta_get,
    meta_set,
    open_bench_database,
    profile_recompute_day,
    vacuum,
)
from bench.ingest import BenchError, log, machine_facts  # noqa: E402

TARGET_SPEEDUP = 2.0
# Every column but the id, per table: what "the same rows" means.
COMPARED = {
    "finops_usagerollup": "grain, bucket_start, tenant_id, workflow_id, model_id, unknown_model_name, environment, "
    "token_hist",
    "finops_usagetagrollup": "bucket_start, tenant_id, workflow_id, environment, tag_key, tag_value",
    "finops_tenantworkflowrollup": "bucket_start, tenant_id, workflow_id",
    "finops_tenantdayrollup": "bucket_start, tenant_id",
    "finops_alltenantsrollup": "bucket_start, workflow_id, model_id, unknown_model_name, environment",
    "finops_alltenantsworkflowrollup": "bucket_start, workflow_id",
    "finops_alltenantsmodelrollup": "bucket_start, model_id, unknown_model_name, environment",
    "finops_alltenantshourrollup": "bucket_start",
}
MEASURE_COLUMNS = (
    "calls, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nanos, "
    "unpriced_calls"
)


def writer(name: str):
    """A context in which PostgreSQL writes a tenant-day's rows with the old (Python) or new (SQL) writer."""
    from finops.services import rollups

    if name not in ("old", "new"):
        raise ValueError(name)
    chosen = rollups._write_rows_python if name == "old" else rollups._write_rows_sql
    return mock.patch.dict(rollups._ROW_WRITERS, {"postgresql": chosen})


def truncate_rollups(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(ROLLUP_TABLES)}, finops_rollupdirtyday")
        conn.execute("CHECKPOINT")


def rebuild(name: str) -> tuple[float, object]:
    from finops.services.rollups import rollups_rebuild

    started = time.perf_counter()
    last = [started]

    def progress(total) -> None:
        now = time.perf_counter()
        if now - last[0] >= 15 or not total.remaining:
            last[0] = now
            log(f"    {total.days:,}/{total.days + total.remaining:,} tenant-days, {total.rows:,} rows, "
                f"{now - started:.0f} s")  # fmt: skip

    with writer(name):
        result = rollups_rebuild(progress=progress)
    return time.perf_counter() - started, result


def snapshot_rollups(db: str) -> None:
    """Copies of every rollup table (without ids) to compare the next writer's rows with."""
    with psycopg.connect(db, autocommit=True) as conn:
        for table, keys in COMPARED.items():
            conn.execute(f"DROP TABLE IF EXISTS bench_old_{table}")
            conn.execute(f"CREATE TABLE bench_old_{table} AS SELECT {keys}, {MEASURE_COLUMNS} FROM {table}")


def rollup_differences(db: str) -> dict[str, int]:
    out = {}
    with psycopg.connect(db, autocommit=True) as conn:
        for table, keys in COMPARED.items():
            new = f"SELECT {keys}, {MEASURE_COLUMNS} FROM {table}"
            old = f"SELECT * FROM bench_old_{table}"
            diff = f"(({new}) EXCEPT ALL ({old})) UNION ALL (({old}) EXCEPT ALL ({new}))"
            out[table] = conn.execute(f"SELECT count(*) FROM ({diff}) d").fetchone()[0]
            conn.execute(f"DROP TABLE bench_old_{table}")
    return {t: n for t, n in out.items() if n}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/finops_rollupbench",
        help="dropped and recreated unless --reuse; its name must contain 'bench' (default %(default)s)",
    )
    p.add_argument("--records", type=int, default=2_000_000, help="usage records to load (default %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="full rebuilds per writer (default %(default)s)")
    p.add_argument("--runs", type=int, default=9, help="busiest tenant-day recomputes per writer (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="500,000 records, 1 round, 5 runs: a smoke run")
    p.add_argument("--reuse", action="store_true", help="keep the records a previous run loaded into the database")
    p.add_argument("--seed", type=int, default=7, help="random seed of the data set (default %(default)s)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=60,
        help="wait up to this many seconds before each timing for other processes to go quiet (default %(default)s)",
    )
    p.add_argument("--check", action="store_true", help=f"exit 1 when a speed-up is under {TARGET_SPEEDUP}x")
    args = p.parse_args(argv)
    if args.quick:
        args.records = min(args.records, 500_000)
        args.rounds, args.runs = 1, min(args.runs, 5)
    return args


def main(argv=None) -> int:  # noqa: C901 - one linear script
    args = parse_args(argv)
    db = args.database_url
    name = urlsplit(db).path.lstrip("/")
    if "bench" not in name:
        raise SystemExit(f"Refusing to use database {name!r}: the bench database's name must contain 'bench'.")
    meta = open_bench_database(db, records=args.records, seed=args.seed, reuse=args.reuse)
    for fact, value in machine_facts(db):
        log(f"{fact}: {value}")
    meter = DashboardCpuMeter(db)

    if meta is None:
        from finops.services.seed import catalog_seed

        catalog_seed()
        plan = make_plan(args.seed)
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        start = end - timedelta(days=DAYS)
        create_dimensions(plan, start, end, args.seed)
        meta_set(db, {"records": "0", "seed": str(args.seed), "start": start.isoformat(), "end": end.isoformat()})
        log(f"Loading {args.records:,} records (bench/dashboard.py's generator, INSERT ... SELECT per day)")
        loaded, seconds, _phases = load_records(db, args.records, start, end - timedelta(hours=1))
        log(f"  loaded {loaded:,} records in {seconds:.0f} s; VACUUM ANALYZE: {vacuum(db, [TABLE]):.0f} s")
        meta_set(db, {"records": str(args.records), "loaded": str(loaded)})
        meta = meta_get(db)
    start, end = datetime.fromisoformat(meta["start"]), datetime.fromisoformat(meta["end"])
    with psycopg.connect(db, autocommit=True) as conn:
        records = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
        tenant_id, slug, tenant_records = conn.execute(
            f"SELECT t.id, t.slug, count(*) FROM {TABLE} u JOIN tenants_tenant t ON t.id = u.tenant_id"
            " GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 1"
        ).fetchone()
        day, day_records = conn.execute(
            f"SELECT (occurred_at AT TIME ZONE 'UTC')::date, count(*) FROM {TABLE} WHERE tenant_id = %s"
            " AND occurred_at >= %s GROUP BY 1 ORDER BY 2 DESC LIMIT 1",
            [tenant_id, end - timedelta(days=7)],
        ).fetchone()
    log(f"{records:,} records from {start:%Y-%m-%d} to {end:%Y-%m-%d %H:%M} UTC; largest tenant {slug} "
        f"({tenant_records:,}); its busiest recent day {day} ({day_records:,} records)")  # fmt: skip

    # 1. Full rebuild, alternating writers from empty tables; the first new rebuild's rows checked against the old.
    rebuilds: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    facts = ""
    for round_ in range(args.rounds):
        for which in ("old", "new"):
            truncate_rollups(db)
            meter.wait_quiet(args.wait_quiet)
            log(f"rollups_rebuild() with the {which} writer (round {round_ + 1}/{args.rounds})")
            before = meter.snapshot()
            seconds, result = rebuild(which)
            other = meter.background(before)
            rebuilds[which].append((seconds, other))
            facts = f"{result.days:,} tenant-days, {result.rows:,} rows"
            log(f"  {facts} in {seconds:.1f} s ({result.days / seconds:.1f} tenant-days/s, other load {other:.0%})")
            if round_ == 0 and which == "old":
                snapshot_rollups(db)
            elif round_ == 0:
                differences = rollup_differences(db)
                if differences:
                    raise BenchError(f"the new writer's rollup rows differ from the old one's: {differences}")
                log("  every row of the seven rollup tables equals the old writer's (histograms included)")

    # 2. The busiest tenant-day, alternating writers (the rows it replaces are there: a refresh's case).
    recomputes: dict[str, list[dict]] = {"old": [], "new": []}
    meter.wait_quiet(args.wait_quiet)
    before = meter.snapshot()
    for which in ("old", "new"):  # one untimed run each: caches warm for both
        with writer(which):
            profile_recompute_day(tenant_id, day)
    for _ in range(args.runs):
        for which in ("old", "new"):
            with writer(which):
                recomputes[which].append(profile_recompute_day(tenant_id, day))
    day_other = meter.background(before)

    print()
    print(f"Rollup writes on {records:,} records ({facts} per rebuild); other load shown per rebuild")
    print(f"{'':44} {'old (Python)':>14} {'new (SQL)':>14} {'old / new':>10}")
    speedups = []
    old_best, new_best = min(s for s, _ in rebuilds["old"]), min(s for s, _ in rebuilds["new"])
    speedups.append(old_best / new_best)
    print(f"{'rollups_rebuild(), best of ' + str(args.rounds):44} {old_best:>12.1f} s {new_best:>12.1f} s "
          f"{old_best / new_best:>9.2f}x")  # fmt: skip
    for which in ("old", "new"):
        runs = ", ".join(f"{s:.1f} s ({o:.0%} other)" for s, o in rebuilds[which])
        print(f"    {which}: {runs}")
    med = {w: statistics.median(r["seconds"] for r in recomputes[w]) for w in recomputes}
    sql = {w: statistics.median(r["sql_seconds"] for r in recomputes[w]) for w in recomputes}
    queries = {w: len(recomputes[w][0]["queries"]) for w in recomputes}
    speedups.append(med["old"] / med["new"])
    label = f"recompute {slug} {day} ({day_records:,} rec), p50 of {args.runs}"
    print(f"{label:44} {med['old'] * 1000:>11.0f} ms {med['new'] * 1000:>11.0f} ms {med['old'] / med['new']:>9.2f}x")
    for which in ("old", "new"):
        print(f"    {which}: SQL {sql[which] * 1000:.0f} ms in {queries[which]} queries, "
              f"Python {(med[which] - sql[which]) * 1000:.0f} ms; rows {recomputes[which][0]['rows']:,}")  # fmt: skip
    print(f"    other load during the recomputes: {day_other:.0%}")
    missed = [s for s in speedups if s < TARGET_SPEEDUP]
    print(f"Target: at least {TARGET_SPEEDUP}x on both: {'met' if not missed else 'MISSED'}")
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
