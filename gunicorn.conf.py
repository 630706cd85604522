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


def post_worker_init(worker):
    """The app is loaded: move its objects (modules, settings, URL patterns, the catalog) out of the
    garbage collector's reach. A full collection otherwise walks all of them, and a request that
    builds many objects (16,000 series points of the spend API) triggers several: ~10-15 ms per
    such request (docs/performance.md, "Dashboards"). Frozen objects are never freed, which these
    live as long as the worker anyway."""
    import gc

    gc.freeze()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


# LOG_FORMAT=json: gunicorn's own lines (workers booting, timeouts) as JSON objects too, like the app's.
if os.environ.get("LOG_FORMAT") == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }
