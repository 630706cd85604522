from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tenants.errors import ApplicationError
from tenants.models import Tenant
from tenants.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key. The secret is printed once, alone on the last line; only its hash is stored."

    def add_arguments(self, parser):
        owner = parser.add_mutually_exclusive_group(required=True)
        owner.add_argument("--tenant", metavar="SLUG", help="Tenant the key acts for.")
        owner.add_argument("--platform", action="store_true", help="A platform key: names the tenant per request.")
        parser.add_argument(
            "--scopes", default="ingest,preflight,read", help="Comma-separated: ingest,preflight,read,manage."
        )
        parser.add_argument("--name", required=True, help="What the key is for, e.g. 'support-bot prod'.")
        parser.add_argument("--expires-in-days", type=int, default=None, help="Expire the key after N days.")

    def handle(self, *args, **options):
        tenant = None
        if options["tenant"]:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                known = ", ".join(Tenant.objects.values_list("slug", flat=True)[:20]) or "none yet"
                raise CommandError(f"No tenant '{options['tenant']}'. Known tenants: {known}.")
        expires_at = None
        if options["expires_in_days"] is not None:
            if options["expires_in_days"] <= 0:
                raise CommandError("--expires-in-days must be a positive number of days.")
            expires_at = timezone.now() + timedelta(days=options["expires_in_days"])
        try:
            key, secret = api_key_create(
                tenant=tenant, name=options["name"], scopes=options["scopes"], expires_at=expires_at
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        owner = f"tenant {tenant.slug}" if tenant else "the platform (names the tenant per request)"
        self.stderr.write(
            f"Created key '{key.name}' (prefix {key.prefix}) for {owner} with scopes {', '.join(key.scopes)}"
            + (f", expiring {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else "")
            + ".\nStore the secret now: it is not shown again. Use it as 'Authorization: Bearer <secret>'."
        )
        self.stdout.write(secret)
