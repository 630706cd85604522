"""What operators point load balancers, orchestrators and Prometheus at: /healthz, /readyz, /metrics.

- `/healthz`: the process is up and serving; touches nothing else (a liveness probe must not fail
  because the database is down, or the orchestrator restarts healthy processes in a loop).
- `/readyz`: the database, the cache and the Celery broker each answer within
  `READINESS_TIMEOUT_SECONDS` (checked in parallel, so the answer comes within that time even when
  one hangs); 503 with each check's detail otherwise. Errors are named by type only: the answer is
  public, the full message goes to the log.
- `/metrics`: Prometheus text exposition (finops.metrics), off unless `METRICS_ACCESS` says who may
  read it: a bearer token or allowed networks.

They are served by `finops.middleware.OperationsEndpointsMiddleware` ahead of host validation and
sessions (a probe calls the container by its IP), and also routed normally (finops/urls.py).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable

from django.conf import settings
from django.core.cache import caches
from django.db import connections
from django.db.utils import load_backend
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


def _database_settings() -> dict:
    return connections.settings["default"]


def check_database() -> None:
    """`SELECT 1` on a connection of its own with a short connect timeout (not the request's)."""
    params = dict(_database_settings())
    if params["ENGINE"].endswith("postgresql"):
        timeout = max(1, int(settings.READINESS_TIMEOUT_SECONDS + 0.999))
        params["OPTIONS"] = {**params.get("OPTIONS", {}), "connect_timeout": timeout}
    wrapper = load_backend(params["ENGINE"]).DatabaseWrapper(params, "readyz")
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        wrapper.close()


def check_cache() -> None:
    cache = caches["default"]
    key, value = f"readyz:{uuid.uuid4().hex}", uuid.uuid4().hex
    cache.set(key, value, 10)
    if cache.get(key) != value:
        raise RuntimeError("the cache did not return what was just stored")
    cache.delete(key)


def check_broker() -> None:
    url = settings.CELERY_BROKER_URL
    timeout = settings.READINESS_TIMEOUT_SECONDS
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    elif url.startswith("filesystem://"):
        folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]
        if not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
            raise RuntimeError("the filesystem broker's queue folder is missing or read-only")
    else:
        from finops.celery import app

        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)


CHECKS: dict[str, Callable[[], None]] = {"database": check_database, "cache": check_cache, "broker": check_broker}


def _run(name: str, check: Callable[[], None], results: dict, done: threading.Event) -> None:
    started = time.perf_counter()
    try:
        check()
        results[name] = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
    except Exception as exc:  # any failure means not ready; which one is logged, its type answered
        logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
        results[name] = {"ok": False, "error": type(exc).__name__}
    finally:
        done.set()


def readyz(request: HttpRequest) -> HttpResponse:
    timeout = settings.READINESS_TIMEOUT_SECONDS
    results: dict[str, dict] = {}
    events = {}
    for name, check in CHECKS.items():
        events[name] = threading.Event()
        # Daemon threads: a check stuck on an unreachable host must not hold the answer or the process.
        threading.Thread(target=_run, args=(name, check, results, events[name]), daemon=True).start()
    deadline = time.monotonic() + timeout
    for name, event in events.items():
        if not event.wait(max(0.0, deadline - time.monotonic())):
            results.setdefault(name, {"ok": False, "error": f"no answer within {timeout:g} s"})
    checks = {name: results[name] for name in CHECKS}
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


def _client_ip(request: HttpRequest) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return None


def metrics_allowed(request: HttpRequest) -> bool:
    mode = settings.METRICS_ACCESS
    if mode == "token":
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), settings.METRICS_TOKEN)
    if mode == "network":
        address = _client_ip(request)
        return address is not None and any(
            address in ipaddress.ip_network(network, strict=False) for network in settings.METRICS_ALLOWED_NETWORKS
        )
    return False


def metrics(request: HttpRequest) -> HttpResponse:
    if settings.METRICS_ACCESS == "off":
        return JsonResponse(
            {"error": {"code": "not_found", "message": "Metrics are off (METRICS_ACCESS)."}}, status=404
        )
    if not metrics_allowed(request):
        return JsonResponse(
            {"error": {"code": "permission_denied", "message": "Not allowed to read metrics."}}, status=403
        )
    from prometheus_client import CONTENT_TYPE_LATEST

    from finops.metrics import metrics_exposition

    return HttpResponse(metrics_exposition(), content_type=CONTENT_TYPE_LATEST)
