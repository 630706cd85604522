"""Run a few child processes in the foreground as one unit: `manage.py serve`'s process supervisor.

Each child is started in its own session, so a Ctrl-C reaches the children exactly once: the
supervisor forwards it. Their output is relayed line by line, prefixed with the child's name. When
any child dies the others are stopped too, so nothing is left half-running, except a child marked
`restart` (the Celery worker and beat): it is started again, unless it keeps dying (RESTART_LIMIT times
within RESTART_WINDOW_SECONDS), which is a crash loop that restarting will not cure.

Plain standard library: what the children are (gunicorn, a Celery worker, Celery beat) and how the
product is prepared for them is the command's business (finops/management/commands/serve.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT_SECONDS = 60.0
# gunicorn waits --graceful-timeout for its workers and a Celery worker finishes its running task;
# past this the process groups are killed (acks_late puts the task back on the queue).
STOP_TIMEOUT_SECONDS = 25.0
POLL_SECONDS = 0.2
# Once the web server listens, how long the banner may wait for the worker and beat to report ready.
READY_GRACE_SECONDS = 30.0
# A child with `restart` that dies this many times within the window is given up on (and all stop).
RESTART_LIMIT = 5
RESTART_WINDOW_SECONDS = 60.0


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
    # Start it again when it dies (a Celery worker or beat killed by the OOM killer or by hand).
    restart: bool = False
    restarts: list[float] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class NotListening(Exception):
    """The web server did not start listening in time."""


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


def _connect_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def port_is_free(host: str, port: int) -> bool:
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


def is_listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((_connect_host(host), port), timeout=0.5):
            return True
    except OSError:
        return False


class Supervisor:
    """Starts children in `cwd` with `env`, relays their output to ours and stops them all together.

    `say` writes a line of our own between the children's lines. Create it first thing: it sets up
    the parent-death hook while nothing else runs.
    """

    def __init__(self, *, cwd: Path, env: Mapping[str, str]):
        self.cwd = cwd
        self.env = dict(env)
        self._out_lock = threading.Lock()
        self._stop_signal: int | None = None
        self._forced = False
        self._death_hook = _parent_death_signal_hook()

    def run(self, children: list[Child], *, host: str, port: int, on_ready: Callable[[], None]) -> Child | None:
        """Start `children`, call `on_ready` once the web server listens on host:port (and the others
        have printed their ready markers, or READY_GRACE_SECONDS passed), then watch them until a
        SIGINT/SIGTERM or a child's death.

        Returns the child that died, or None after a signal. Whatever happens (a signal, a dead
        child, an exception), no child outlives this call. Raises NotListening when the web server
        does not listen within READY_TIMEOUT_SECONDS.
        """
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        failed = None
        try:
            for child in children:
                self._start(child)
            failed = self._wait_until_ready(children, host, port)
            if failed is None and self._stop_signal is None:
                on_ready()
                failed = self._supervise(children)
        finally:
            self._stop_all(children, self._stop_signal or signal.SIGTERM)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return failed

    def say(self, text: str) -> None:
        # Output may be a pipe that closes first (`make run | tee log`, then Ctrl-C). Losing lines is
        # fine; an exception here would stop the relay (children then block on a full pipe) or the shutdown.
        with self._out_lock:
            try:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
            except (OSError, ValueError):
                pass

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
        else:
            self._forced = True  # a second Ctrl-C: stop waiting for graceful shutdown

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv,
            cwd=self.cwd,
            env=self.env,
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
            self.say(prefix + line)

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
            if listening_since is None and is_listening(host, port):
                listening_since = now
            if listening_since is not None:
                others_ready = all(c.ready.is_set() for c in children if c.ready_marker)
                if others_ready or now - listening_since > READY_GRACE_SECONDS:
                    return None
            elif now > deadline:
                raise NotListening(f"the web server did not listen on {host}:{port} in {READY_TIMEOUT_SECONDS:.0f}s.")
            time.sleep(POLL_SECONDS)
        return None

    def _supervise(self, children: list[Child]) -> Child | None:
        while self._stop_signal is None:
            dead = self._first_dead(children)
            if dead is not None and not self._restart(dead):
                return dead
            time.sleep(POLL_SECONDS)
        return None

    def _restart(self, child: Child) -> bool:
        """Start a dead `restart` child again; False when it may not be (not marked, or crash-looping)."""
        if not child.restart or self._stop_signal is not None:
            return False
        now = time.monotonic()
        child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_SECONDS]
        code = child.process.returncode if child.process else None
        if len(child.restarts) >= RESTART_LIMIT:
            self.say(f"serve: {child.name} died {RESTART_LIMIT} times in {RESTART_WINDOW_SECONDS:.0f}s; giving up.")
            return False
        self._signal_group(child, signal.SIGKILL)  # its pool processes must not outlive it
        if child.reader:
            child.reader.join(timeout=2)
        child.restarts.append(now)
        self._start(child)
        self.say(f"serve: {child.name} exited (code {code}); restarted it (pid {child.pid}).")
        return True

    def _stop_all(self, children: list[Child], signum: int) -> None:
        running = [c for c in children if c.alive()]
        if running:
            self.say(f"serve: stopping {', '.join(c.name for c in running)} ({signal.Signals(signum).name}) ...")
        for child in running:
            self._signal_group(child, signum)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while any(c.alive() for c in running) and time.monotonic() < deadline and not self._forced:
            time.sleep(POLL_SECONDS)
        for child in running:
            if child.alive():
                self.say(f"serve: {child.name} did not stop in time; killing it.")
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
