from datetime import date

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from finops.services.partitions import (
    partitioned,
    retention_cutoff,
    usage_partition_create,
    usage_partitions,
    usage_partitions_maintain,
)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


class Command(BaseCommand):
    help = (
        "List the usage table's monthly partitions (PostgreSQL) with rows and sizes; --maintain does now what "
        "the daily maintain-usage-partitions task does (create months ahead, empty the default partition, "
        "apply USAGE_RAW_RETENTION_MONTHS); --create YYYY-MM creates one month's partition."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--exact", action="store_true", help="Count rows (slow on big months) instead of estimates."
        )
        parser.add_argument("--maintain", action="store_true", help="Run the partition maintenance now.")
        parser.add_argument("--create", metavar="YYYY-MM", help="Create this month's partition.")

    def handle(self, *args, **options):
        if not partitioned():
            self.stdout.write("The usage table is not partitioned here (SQLite keeps one table): nothing to do.")
            return
        if options["create"]:
            try:
                year, month = (int(part) for part in options["create"].split("-"))
                day = date(year, month, 1)
            except ValueError:
                raise CommandError(f"--create takes a month as YYYY-MM, not '{options['create']}'.") from None
            self.stdout.write(f"partition ready: {usage_partition_create(day)}")
        if options["maintain"]:
            result = usage_partitions_maintain(progress=lambda line: self.stdout.write(line))
            self.stdout.write(
                f"maintenance: {len(result.created)} created, {result.moved_from_default:,} records moved from "
                f"the default partition, {len(result.dropped)} dropped, {len(result.refused)} kept for rollups"
            )
        cutoff = retention_cutoff()
        self.stdout.write(
            f"months ahead: {settings.USAGE_PARTITIONS_AHEAD}; raw retention: "
            + (f"{settings.USAGE_RAW_RETENTION_MONTHS} months (months before {cutoff:%Y-%m} go)" if cutoff else "off")
        )
        partitions = usage_partitions(exact=options["exact"], progress=lambda line: self.stdout.write(line))
        total_rows = total_bytes = 0
        for p in partitions:
            label = f"{p.month:%Y-%m}" if p.month else "default"
            rows = f"{p.rows:,}" if p.exact else f"~{p.rows:,}"
            self.stdout.write(f"{p.name:<32} {label:<8} {rows:>14} rows {_size(p.bytes):>12}")
            total_rows += p.rows
            total_bytes += p.bytes
        self.stdout.write(f"{len(partitions)} partitions, {total_rows:,} rows, {_size(total_bytes)}")
