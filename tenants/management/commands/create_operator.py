from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from tenants.services import audit_record, set_password_link


class Command(BaseCommand):
    help = (
        "Create an operator (staff, sees every tenant) and print a one-time link to set the password. "
        "The first step of a real deployment: the operator then creates tenants, keys and budgets in the app."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", default="", help="Where the operator can be reached (optional).")

    def handle(self, *args, username: str, email: str, **options):
        users = get_user_model()
        if users.objects.filter(username=username).exists():
            raise CommandError(f"'{username}' exists already; sign in as them, or choose another username.")
        with transaction.atomic():
            user = users(username=username, email=email, is_staff=True, is_superuser=True)
            user.set_unusable_password()
            user.save()
            audit_record(action="operator.create", target=user, after={"username": username})
        link = set_password_link(user)
        self.stderr.write(
            f"Created operator '{username}'. Open this link once to choose the password (it stops working once "
            "used, or after PASSWORD_RESET_TIMEOUT); links start with PUBLIC_BASE_URL:"
        )
        self.stdout.write(link)
