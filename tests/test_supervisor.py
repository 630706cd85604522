"""finops.supervisor: a `restart` child is started again when it dies, a crash loop is given up on."""

from __future__ import annotations

import sys

import pytest

from finops import supervisor
from finops.supervisor import Child, Supervisor


def _child(name: str, code: str, *, restart: bool) -> Child:
    return Child(name, name, [sys.executable, "-c", code], restart=restart)


def test_a_crash_looping_child_is_given_up_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(supervisor, "RESTART_LIMIT", 3)
    monkeypatch.setattr(supervisor, "POLL_SECONDS", 0.05)
    loop = _child("worker", "import sys; sys.exit(3)", restart=True)
    steady = _child("web", "import time; time.sleep(30)", restart=False)
    sup = Supervisor(cwd=tmp_path, env={})
    for child in (loop, steady):
        sup._start(child)
    try:
        assert sup._supervise([loop, steady]) is loop
    finally:
        sup._stop_all([loop, steady], 15)
    out = capsys.readouterr().out
    assert out.count("worker exited (code 3); restarted it") == 3
    assert "worker died 3 times in 60s; giving up." in out


@pytest.mark.parametrize("restart", [False])
def test_a_child_without_restart_ends_the_run(tmp_path, monkeypatch, restart):
    monkeypatch.setattr(supervisor, "POLL_SECONDS", 0.05)
    dies = _child("web", "import sys; sys.exit(1)", restart=restart)
    sup = Supervisor(cwd=tmp_path, env={})
    sup._start(dies)
    try:
        assert sup._supervise([dies]) is dies
    finally:
        sup._stop_all([dies], 15)
