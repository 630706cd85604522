import json
from datetime import date
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from finops.services.catalog_import import LITELLM, PROJECT, catalog_import_apply, catalog_import_plan
from tenants.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Load model prices from the project's catalog JSON or LiteLLM's model_prices_and_context_window.json "
        "as new effective-dated prices. Never changes or removes an existing price; --dry-run shows what would "
        "change and writes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--dry-run", action="store_true", help="Show the changes, write nothing.")
        parser.add_argument("--format", choices=[PROJECT, LITELLM], help="Default: detected from the file.")
        parser.add_argument(
            "--effective-from",
            help="When the prices start (ISO datetime with zone). LiteLLM format: default now; project "
            "format: overrides each price's own start.",
        )
        parser.add_argument("--taken-on", help="LiteLLM format: the day the file was taken (YYYY-MM-DD).")
        parser.add_argument("--source", default="", help="LiteLLM format: where the file came from.")
        parser.add_argument("--show-unchanged", action="store_true", help="List unchanged prices too.")

    def handle(self, *args, file: Path, dry_run: bool, **options):
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot read {file}: {exc}") from exc
        when = None
        if options.get("effective_from"):
            when = parse_datetime(options["effective_from"])
            if when is None or when.tzinfo is None:
                raise CommandError("--effective-from must be an ISO datetime with a zone, e.g. 2026-01-01T00:00:00Z.")
        taken = date.fromisoformat(options["taken_on"]) if options.get("taken_on") else None
        try:
            plan = catalog_import_plan(
                data=data,
                fmt=options.get("format"),
                effective_from=when,
                price_taken_on=taken,
                source=options["source"],
            )
        except ApplicationError as exc:
            raise CommandError(str(exc)) from exc
        for change in plan.changes:
            if change.status != "unchanged" or options["show_unchanged"]:
                self.stdout.write(change.describe())
        if plan.unknown_models and options["verbosity"] > 1:
            self.stdout.write("not in the catalog: " + ", ".join(plan.unknown_models[:50]))
        self.stdout.write(plan.summary())
        if dry_run:
            self.stdout.write("dry run: nothing written")
            return
        created = catalog_import_apply(plan=plan)
        self.stdout.write(f"created {created} prices; records they cover are re-priced in the background")
