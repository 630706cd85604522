import multiprocessing
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, connections

from finops.models import RollupDirtyDay
from finops.services.rollups import RefreshResult, rollups_drain, rollups_mark_all, rollups_refresh
from tenants.models import Tenant


def _drain(_job: int) -> tuple[int, int]:
    """One job of `--jobs`: a forked process with its own database connection."""
    try:
        result = rollups_drain()
        return result.days, result.rows
    finally:
        connections.close_all()


class Command(BaseCommand):
    help = (
        "Recompute rollups from raw usage. By default only the tenant-days marked by ingest or re-pricing "
        "(what the periodic job does); --all recomputes every day that has usage (after a bulk load or restore)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="Recompute every tenant-day with usage.")
        parser.add_argument("--tenant", metavar="SLUG", help="With --all: only this tenant.")
        parser.add_argument(
            "--jobs",
            type=int,
            default=1,
            metavar="N",
            help="PostgreSQL: N processes, each recomputing whole UTC days the others have not claimed (default 1).",
        )

    def handle(self, *args, **options):
        tenant_ids = None
        jobs = options["jobs"]
        if jobs < 1:
            raise CommandError("--jobs must be 1 or more.")
        if options["tenant"]:
            if not options["all"]:
                raise CommandError("--tenant goes with --all.")
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"No tenant '{options['tenant']}'.")
            tenant_ids = [tenant.pk]
        if jobs > 1 and connection.vendor != "postgresql":
            self.stdout.write("--jobs: SQLite writes one transaction at a time, so one job does the work.")
            jobs = 1
        if options["all"]:
            marked = rollups_mark_all(tenant_ids=tenant_ids)
            self.stdout.write(f"rollups: {marked:,} tenant-days marked for recomputation")
        if jobs == 1:
            if options["all"]:
                result = rollups_drain(
                    progress=lambda r: self.stdout.write(f"rollups: {r.days:,} tenant-days, {r.rows:,} rows written"),
                )
            else:
                result = rollups_refresh(limit=100_000)
        else:
            result = self._in_parallel(jobs)
        self.stdout.write(
            f"Recomputed {result.days:,} tenant-days ({result.rows:,} rollup rows); {result.remaining:,} still marked."
        )

    def _in_parallel(self, jobs: int) -> RefreshResult:
        connections.close_all()  # each forked job opens its own connection
        started = time.monotonic()
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            pending = pool.map_async(_drain, range(jobs))
            while not pending.ready():
                pending.wait(10)
                left = RollupDirtyDay.objects.count()
                self.stdout.write(
                    f"rollups: {jobs} jobs, {left:,} tenant-days still marked, {time.monotonic() - started:.0f} s"
                )
                connections.close_all()
            parts = pending.get()
        # A job stops when the marks left are claimed by another; anything still marked (a day re-marked by
        # ingest meanwhile) is done here, or by the next periodic refresh.
        rest = rollups_drain()
        return RefreshResult(
            days=sum(d for d, _ in parts) + rest.days,
            rows=sum(r for _, r in parts) + rest.rows,
            remaining=rest.remaining,
        )
