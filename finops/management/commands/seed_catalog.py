from django.core.management.base import BaseCommand

from finops.services.seed import catalog_counts_format, catalog_seed


class Command(BaseCommand):
    help = (
        "Load the shipped model catalog and public list prices. Creates missing tiers, models and prices; "
        "never changes existing rows (operators own the catalog once seeded) and lists rows that differ."
    )

    def add_arguments(self, parser):
        parser.add_argument("--quiet", action="store_true", help="Print only the one-line summary.")

    def handle(self, *args, quiet: bool = False, **options):
        counts = catalog_seed(stdout=None if quiet else self.stdout)
        self.stdout.write(catalog_counts_format(counts))
