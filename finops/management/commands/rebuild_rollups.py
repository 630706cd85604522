from django.core.management.base import BaseCommand, CommandError

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

    def handle(self, *args, **options):
        tenant_ids = None
        if options["tenant"]:
            if not options["all"]:
                raise CommandError("--tenant goes with --all.")
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"No tenant '{options['tenant']}'.")
            tenant_ids = [tenant.pk]
        if options["all"]:
            result = rollups_rebuild(
                tenant_ids=tenant_ids,
                progress=lambda r: self.stdout.write(f"rollups: {r.days:,} tenant-days, {r.rows:,} rows written"),
            )
        else:
            result = rollups_refresh(limit=100_000)
        self.stdout.write(
            f"Recomputed {result.days:,} tenant-days ({result.rows:,} rollup rows); {result.remaining:,} still marked."
        )
