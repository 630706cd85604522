"""What the weekday forecast costs the control ladder's minute run (`budgets_evaluate`).

Since the forecast rung acts on the weekday-pattern forecast, each minute run reads the rollups of every
budget with a hard limit (29 days, or the window's start if earlier: daily rows, then hourly rows summed
per local day, one query per time zone). This bench loads rollups for many tenants and workflows
(daily rows for 60 days, hourly rows for the hourly retention), creates budgets of every period and
scope in two time zones, and times the minute run three ways in the same process:

- `run_rate`: the ladder with the weekday forecasts left out (`levels_forecasts` answers nothing): the
  ladder as it was before, the reference;
- `weekday`: the ladder as it is;
- `forecasts only`: `levels_forecasts` alone (the rollup reads and the arithmetic).

    .venv/bin/python bench/ladder_forecast.py                   # 200 tenants x 10 workflows, 600 budgets
    .venv/bin/python bench/ladder_forecast.py --tenants 50 --runs 3

It drops and recreates its own database (default `finops_ladderbench`; the name must contain "bench").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.ingest import django_setup, log, recreate_database  # noqa: E402 - after the sys.path line above

USD = 1_000_000_000


def load(*, tenants: int, workflows: int, days: int, now: datetime) -> int:
    from django.conf import settings

    from budgets.models import Budget
    from finops.models import UsageRollup, Workflow
    from tenants.models import Tenant

    ts = Tenant.objects.bulk_create([Tenant(slug=f"t{i}", name=f"Tenant {i}") for i in range(tenants)])
    wfs = Workflow.objects.bulk_create([Workflow(slug=f"w{i}", name=f"Workflow {i}") for i in range(workflows)])
    today = datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC)
    hourly_days = settings.ROLLUP_HOURLY_RETENTION_DAYS
    rows = 0
    for t_index, tenant in enumerate(ts):
        batch = []
        for w_index, wf in enumerate(wfs):
            base = (1 + (t_index * 7 + w_index * 3) % 11) * USD // 10
            for k in range(days, -1, -1):
                day = today - timedelta(days=k)
                amount = base if day.weekday() < 5 else base // 4
                batch.append(UsageRollup(grain="day", bucket_start=day, tenant=tenant, workflow=wf,
                                         environment="prod", calls=100, cost_nanos=amount))  # fmt: skip
                if k <= hourly_days:
                    batch += [
                        UsageRollup(
                            grain="hour",
                            bucket_start=day + timedelta(hours=h),
                            tenant=tenant,
                            workflow=wf,
                            environment="prod",
                            calls=4,
                            cost_nanos=amount // 24,
                        )  # fmt: skip
                        for h in range(24)
                        if day + timedelta(hours=h) < now
                    ]
        UsageRollup.objects.bulk_create(batch, batch_size=5000)
        rows += len(batch)
    budgets = []
    for t_index, tenant in enumerate(ts):
        zone = "UTC" if t_index % 2 else "America/New_York"
        budgets += [
            Budget(tenant=tenant, name=f"{tenant.slug} month", period="month", time_zone=zone,
                   hard_limit=40 * USD, soft_limit=30 * USD),
            Budget(tenant=tenant, name=f"{tenant.slug} week", period="week", time_zone=zone,
                   workflow=wfs[t_index % len(wfs)], hard_limit=5 * USD),
            Budget(tenant=tenant, name=f"{tenant.slug} day prod", period="day", time_zone=zone,
                   environment="prod", hard_limit=2 * USD),
        ]  # fmt: skip
    Budget.objects.bulk_create(budgets)
    return rows


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/finops_ladderbench")
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--workflows", type=int, default=10)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    recreate_database(args.db)
    django_setup(args.db)
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from budgets.models import Budget, BudgetWindow
    from budgets.periods import period_bounds
    from budgets.services import ladder

    call_command("migrate", verbosity=0)
    now = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    rows = load(tenants=args.tenants, workflows=args.workflows, days=args.days, now=now)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE finops_usagerollup")
    log(f"loaded {rows:,} rollup rows for {args.tenants} tenants x {args.workflows} workflows "
        f"in {time.perf_counter() - started:.1f} s")  # fmt: skip

    ladder.budgets_evaluate(now=now)  # opens the windows, starts what the first run starts
    budgets = list(Budget.objects.filter(is_active=True).select_related("tenant", "workflow", "tier"))
    windows = {w.budget_id: w for w in BudgetWindow.objects.filter(starts_at__lte=now, ends_at__gt=now)}
    pairs = [(b, windows[b.pk]) for b in budgets if b.pk in windows]
    assert len(pairs) == len(budgets), "every budget has its window after the first run"
    assert all(windows[b.pk].starts_at == period_bounds(b.period, b.time_zone, now)[0] for b in budgets)

    real = ladder.levels_forecasts
    with CaptureQueriesContext(connection) as queries:
        forecasts = real(pairs, now=now)
    rollup_reads = sum(1 for q in queries.captured_queries if "finops_usagerollup" in q["sql"])
    methods = statistics.multimode(f.method for f in forecasts.values())

    def evaluate() -> None:
        ladder.budgets_evaluate(now=now)

    def without_weekday() -> None:
        ladder.levels_forecasts = lambda pairs, *, now: {}  # type: ignore[assignment]
        try:
            ladder.budgets_evaluate(now=now)
        finally:
            ladder.levels_forecasts = real

    evaluate()
    without_weekday()  # warm both paths
    reference: list[float] = []
    weekday: list[float] = []
    for _ in range(args.runs):  # interleaved: load on the shared machine falls on both alike
        reference += timed(without_weekday, 1)
        weekday += timed(evaluate, 1)
    alone = timed(lambda: real(pairs, now=now), args.runs)
    ref = statistics.median(reference)
    print()
    scale = f"{len(budgets)} budgets ({args.tenants} tenants, 2 time zones), {rows:,} rollup rows"
    print(f"{scale}, {args.runs} runs each:")
    print(f"  rollup queries for all forecasts: {rollup_reads} (most common method: {', '.join(methods)})")
    for label, values in (("run_rate (reference)", reference), ("weekday", weekday), ("forecasts only", alone)):
        median = statistics.median(values)
        print(f"  {label:<22} median {median * 1000:8.1f} ms   min {min(values) * 1000:8.1f} ms   "
              f"{median / ref:5.2f} x reference")  # fmt: skip


if __name__ == "__main__":
    main()
