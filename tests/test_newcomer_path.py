"""A newcomer's first ten minutes, on a fresh clone: `make run`, then every `manage.py` command the README
and docs/ show, run as written (only the port is changed, so the test does not collide with a running
app), with their answers checked. And demo mode never reaches the network without being told.

The clone reuses this test run's virtualenv as its `.venv` (`make -o install` skips the install step,
which would otherwise pip-install into that shared virtualenv) and runs on the embedded default
(SQLite, filesystem broker): none of this process's settings are passed on.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.net import unused_port

BASE_DIR = Path(settings.BASE_DIR)
DOCS = ["README.md", *sorted(p.relative_to(BASE_DIR).as_posix() for p in (BASE_DIR / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(sh|bash)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`(?:\.venv/bin/)?(?:python )?manage\.py ([^`]+)`")
# Not commands to run beside `make run`: they are what `make run` runs (and run until stopped).
NOT_RUN_INLINE = ("serve", "demo_traffic")
READY = "Token spend control plane is running."
# In a parallel run one worker runs them all: they share one fresh clone (tests/workers.py GROUPS).
pytestmark = pytest.mark.skipif(
    not (BASE_DIR / ".git").exists() or not Path(sys.prefix, "pyvenv.cfg").exists(),
    reason="needs a git checkout and a virtualenv to reuse",
)


def _newcomer_env(port: int) -> dict[str, str]:
    """A shell as a newcomer has it: none of the test run's settings (database, debug, secret key)."""
    drop = ("DJANGO_", "DATABASE_URL", "CELERY_", "REDIS_URL", "FINOPS_", "PYTEST", "DEMO_", "HOST")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PORT"] = str(port)
    return env


def documented_commands(root: Path, port: int) -> list[tuple[str, str]]:
    """(where, shell text) for each shell block that runs manage.py from the checkout, and each inline one."""
    found: list[tuple[str, str]] = []
    for name in DOCS:
        text = (root / name).read_text()
        for match in FENCE.finditer(text):
            block = match.group(2)
            if "manage.py" not in block or "docker compose" in block:
                continue  # the docker deployment's commands run in its containers, not the checkout
            line = text[: match.start()].count("\n") + 1
            found.append((f"{name}:{line}", block.replace("127.0.0.1:8000", f"127.0.0.1:{port}")))
        for match in INLINE.finditer(text):
            args = match.group(1)
            if args.startswith(NOT_RUN_INLINE) or "docker" in text[max(0, match.start() - 60) : match.start()]:
                continue
            line = text[: match.start()].count("\n") + 1
            found.append((f"{name}:{line}", f".venv/bin/python manage.py {args}"))
    return found


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Iterator[tuple[Path, int, str]]:
    root = tmp_path_factory.mktemp("newcomer") / "clone"
    subprocess.run(["git", "clone", "--quiet", str(BASE_DIR), str(root)], check=True)
    (root / ".venv").symlink_to(Path(sys.prefix))
    port = unused_port()
    log = root.parent / "make-run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["make", "-o", "install", "run"],
            cwd=root,
            env=_newcomer_env(port),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while READY not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"make run did not get ready (exit {proc.returncode}):\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield root, port, log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _run(root: Path, port: int, script: str, **extra: str) -> subprocess.CompletedProcess:
    env = _newcomer_env(port) | extra
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_make_run_writes_a_local_env_that_git_ignores(fresh_clone):
    root, _port, output = fresh_clone
    env_file = (root / ".env").read_text()
    assert "DJANGO_DEBUG=true" in env_file
    secret = re.search(r"^DJANGO_SECRET_KEY=(\S+)$", env_file, re.M)
    assert secret and len(secret.group(1)) >= 50 and secret.group(1) != "insecure-debug-only-key"
    assert "Wrote .env" in output
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout
    assert ".env" not in status


def test_every_documented_manage_py_command_works_as_written(fresh_clone):
    root, port, _output = fresh_clone
    commands = documented_commands(root, port)
    where = [w for w, _ in commands]
    # The ones a newcomer meets first must be among them (so a docs rewrite cannot silently drop them).
    assert any(w.startswith("README.md") for w in where) and any(w.startswith("docs/api.md") for w in where)
    assert sum(w.startswith("docs/budgets.md") for w in where) >= 3
    for place, script in commands:
        result = _run(root, port, script)
        said = result.stdout + result.stderr
        assert result.returncode == 0, f"{place} failed ({result.returncode}):\n{script}\n{said}"
        for bad in ("Traceback", "ImproperlyConfigured", '"error"', "Unknown command"):
            assert bad not in said, f"{place}:\n{script}\n{said}"
        if "create_api_key" in script and "curl" not in script:
            assert "Store the secret now" in said, f"{place}: {said}"
        if "curl" in script:
            assert result.stdout.strip().startswith(("{", "[")), f"{place}: no JSON answer: {said}"


def test_documented_answers_are_what_the_docs_say(fresh_clone):
    root, port, _output = fresh_clone
    # README's key block: the key works, then the revoke makes it answer 401 at once.
    script = (
        'KEY=$(.venv/bin/python manage.py create_api_key --tenant northwind --scopes ingest,read --name "my service")\n'
        f'curl -s -o /dev/null -w "%{{http_code}} " -H "Authorization: Bearer $KEY" http://127.0.0.1:{port}/api/v1/usage\n'
        '.venv/bin/python manage.py revoke_api_key "$KEY" >/dev/null\n'
        f'curl -s -o /dev/null -w "%{{http_code}}" -H "Authorization: Bearer $KEY" http://127.0.0.1:{port}/api/v1/usage\n'
    )
    result = _run(root, port, script)
    assert result.stdout.split() == ["200", "401"], result.stdout + result.stderr
    # docs/budgets.md's budget was created for the demo tenant with the documented limits.
    listing = _run(
        root,
        port,
        "KEY=$(.venv/bin/python manage.py create_api_key --tenant northwind --scopes read --name check)\n"
        f'curl -s -H "Authorization: Bearer $KEY" http://127.0.0.1:{port}/api/v1/budgets\n',
    )
    assert '"Northwind monthly"' in listing.stdout and '"500.00' in listing.stdout, listing.stdout


def test_demo_mode_refuses_the_network_unless_told_and_then_says_what_it_exposes(fresh_clone):
    root, _port, _output = fresh_clone
    port = unused_port()
    refused = _run(root, port, f".venv/bin/python manage.py serve --host 0.0.0.0 --port {port}")
    assert refused.returncode != 0
    assert "refusing to listen on 0.0.0.0" in refused.stderr
    assert (
        "debug mode" in refused.stderr and "demo API key" in refused.stderr and "DEMO_ALLOW_NETWORK" in refused.stderr
    )

    proc = subprocess.Popen(
        [".venv/bin/python", "manage.py", "serve", "--host", "0.0.0.0", "--port", str(port)],
        cwd=root,
        env=_newcomer_env(port) | {"DEMO_ALLOW_NETWORK": "true"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        seen = ""
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while "WARNING: DEMO MODE ON THE NETWORK" not in seen and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        assert "WARNING: DEMO MODE ON THE NETWORK (0.0.0.0)" in seen, seen
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_demo_lives_after_make_run(fresh_clone):
    """The banner says the demo traffic is on, and live usage arrives through the ingest API within a minute."""
    root, port, output = fresh_clone
    assert "Demo traffic  on:" in output and "DEMO_TRAFFIC=false" in output
    count = (
        "from finops.models import UsageRecord; "
        "print(UsageRecord.objects.filter(request_id__startswith='demo-live-').count())"
    )
    deadline = time.monotonic() + 90
    live = 0
    while time.monotonic() < deadline:
        result = _run(root, port, f'.venv/bin/python manage.py shell -c "{count}"')
        live = int(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else 0
        if live:
            break
        time.sleep(5)
    assert live >= 1, (root.parent / "make-run.log").read_text()[-3000:]
