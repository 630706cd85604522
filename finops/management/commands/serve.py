"""Run the whole product in one foreground command: gunicorn (web), a Celery worker and Celery beat.

This is what `make run` starts. Production runs the same three programs as separate containers
(docker-compose.yml); this command exists so one machine with no servers can run everything.

The command checks what the three need (broker, database, static files, a free port), says what it
runs them against, and hands them to the process supervisor (finops/supervisor.py), which starts
each child as this interpreter (`sys.executable -m gunicorn` / `-m celery`), relays their output and
stops them all together.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path
from types import ModuleType

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.db.utils import OperationalError

from finops.supervisor import Child, NotListening, Supervisor, port_is_free

WEB_GRACEFUL_TIMEOUT_SECONDS = 10


def describe_database(db: dict) -> str:
    """The default database in words, never with its password."""
    engine = db.get("ENGINE", "")
    if engine.endswith("sqlite3"):
        return f"SQLite at {db.get('NAME')}"
    vendor = {"postgresql": "PostgreSQL", "mysql": "MySQL"}.get(engine.rsplit(".", 1)[-1], engine)
    user = f"{db['USER']}:***@" if db.get("PASSWORD") else (f"{db['USER']}@" if db.get("USER") else "")
    host = db.get("HOST") or "localhost"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"{vendor} at {user}{host}{port}/{db.get('NAME')}"


def describe_broker(url: str) -> str:
    """The Celery broker in words, never with its password."""
    if url.startswith("filesystem://"):
        folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]).parent
        return f"filesystem (no server) at {folder}"
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(url, mask="***")


def describe_cache(redis_url: str) -> str:
    if not redis_url:
        return "in-process memory (set REDIS_URL for Redis)"
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(redis_url, mask="***")


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def is_loopback(host: str) -> bool:
    """Whether `host` only ever reaches this machine (a name counts if every address it resolves to does)."""
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def demo_exposure() -> list[str]:
    """What a demo-mode server hands to whoever can reach it: debug pages and the published credentials."""
    from tenants.models import ApiKey

    exposed = []
    if settings.DEBUG:
        exposed.append("debug mode (tracebacks with settings and local variables on every error page)")
        if settings.SECRET_KEY == "insecure-debug-only-key":
            exposed.append("the fixed debug secret key (anyone can forge sessions and signed links)")
    try:
        from finops.services import seed

        published = [seed.DEMO_API_KEY.split("_")[1], seed.DEMO_PLATFORM_KEY.split("_")[1]]
        live = ApiKey.objects.filter(prefix__in=published, revoked_at__isnull=True).count()
        from django.contrib.auth import get_user_model

        demo_login = get_user_model().objects.filter(username=seed.DEMO_USERNAME, is_active=True).exists()
    except Exception:  # no demo module or no tables yet: nothing of the demo is served
        live, demo_login = 0, False
    finally:
        connections["default"].close()
    if demo_login:
        exposed.append("the published demo logins (operator 'demo' and the northwind members, password in the README)")
    if live:
        exposed.append(f"{live} published demo API key(s), including a platform key that acts for every tenant")
    return exposed


def demo_traffic_on() -> bool:
    """The live demo runs when the demo data set is loaded (its platform key is live) unless DEMO_TRAFFIC=false."""
    if not settings.DEMO_TRAFFIC:
        return False
    from tenants.models import ApiKey

    try:
        from finops.services import seed

        prefix = seed.DEMO_PLATFORM_KEY.split("_")[1]
        return ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).exists()
    except Exception:  # no demo module or no tables yet
        return False
    finally:
        connections["default"].close()


class Command(BaseCommand):
    help = "Start the web server (gunicorn), a Celery worker and Celery beat together in the foreground."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST") or "127.0.0.1", help="$HOST or 127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000), help="$PORT or 8000")
        parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes (default 2)")

    def handle(self, *args, host: str, port: int, web_workers: int, **options):
        env = dict(os.environ)
        env.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")
        env["PYTHONUNBUFFERED"] = "1"
        self._supervisor = Supervisor(cwd=settings.BASE_DIR, env=env)

        database = describe_database(settings.DATABASES["default"])
        broker = describe_broker(settings.CELERY_BROKER_URL)
        self._say(f"serve: database {database}")
        self._say(f"serve: broker   {broker}")
        self._say(f"serve: cache    {describe_cache(settings.REDIS_URL)}")

        self._prepare_broker()
        self._check_database()
        self._check_demo_exposure(host)
        self._collectstatic_if_needed()
        if not port_is_free(host, port):
            raise CommandError(f"{host}:{port} is already in use; stop what runs there or choose another PORT.")

        children = self._children(host, port, web_workers)
        self._demo_traffic = demo_traffic_on()
        if self._demo_traffic:
            from finops.management.commands.demo_traffic import READY

            url = f"http://{_url_host(host)}:{port}"
            argv = [sys.executable, "manage.py", "demo_traffic", "--url", url]
            children.append(Child("demo", "demo traffic (usage through the ingest API)", argv, ready_marker=READY))
        try:
            failed = self._supervisor.run(
                children, host=host, port=port, on_ready=lambda: self._banner(children, host, port, database, broker)
            )
        except NotListening as exc:
            raise CommandError(str(exc)) from exc

        if failed is not None:
            code = failed.process.returncode if failed.process else None
            raise CommandError(
                f"the {failed.label} (pid {failed.pid}) exited unexpectedly with code {code}; "
                "stopped the other processes. Its output is above.",
                returncode=1,
            )
        self._say("serve: all processes stopped.")

    def _say(self, text: str) -> None:
        self._supervisor.say(text)

    # -- preparation ------------------------------------------------------------------------------------

    def _prepare_broker(self) -> None:
        if settings.CELERY_BROKER_URL.startswith("filesystem://"):
            # kombu's filesystem transport neither creates its folders nor reports their absence clearly.
            for key in ("data_folder_in", "data_folder_out", "control_folder"):
                Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS[key]).mkdir(parents=True, exist_ok=True)
            return
        from finops.celery import app

        try:
            with app.connection_for_write() as conn:
                # kombu sleeps these seconds as given (floats work); its stubs declare int.
                conn.ensure_connection(max_retries=2, interval_start=0.5, interval_step=0.5)  # type: ignore[arg-type]
        except Exception as exc:  # kombu raises transport-specific errors
            broker = describe_broker(settings.CELERY_BROKER_URL)
            raise CommandError(f"cannot reach the Celery broker ({broker}): {exc}") from exc

    def _check_database(self) -> None:
        from django.db.migrations.executor import MigrationExecutor

        connection = connections["default"]
        try:
            executor = MigrationExecutor(connection)
            pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
        except OperationalError as exc:
            raise CommandError(f"cannot reach the database: {exc}") from exc
        finally:
            connection.close()
        if pending:
            self._say(f"serve: warning: {len(pending)} migration(s) not applied; run `python manage.py migrate` first.")

    def _check_demo_exposure(self, host: str) -> None:
        if is_loopback(host):
            return
        exposed = demo_exposure()
        if not exposed:
            return
        listing = "".join(f"\n  - {item}" for item in exposed)
        if not settings.DEMO_ALLOW_NETWORK:
            raise CommandError(
                f"refusing to listen on {host}: this is demo mode, and everyone who can reach it would get{listing}\n"
                "Listen on 127.0.0.1 (the default), or run with DEMO_ALLOW_NETWORK=true if you really mean to "
                "share the demo. For a real deployment turn DJANGO_DEBUG off, set DJANGO_SECRET_KEY and use a "
                "database without the demo data (docs/operations.md)."
            )
        rule = "!" * 78
        self._say(
            f"{rule}\nWARNING: DEMO MODE ON THE NETWORK ({host}), because DEMO_ALLOW_NETWORK=true.\n"
            f"Everyone who can reach this machine gets{listing}\n{rule}"
        )

    def _collectstatic_if_needed(self) -> None:
        # With WHITENOISE_USE_FINDERS, WhiteNoise serves straight from the app folders; otherwise it serves
        # STATIC_ROOT, which collectstatic keeps current (it copies only what changed).
        if getattr(settings, "WHITENOISE_USE_FINDERS", False):
            # WhiteNoise warns about a missing STATIC_ROOT even when it serves from the finders.
            Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
            return
        self._say("serve: collecting static files ...")
        call_command("collectstatic", interactive=False, verbosity=0)

    def _children(self, host: str, port: int, web_workers: int) -> list[Child]:
        from gunicorn.config import KNOWN_SETTINGS

        py = sys.executable
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        web = [
            py, "-m", "gunicorn", "finops.wsgi:application",
            "--bind", bind,
            "--workers", str(web_workers),
            "--worker-class", "sync",
            # No gunicorn access log: the app writes one line per request itself (finops.requests).
            "--graceful-timeout", str(WEB_GRACEFUL_TIMEOUT_SECONDS),
        ]  # fmt: skip
        if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS):
            # gunicorn >= 24 opens ~/.gunicorn/gunicorn.ctl by default; two runs would fight over it.
            web.append("--no-control-socket")

        embedded = settings.DATABASES["default"]["ENGINE"].endswith("sqlite3") or settings.CELERY_BROKER_URL.startswith(
            "filesystem://"
        )
        # SQLite takes one writer at a time and the filesystem transport wants one consumer: a single solo
        # worker. With PostgreSQL and Redis, two prefork processes (this machine has 2 cores).
        pool = ["--pool", "solo", "--concurrency", "1"] if embedded else ["--pool", "prefork", "--concurrency", "2"]
        worker = [
            py, "-m", "celery", "-A", "finops", "worker", "--loglevel", "INFO", *pool,
            # One worker has no peers to gossip or mingle with; skipping them saves broker polling.
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        beat = [
            py, "-m", "celery", "-A", "finops", "beat", "--loglevel", "INFO",
            "--schedule", str(settings.CELERY_BEAT_SCHEDULE_FILENAME),
        ]  # fmt: skip
        return [
            Child("web", f"web server (gunicorn on {bind})", web),
            Child("worker", "Celery worker", worker, ready_marker=" ready.", restart=True),
            Child("beat", "Celery beat", beat, ready_marker="beat: Starting", restart=True),
        ]

    # -- banner -------------------------------------------------------------------------------------------

    def _banner(self, children: list[Child], host: str, port: int, database: str, broker: str) -> None:
        base = f"http://{_url_host(host)}:{port}"
        lines = [
            "Token spend control plane is running.",
            "",
            f"  Open        {base}/",
            f"  API docs    {base}/api/docs/   (schema: {base}/api/schema/)",
            f"  Admin       {base}/admin/",
        ]
        seed: ModuleType | None
        try:
            from finops.services import seed  # written lazily: the demo data set is optional here
        except ImportError:
            seed = None
        username = getattr(seed, "DEMO_USERNAME", None)
        password = getattr(seed, "DEMO_PASSWORD", None)
        api_key = getattr(seed, "DEMO_API_KEY", None)
        if username and password:
            lines.append(f"  Demo login  {username} / {password}")
        if api_key:
            lines += [
                f"  Demo key    {api_key}",
                "",
                "  Try it:",
                f'    curl -H "Authorization: Bearer {api_key}" {base}/api/v1/usage',
            ]
        if getattr(self, "_demo_traffic", False):
            lines += [
                "",
                f"  Demo traffic  on: usage every {settings.DEMO_TRAFFIC_INTERVAL_SECONDS:g} s "
                "through POST /api/v1/usage,",
                f"                a scripted incident every {settings.DEMO_INCIDENT_EVERY_SECONDS / 60:g} min "
                "(runaway loop, growing prompt).",
                "                DEMO_TRAFFIC=false make run turns it off.",
            ]
        lines += [
            "",
            f"  Database    {database}",
            f"  Broker      {broker}",
            f"  Cache       {describe_cache(settings.REDIS_URL)}",
            "  Processes   " + ", ".join(f"{c.name} (pid {c.pid})" for c in children),
            "",
            "  Stop with Ctrl-C.",
        ]
        rule = "=" * 78
        self._say("\n".join([rule, *lines, rule]))
