from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from finops.services.rollups import rollups_rebuild, rollups_refresh
from tenants.models import Tenant


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
            help="With --all, on PostgreSQL: N processes, each recomputing whole UTC days the others have not "
            "claimed (default 1).",
        )

    def handle(self, *args, **options):
        tenant_ids = None
        jobs = options["jobs"]
        if jobs < 1:
            raise CommandError("--jobs must be 1 or more.")
        if jobs > 1 and not options["all"]:
            raise CommandError("--jobs goes with --all.")
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

            def progress(r):
                written = f", {r.rows:,} rows written" if r.rows else ""
                self.stdout.write(f"rollups: {r.days:,} tenant-days done{written}, {r.remaining:,} still marked")

            result = rollups_rebuild(tenant_ids=tenant_ids, progress=progress, jobs=jobs)
        else:
            result = rollups_refresh(limit=100_000)
        self.stdout.write(
            f"Recomputed {result.days:,} tenant-days ({result.rows:,} rollup rows); {result.remaining:,} still marked."
        )
