"""Prometheus metrics: what the web processes count, and what is read from the database at scrape.

Two kinds, because the product runs as several processes (gunicorn workers, Celery workers, beat):

- Counters and histograms of work done in a web process (usage records by outcome, ingest and
  preflight latency, preflight decisions). Under gunicorn each worker counts in its own process;
  with `PROMETHEUS_MULTIPROC_DIR` set (docker-compose.yml does) every worker writes its values to
  files there and a scrape of any worker sums them all (prometheus_client's multiprocess mode).
- State read at scrape time from the database or broker (reservations by status, rollup lag,
  alerts, failed webhook deliveries, Celery queue depth). These are the same whichever process
  answers and whichever process did the work (much of it happens in Celery workers), so they are
  never counted in process. budgets registers its readers here (`scrape_reader_register`) from its
  `AppConfig.ready()`: finops does not import budgets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

if TYPE_CHECKING:
    from finops.services.foreign_usage import ForeignIngestResult
    from finops.services.ingest import IngestResult

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

USAGE_RECORDS = Counter(
    "tokenspend_usage_records",
    "Usage records received, by source (api, otlp, litellm) and outcome (accepted, duplicate, conflict, rejected).",
    ["source", "outcome"],
)
ITEMS_SKIPPED = Counter(
    "tokenspend_usage_items_skipped",
    "OTLP spans and LiteLLM log items that carried no usage (ignored, not rejected).",
    ["source"],
)
# At 0 from the start, like the unlabelled counters: the dashboard's panel has a series before the first skip.
for _source in ("otlp", "litellm"):
    ITEMS_SKIPPED.labels(_source)
INGEST_SECONDS = Histogram(
    "tokenspend_ingest_batch_seconds",
    "Time to validate, price and store one ingest request, by source.",
    ["source"],
    buckets=_LATENCY_BUCKETS,
)
PREFLIGHT_DECISIONS = Counter(
    "tokenspend_preflight_decisions", "Preflight answers by decision (allow, needs_approval, deny).", ["decision"]
)
PREFLIGHT_SECONDS = Histogram(
    "tokenspend_preflight_seconds", "Time to decide one preflight request.", buckets=_LATENCY_BUCKETS
)

# Functions that yield metric families read at scrape time (the database, the broker).
ScrapeReader = Callable[[], Iterable[Metric]]
_scrape_readers: list[ScrapeReader] = []


def scrape_reader_register(reader: ScrapeReader) -> None:
    if reader not in _scrape_readers:
        _scrape_readers.append(reader)


def ingest_observed(source: str, result: IngestResult, seconds: float) -> None:
    """Count one `usage_ingest` call's outcomes and time (POST /api/v1/usage)."""
    counts: dict[str, int] = {}
    for item in result.items:
        counts[item.status] = counts.get(item.status, 0) + 1
    for outcome, n in counts.items():
        USAGE_RECORDS.labels(source, outcome).inc(n)
    INGEST_SECONDS.labels(source).observe(seconds)


def foreign_ingest_observed(source: str, result: ForeignIngestResult, seconds: float) -> None:
    """Count one OTLP export's or LiteLLM post's outcomes and time."""
    for outcome, n in (("accepted", result.accepted), ("duplicate", result.duplicate), ("rejected", result.rejected)):
        if n:
            USAGE_RECORDS.labels(source, outcome).inc(n)
    if result.skipped:
        ITEMS_SKIPPED.labels(source).inc(result.skipped)
    INGEST_SECONDS.labels(source).observe(seconds)


def preflight_observed(decision: str, seconds: float) -> None:
    PREFLIGHT_DECISIONS.labels(decision).inc()
    PREFLIGHT_SECONDS.observe(seconds)


class _ScrapeTimeCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        for reader in list(_scrape_readers):
            try:
                yield from reader()
            except Exception:  # a reader that fails (database down) must not take the others with it
                logger.exception("metrics reader %s failed", getattr(reader, "__name__", reader))
                up = GaugeMetricFamily(
                    "tokenspend_metrics_reader_up", "1 when a scrape-time reader answered.", labels=["reader"]
                )
                up.add_metric([getattr(reader, "__name__", "reader")], 0)
                yield up


def metrics_exposition() -> bytes:
    """The text exposition of every metric: all processes' counters plus the scrape-time readings."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(_ScrapeTimeCollector())
        return generate_latest(registry)
    registry = CollectorRegistry()
    registry.register(_ProcessCollector())
    registry.register(_ScrapeTimeCollector())
    return generate_latest(registry)


class _ProcessCollector(Collector):
    """This process's own counters (no multiprocess directory: `make run`, tests, one worker)."""

    def collect(self) -> Iterable[Metric]:
        yield from REGISTRY.collect()


def _finops_readings() -> Iterable[Metric]:
    from django.db.models import Min
    from django.utils import timezone

    from finops.models import RollupDirtyDay

    oldest = RollupDirtyDay.objects.aggregate(oldest=Min("marked_at"))["oldest"]
    lag = GaugeMetricFamily(
        "tokenspend_rollup_lag_seconds",
        "Age of the oldest usage not yet in the rollups (the oldest dirty tenant-day's mark); 0 when none.",
    )
    lag.add_metric([], max(0.0, (timezone.now() - oldest).total_seconds()) if oldest else 0.0)
    yield lag
    depth = celery_queue_depth()
    if depth is not None:
        queue = GaugeMetricFamily(
            "tokenspend_celery_queue_depth", "Jobs waiting in the Celery queue.", labels=["queue"]
        )
        queue.add_metric(["celery"], depth)
        yield queue


# Counting the default partition stops here: a scrape stays cheap even when it has filled up.
DEFAULT_PARTITION_COUNT_CAP = 1_000_000


def _partition_readings() -> Iterable[Metric]:
    """The usage table's monthly partitions (PostgreSQL): rows that landed in the default partition (a
    month without its own: they are stored, but the daily maintenance job has not run or has failed) and
    how many months ahead of the current one have a partition (USAGE_PARTITIONS_AHEAD after each run)."""
    from django.db import connection
    from django.utils import timezone

    from finops.services.partitions import DEFAULT_PARTITION, month_start, partition_months, partitioned

    if not partitioned():
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {DEFAULT_PARTITION} LIMIT %s) rows", [DEFAULT_PARTITION_COUNT_CAP]
        )
        in_default = cursor.fetchone()[0]
    this_month = month_start(timezone.now().date())
    ahead = sum(1 for month in partition_months() if month > this_month)
    default = GaugeMetricFamily(
        "tokenspend_usage_default_partition_rows",
        "Usage records in the default partition, months without their own (counted up to 1,000,000).",
    )
    default.add_metric([], in_default)
    yield default
    months = GaugeMetricFamily(
        "tokenspend_usage_partitions_ahead_months", "Months after the current one that have a usage partition."
    )
    months.add_metric([], ahead)
    yield months


def celery_queue_depth(queue: str = "celery") -> int | None:
    """Messages waiting in the broker's default queue: a Redis list, or the filesystem broker's files."""
    from django.conf import settings

    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return int(client.llen(queue))
        finally:
            client.close()
    if url.startswith("filesystem://"):
        folder = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}).get("data_folder_in")
        if folder and os.path.isdir(folder):
            return sum(1 for name in os.listdir(folder) if name.endswith(".msg"))
    return None


scrape_reader_register(_finops_readings)
scrape_reader_register(_partition_readings)
