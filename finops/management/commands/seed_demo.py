from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from finops.services import seed


class Command(BaseCommand):
    help = (
        "Load the demo data set (seeds the catalog first): six tenants, ten workflows, demo people and keys, "
        "and hourly usage for the last --days days. Safe to rerun: only hours not stored yet are added. "
        "The demo password and keys are public: never run this against a real deployment."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=75, help="Days of usage to generate, ending now (75).")
        parser.add_argument("--quiet", action="store_true", help="No progress output, only the summary.")
        parser.add_argument(
            "--allow-public-credentials",
            action="store_true",
            help="Run even with DJANGO_DEBUG off (the demo login and keys are published in the README).",
        )

    def handle(self, *args, days: int = 75, quiet: bool = False, **options):
        if days < 1:
            raise CommandError("--days must be at least 1.")
        if not settings.DEBUG and not options.get("allow_public_credentials"):
            raise CommandError(
                "Refusing to load demo data with DJANGO_DEBUG off: its password and API keys are public. "
                "Use DJANGO_DEBUG=true for a local demo, or pass --allow-public-credentials if you mean it."
            )
        out = None if quiet else self.stdout
        self.stdout.write(seed.catalog_counts_format(seed.catalog_seed(stdout=out)))
        summary = seed.demo_seed(days=days, stdout=out)
        span = ""
        if summary.first_at is not None:
            span = f" from {summary.first_at:%Y-%m-%d %H:%M} to {summary.last_at:%Y-%m-%d %H:%M} UTC"
        self.stdout.write(
            f"demo: {summary.tenants} tenants, {summary.workflows} workflows, {summary.users} users; "
            f"usage {summary.records_created:,} new, {summary.records_total:,} stored{span} "
            f"({summary.unpriced_records:,} unpriced) in {summary.seconds:.1f} s"
        )
        members = ", ".join(username for username, _, _ in seed.DEMO_MEMBERS)
        self.stdout.write(f"Sign in: {seed.DEMO_USERNAME} / {seed.DEMO_PASSWORD} (operator)")
        self.stdout.write(f"Tenant members, same password: {members}")
        self.stdout.write(
            f"Demo API key ({seed.DEMO_TENANT_SLUG}; ingest, preflight, read, manage): {seed.DEMO_API_KEY}"
        )
        self.stdout.write(f"Demo platform key: {seed.DEMO_PLATFORM_KEY}")
