"""The ways this product is started refer to things that exist, and `manage.py serve` really runs.

Docker cannot run on the development machines, so docker-compose.yml and the Dockerfile are checked by
resolving every module, Celery app, management command and environment variable they name. The
embedded default (`make run`) is started for real: web, worker and beat, a task delivered through the
filesystem broker, and a clean stop on SIGINT.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from celery import Celery
from celery.app.utils import find_app
from django.conf import settings
from django.core.management import get_commands

from tests.net import unused_port

from .workers import worker_suffix

BASE_DIR = Path(settings.BASE_DIR)
COMPOSE = BASE_DIR / "docker-compose.yml"
DOCKERFILE = BASE_DIR / "Dockerfile"
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES", "").lower() in ("1", "true", "yes")


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _invocations(command: str | list[str]) -> list[list[str]]:
    """The programs a container command runs, with `sh -c "a && b"` split into its parts."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv[:2] in (["sh", "-c"], ["/bin/sh", "-c"], ["bash", "-c"]):
        return [shlex.split(part) for part in re.split(r"&&|;", argv[2]) if part.strip()]
    return [argv]


def _check_invocation(argv: list[str]) -> str:
    """Resolve what one invocation names; return what kind of program it is."""
    program = Path(argv[0]).name
    if program in ("python", "python3") and argv[1:2] == ["-m"]:
        program, argv = argv[2], argv[2:]
    if program == "gunicorn":
        target = next(a for a in argv[1:] if re.fullmatch(r"[\w.]+:\w+", a))
        module_name, attr = target.split(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, attr)), f"{target} is not a WSGI callable"
        return "gunicorn"
    if program == "celery":
        app_name = argv[argv.index("-A") + 1]
        assert isinstance(find_app(app_name), Celery), f"celery -A {app_name} is not a Celery app"
        subcommand = next(a for a in argv[argv.index("-A") + 2 :] if not a.startswith("-"))
        assert subcommand in ("worker", "beat"), argv
        return f"celery {subcommand}"
    if program in ("python", "python3") and argv[1:2] == ["manage.py"]:
        assert (BASE_DIR / "manage.py").exists()
        assert argv[2] in get_commands(), f"no management command {argv[2]!r}"
        return f"manage.py {argv[2]}"
    raise AssertionError(f"unknown program in a container command: {argv}")


# --- docker-compose.yml -------------------------------------------------------------------------------


def test_compose_has_every_service():
    services = _compose()["services"]
    assert {"db", "redis", "migrate", "web", "worker", "beat"} <= set(services)
    assert services["db"]["image"].startswith("postgres:15")
    assert "healthcheck" in services["db"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["db"]["volumes"])
    assert services["redis"]["image"].startswith("redis:7")


def test_compose_runs_exactly_one_beat():
    services = _compose()["services"]
    beats = [name for name, svc in services.items() if "beat" in _invocations(svc.get("command", ["-"]))[0]]
    assert beats == ["beat"]
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1
    assert "scale" not in services["beat"]


def test_compose_commands_refer_to_real_things():
    services = _compose()["services"]
    kinds = {}
    for name in ("migrate", "web", "worker", "beat"):
        kinds[name] = [_check_invocation(argv) for argv in _invocations(services[name]["command"])]
    assert kinds == {
        "migrate": ["manage.py migrate", "manage.py seed_catalog"],
        "web": ["gunicorn"],
        "worker": ["celery worker"],
        "beat": ["celery beat"],
    }


def test_compose_app_services_wait_for_migrations_and_share_settings():
    services = _compose()["services"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    env = services["web"]["environment"]
    assert env["DATABASE_URL"].startswith("postgres://") and "@db:5432/" in env["DATABASE_URL"]
    assert env["CELERY_BROKER_URL"].startswith("redis://redis:")
    assert env["REDIS_URL"].startswith("redis://redis:")
    # Production must never fall back to a default secret.
    assert env["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY:?")
    assert env["DJANGO_DEBUG"] == "false"
    assert "DJANGO_ALLOWED_HOSTS" in env


def test_compose_environment_names_are_read_by_settings():
    settings_source = (BASE_DIR / "finops" / "settings.py").read_text()
    services = _compose()["services"]
    names = set()
    for name in ("migrate", "web", "worker", "beat"):
        names |= set(services[name]["environment"])
    unread = sorted(n for n in names if f'"{n}"' not in settings_source)
    assert not unread, f"docker-compose.yml sets variables finops/settings.py never reads: {unread}"


# --- Dockerfile ---------------------------------------------------------------------------------------


def test_dockerfile_builds_a_non_root_image_with_collected_static_files():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^RUN .*manage\.py collectstatic --noinput", text, re.M)
    assert re.search(r"pip install\b.*-e \.", text)


def test_dockerfile_command_refers_to_real_modules():
    text = DOCKERFILE.read_text()
    lines = re.findall(r"^(CMD|ENTRYPOINT)\s+(.+)$", text, re.M)
    assert lines, "the Dockerfile has no CMD or ENTRYPOINT"
    argv: list[str] = []
    for _, value in lines:  # ENTRYPOINT then CMD, as Docker joins them
        argv += json.loads(value)
    assert _check_invocation(argv) == "gunicorn"


# --- how a person starts it -----------------------------------------------------------------------------


def test_readme_quick_start_is_make_run_and_make_test():
    readme = (BASE_DIR / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert "/api/docs/" in readme and "docker compose" in readme


def test_ci_runs_the_readme_test_command():
    ci = (BASE_DIR / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    assert re.search(r"^\s*make test\b", ci, re.M)
    assert "REQUIRE_SERVICES=1" in ci and "--create-db" in ci


def test_makefile_test_target_fails_when_no_test_is_collected():
    if not (BASE_DIR / ".venv" / "bin" / "pytest").exists():
        pytest.skip("needs the .venv that `make test` creates")
    result = subprocess.run(
        ["make", "--no-print-directory", "-o", "install", "test", "PYTEST_ARGS=-k zz_no_test_has_this_name -q"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert "collected no tests" in result.stderr


# --- manage.py serve, for real ---------------------------------------------------------------------------


def _base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
    env.update(
        DJANGO_SETTINGS_MODULE="finops.settings",
        DJANGO_DEBUG="true",
        FINOPS_VAR_DIR=str(tmp_path / "var"),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def services_env(request, tmp_path):
    """Environment for a `serve` run: the embedded default, or PostgreSQL + Redis on a scratch database."""
    env = _base_env(tmp_path)
    if request.param == "embedded":
        yield env
        return
    if not REQUIRE_SERVICES:
        pytest.skip("set REQUIRE_SERVICES=1 (with DATABASE_URL and CELERY_BROKER_URL) to run serve on PostgreSQL")
    import environ
    import psycopg

    database_url, broker_url = os.environ.get("DATABASE_URL", ""), os.environ.get("CELERY_BROKER_URL", "")
    assert database_url.startswith("postgres"), "REQUIRE_SERVICES=1 needs DATABASE_URL=postgres://..."
    assert broker_url.startswith("redis"), "REQUIRE_SERVICES=1 needs CELERY_BROKER_URL=redis://..."
    db = environ.Env.db_url_config(database_url)
    scratch = f"{db['NAME']}_serve_check{worker_suffix()}"
    admin = dict(host=db["HOST"] or None, port=db["PORT"] or None, user=db["USER"] or None, password=db["PASSWORD"])
    with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{scratch}"')
        conn.execute(f'CREATE DATABASE "{scratch}"')
    env.update(DATABASE_URL=database_url.rsplit("/", 1)[0] + "/" + scratch, CELERY_BROKER_URL=broker_url)
    try:
        yield env
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


class _Output:
    """Collects a process's output lines in a thread so the test can wait for a given line."""

    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if match := re.search(pattern, line):
                        return match
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line matched {pattern!r} in {timeout}s; output:\n" + self.text)
                self._cond.wait(left)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status


@pytest.mark.parametrize("services_env", ["embedded", "postgres-redis"], indirect=True)
def test_serve_runs_web_worker_and_beat_and_stops_them_all(services_env):
    env, port = services_env, unused_port()
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, cwd=BASE_DIR, check=True, capture_output=True)

    serve = subprocess.Popen(
        [*manage, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = _Output(serve)
    try:
        out.wait_for(r"is running", timeout=90)
        pids = {name: int(pid) for name, pid in re.findall(r"(\w+) \(pid (\d+)\)", out.text)}
        assert set(pids) == {"web", "worker", "beat"}
        assert f"http://127.0.0.1:{port}/" in out.text
        embedded = "DATABASE_URL" not in env
        assert re.search(r"Database +SQLite at " if embedded else r"Database +PostgreSQL at ", out.text)
        assert re.search(r"Broker +filesystem \(no server\)" if embedded else r"Broker +redis://", out.text)
        assert _get(f"http://127.0.0.1:{port}/admin/login/") == 200
        assert _get(f"http://127.0.0.1:{port}/api/schema/") == 200

        # A task queued by another process (as the web process queues them) reaches the worker.
        marker = uuid.uuid4().hex
        send = "from finops.celery import app; app.send_task('celery.accumulate', args=[sys.argv[1]])"
        subprocess.run([sys.executable, "-c", f"import sys; {send}", marker], env=env, cwd=BASE_DIR, check=True)
        out.wait_for(rf"celery\.accumulate\[.*\] succeeded .*{marker}", timeout=30)
        out.wait_for(r"beat: Starting", timeout=30)
        gunicorn_workers = [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", out.text)]
        assert gunicorn_workers

        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=60) == 0, out.text
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    out._thread.join(timeout=5)
    assert "all processes stopped" in out.text
    left = [pid for pid in [*pids.values(), *gunicorn_workers] if not _gone(pid)]
    assert not left, f"processes still running after serve stopped: {left}"


def test_serve_restarts_a_dead_worker_or_beat_and_stops_everything_when_web_dies(tmp_path):
    """A Celery worker or beat that dies (OOM killer, kill -9) is started again and work still flows; the
    web server dying still stops everything (nothing left half-running)."""
    env, port = _base_env(tmp_path), unused_port()
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    serve = subprocess.Popen(
        [*manage, "serve", "--port", str(port)],
        env=env,
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = _Output(serve)
    restarted: dict[str, int] = {}
    try:
        out.wait_for(r"is running", timeout=90)
        pids = {name: int(pid) for name, pid in re.findall(r"(\w+) \(pid (\d+)\)", out.text)}
        for name in ("worker", "beat"):
            os.kill(pids[name], signal.SIGKILL)
            match = out.wait_for(rf"serve: {name} exited \(code -9\); restarted it \(pid (\d+)\)", timeout=30)
            restarted[name] = int(match.group(1))
            assert serve.poll() is None and _get(f"http://127.0.0.1:{port}/admin/login/") == 200
        # The restarted worker takes tasks again.
        marker = uuid.uuid4().hex
        send = "from finops.celery import app; app.send_task('celery.accumulate', args=[sys.argv[1]])"
        subprocess.run([sys.executable, "-c", f"import sys; {send}", marker], env=env, cwd=BASE_DIR, check=True)
        out.wait_for(rf"celery\.accumulate\[.*\] succeeded .*{marker}", timeout=60)
        os.kill(pids["web"], signal.SIGKILL)
        assert serve.wait(timeout=60) == 1
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    out._thread.join(timeout=5)
    assert re.search(r"web server \(gunicorn on .*\) \(pid \d+\) exited unexpectedly", out.text), out.text
    assert all(_gone(pid) for pid in [*pids.values(), *restarted.values()])


def test_serve_names_its_services_without_passwords():
    from finops.management.commands.serve import describe_broker, describe_cache, describe_database

    db = {"ENGINE": "django.db.backends.postgresql", "NAME": "finops", "USER": "app", "PASSWORD": "pg-secret"}
    assert describe_database({**db, "HOST": "db", "PORT": 5432}) == "PostgreSQL at app:***@db:5432/finops"
    assert describe_database({"ENGINE": "django.db.backends.sqlite3", "NAME": "/x/finops.sqlite3"}) == (
        "SQLite at /x/finops.sqlite3"
    )
    assert describe_broker("redis://:broker-secret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert "cache-secret" not in describe_cache("redis://user:cache-secret@redis:6379/1")
    assert describe_cache("").startswith("in-process memory")


def test_compose_restarts_a_worker_or_beat_that_dies():
    """Under docker compose a killed Celery worker or beat comes back (issue 13); `make run` is covered by
    test_serve_restarts_a_dead_worker_or_beat_and_stops_everything_when_web_dies."""
    services = _compose()["services"]
    for name in ("web", "worker", "beat"):
        assert services[name].get("restart") in ("unless-stopped", "always"), name


def test_gunicorn_workers_freeze_the_loaded_app_out_of_the_garbage_collectors_reach(monkeypatch, tmp_path):
    """gunicorn.conf.py's post_worker_init: objects alive once the app is loaded are not walked by every
    full collection a large request triggers (docs/performance.md, "Dashboards")."""
    import gc
    import runpy

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # the file sets it when unset: not here
    conf = runpy.run_path(str(Path(settings.BASE_DIR) / "gunicorn.conf.py"))
    gc.unfreeze()
    try:
        conf["post_worker_init"](None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
