"""gunicorn reads this file from the working directory (the image's /app) whatever its command line.

Prometheus counters are kept per process; with several workers a scrape reaches one of them. Each
worker therefore writes its counters to files in PROMETHEUS_MULTIPROC_DIR and /metrics sums them all
(prometheus_client's multiprocess mode, finops/metrics.py). The directory is set here, before any
worker imports prometheus_client, emptied when gunicorn starts (stale files would add old counts),
and a worker that exits is marked dead so its live gauges stop counting.
"""

import os
import shutil
import tempfile

# One directory per gunicorn master (its pid): two servers on one machine must not mix their counts.
_metrics_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), f"tokenspend-prometheus-{os.getpid()}")
)


def on_starting(server):
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir, exist_ok=True)


def on_exit(server):
    shutil.rmtree(_metrics_dir, ignore_errors=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
