"""Run the whole product in one foreground command: gunicorn (web), a Celery worker and Celery beat.

This is what `make run` starts. Production runs the same three programs as separate containers
(docker-compose.yml); this command exists so one machine with no servers can run everything.

Each child is this interpreter (`sys.executable -m gunicorn` / `-m celery`) in its own session, so a
Ctrl-C reaches the children exactly once: this process forwards it. When any child dies the others
are stopped too, so nothing is left half-running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.db.utils import OperationalError

READY_TIMEOUT_SECONDS = 60.0
# gunicorn waits --graceful-timeout for its workers and a Celery worker finishes its running task;
# past this the process groups are killed (acks_late puts the task back on the queue).
STOP_TIMEOUT_SECONDS = 25.0
WEB_GRACEFUL_TIMEOUT_SECONDS = 10
POLL_SECONDS = 0.2
# Once the web server listens, how long the banner may wait for the worker and beat to report ready.
READY_GRACE_SECONDS = 30.0


@dataclass
class Child:
    name: str
    label: str
    argv: list[str]
    process: subprocess.Popen | None = None
    reader: threading.Thread | None = None
    # A line the child prints once it is ready; the banner waits for it so it is not buried in start-up logs.
    ready_marker: str = ""
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _parent_death_signal_hook():
    """Linux only: a hook that makes a child get SIGTERM if `serve` itself is killed with SIGKILL.

    libc is loaded here, in the parent: the hook runs between fork and exec, where importing is unsafe.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return hook


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


def _connect_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def _port_is_free(host: str, port: int) -> bool:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return True  # let gunicorn report the bad host itself
    family, socktype, proto, _, addr = infos[0]
    with socket.socket(family, socktype, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError:
            return False
    return True


def _is_listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((_connect_host(host), port), timeout=0.5):
            return True
    except OSError:
        return False


class Command(BaseCommand):
    help = "Start the web server (gunicorn), a Celery worker and Celery beat together in the foreground."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST") or "127.0.0.1", help="$HOST or 127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000), help="$PORT or 8000")
        parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes (default 2)")

    # -- lifecycle --------------------------------------------------------------------------------------

    def handle(self, *args, host: str, port: int, web_workers: int, **options):
        self._out_lock = threading.Lock()
        self._stop_signal: int | None = None
        self._forced = False
        self._death_hook = _parent_death_signal_hook()

        database = describe_database(settings.DATABASES["default"])
        broker = describe_broker(settings.CELERY_BROKER_URL)
        self._say(f"serve: database {database}")
        self._say(f"serve: broker   {broker}")
        self._say(f"serve: cache    {describe_cache(settings.REDIS_URL)}")

        self._prepare_broker()
        self._check_database()
        self._collectstatic_if_needed()
        if not _port_is_free(host, port):
            raise CommandError(f"{host}:{port} is already in use; stop what runs there or choose another PORT.")

        children = self._children(host, port, web_workers)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for child in children:
                self._start(child)
            failed = self._wait_until_ready(children, host, port)
            if failed is None and self._stop_signal is None:
                self._banner(children, host, port, database, broker)
                failed = self._supervise(children)
        finally:
            # Whatever happened (a signal, a dead child, an exception here), no child outlives us.
            self._stop_all(children, self._stop_signal or signal.SIGTERM)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        if failed is not None:
            code = failed.process.returncode if failed.process else None
            raise CommandError(
                f"the {failed.label} (pid {failed.pid}) exited unexpectedly with code {code}; "
                "stopped the other processes. Its output is above.",
                returncode=1,
            )
        self._say("serve: all processes stopped.")

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
        else:
            self._forced = True  # a second Ctrl-C: stop waiting for graceful shutdown

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
                conn.ensure_connection(max_retries=2, interval_start=0.5, interval_step=0.5)
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
            "--access-logfile", "-",
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
            Child("worker", "Celery worker", worker, ready_marker=" ready."),
            Child("beat", "Celery beat", beat, ready_marker="beat: Starting"),
        ]

    # -- children -----------------------------------------------------------------------------------------

    def _start(self, child: Child) -> None:
        env = dict(os.environ)
        env.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")
        env["PYTHONUNBUFFERED"] = "1"
        child.process = subprocess.Popen(
            child.argv,
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # terminal signals reach only us; we forward them once
            preexec_fn=self._death_hook,
        )
        child.reader = threading.Thread(target=self._relay, args=(child,), name=f"relay-{child.name}", daemon=True)
        child.reader.start()

    def _relay(self, child: Child) -> None:
        """Copy a child's output to ours, each line prefixed with the child's name."""
        assert child.process and child.process.stdout
        prefix = f"{child.name:<6}| "
        for raw in iter(child.process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if child.ready_marker and child.ready_marker in line:
                child.ready.set()
            self._write(prefix + line)

    def _say(self, text: str) -> None:
        self._write(text)

    def _write(self, text: str) -> None:
        # Output may be a pipe that closes first (`make run | tee log`, then Ctrl-C). Losing lines is
        # fine; an exception here would stop the relay (children then block on a full pipe) or the shutdown.
        with self._out_lock:
            try:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
            except (OSError, ValueError):
                pass

    def _first_dead(self, children: list[Child]) -> Child | None:
        return next((c for c in children if not c.alive()), None)

    def _wait_until_ready(self, children: list[Child], host: str, port: int) -> Child | None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        listening_since: float | None = None
        while self._stop_signal is None:
            dead = self._first_dead(children)
            if dead is not None:
                return dead
            now = time.monotonic()
            if listening_since is None and _is_listening(host, port):
                listening_since = now
            if listening_since is not None:
                others_ready = all(c.ready.is_set() for c in children if c.ready_marker)
                if others_ready or now - listening_since > READY_GRACE_SECONDS:
                    return None
            elif now > deadline:
                raise CommandError(f"the web server did not listen on {host}:{port} in {READY_TIMEOUT_SECONDS:.0f}s.")
            time.sleep(POLL_SECONDS)
        return None

    def _supervise(self, children: list[Child]) -> Child | None:
        while self._stop_signal is None:
            dead = self._first_dead(children)
            if dead is not None:
                return dead
            time.sleep(POLL_SECONDS)
        return None

    def _stop_all(self, children: list[Child], signum: int) -> None:
        running = [c for c in children if c.alive()]
        if running:
            self._say(f"serve: stopping {', '.join(c.name for c in running)} ({signal.Signals(signum).name}) ...")
        for child in running:
            self._signal_group(child, signum)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while any(c.alive() for c in running) and time.monotonic() < deadline and not self._forced:
            time.sleep(POLL_SECONDS)
        for child in running:
            if child.alive():
                self._say(f"serve: {child.name} did not stop in time; killing it.")
            # Kill the whole group either way: gunicorn workers or pool processes must not linger.
            self._signal_group(child, signal.SIGKILL)
            if child.process:
                child.process.wait()
        for child in children:
            if child.reader:
                child.reader.join(timeout=2)

    @staticmethod
    def _signal_group(child: Child, signum: int) -> None:
        if child.process is None:
            return
        try:
            if signum == signal.SIGKILL:
                os.killpg(child.process.pid, signum)
            elif child.process.poll() is None:
                child.process.send_signal(signum)
        except ProcessLookupError:
            pass

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
