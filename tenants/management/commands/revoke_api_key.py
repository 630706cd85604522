from django.core.management.base import BaseCommand, CommandError

from tenants.models import ApiKey
from tenants.services import api_key_revoke


class Command(BaseCommand):
    help = "Revoke an API key by its prefix (or the full key). Takes effect on the next request."

    def add_arguments(self, parser):
        parser.add_argument("key", help="The key's prefix as listed in the admin, or the whole key.")

    def handle(self, *args, **options):
        value = options["key"].strip()
        prefix = value.split("_", 2)[1] if value.count("_") >= 2 else value
        key = ApiKey.objects.select_related("tenant").filter(prefix=prefix).first()
        if key is None:
            raise CommandError(f"No API key with prefix '{prefix}'.")
        if key.revoked_at is not None:
            self.stdout.write(
                f"Key '{key.name}' ({prefix}) was already revoked at {key.revoked_at:%Y-%m-%d %H:%M} UTC."
            )
            return
        api_key_revoke(key=key)
        self.stdout.write(f"Revoked key '{key.name}' ({prefix}). Requests with it now answer 401.")
