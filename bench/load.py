"""Mixed load for a fixed time: gunicorn + a Celery worker + beat on PostgreSQL and Redis, then the books.

One run:

1. measures the ingest ceiling in the same run: 1,000-record batches from a few clients as fast as the
   server takes them (--ceiling-seconds; skipped with --ingest-rate);
2. runs the mix for --seconds at 80% of that ingest rate (--share), all at once:
   - ingest batches (1,000 realistic records, bench/ingest.py's generator, five tenants);
   - single-record POSTs;
   - preflights, each settled by its usage record carrying the reservation_id (or released when the
     decision is not allow), against budgets with hard limits on every tenant and the platform;
   - dashboard pages with an operator's session (overview, tenant, usage, budgets, explorer);
   - the spend API with a tenant key;
   with progress every --progress seconds (per operation: rate, p99 in the interval, errors);
3. lets the worker drain (rollups) and checks the books:
   - records stored == records sent: every request id, none missing, none twice;
   - rollups equal raw sums: the daily rollups and the all-tenant rollups, per tenant-day and per day;
   - every budget window's spent equals the priced sum of the records in its scope and period, its
     reserved equals the holds of reservations still held (none, once everything settled), and the
     worker never had to correct a drifted window (its log has no "drifted" line).

A client retries a failed ingest request with the same body (same request ids), as a real client
would; every failure counts as an error.

    .venv/bin/python bench/load.py                 # 10 minutes of mix (about 13 minutes in all)
    .venv/bin/python bench/load.py --quick         # 60 s of mix
    .venv/bin/python bench/load.py --check         # exit 1 when a check or a target fails

It drops and recreates its own database (default `finops_loadbench`; the name must contain "bench")
and uses the Redis databases given by --broker-url and --redis-url. Figures: docs/performance.md,
section "Mixed load".
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import orjson
import psycopg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.ingest import (  # noqa: E402 - after the sys.path line above
    TENANTS,
    WORKFLOWS,
    BenchError,
    Connection,
    CpuMeter,
    Server,
    load_catalog,
    log,
    machine_facts,
    make_record,
    percentile,
    recreate_database,
)
from bench.ingest import django_setup as ingest_django_setup  # noqa: E402

USAGE_PATH = "/api/v1/usage"
PREFLIGHT_PATH = "/api/v1/preflight"
TABLE = "finops_usagerecord"
USD = 10**9  # nano-USD

TARGET_SHARE = 0.8  # of the ingest ceiling measured in the same run
TARGET_PREFLIGHT_P99 = 0.025  # seconds, in every progress interval
BATCH = 1000
RETRIES = 8  # a client's attempts at one ingest request (same body, same request ids)

PREFLIGHT_MODELS = [("gpt-4o", 0.4), ("claude-sonnet-4-5", 0.3), ("gpt-4o-mini", 0.2), ("gemini-2.5-flash", 0.1)]
PREFLIGHT_WORKFLOWS = ("chat-assistant", "ticket-summary", "doc-qa")
HUGE_COST = 10**9 * USD  # hard limits nobody reaches: every hold is taken, nothing is denied
HUGE_TOKENS = 10**15


# --- fixtures ---------------------------------------------------------------------------------------


def django_setup(database_url: str, broker_url: str, redis_url: str) -> None:
    """bench/ingest.py's environment with Redis for the cache and the broker; the server, the worker and
    beat inherit it."""
    os.environ.pop("CELERY_TASK_ALWAYS_EAGER", None)
    ingest_django_setup(database_url, API_KEY_RATE="1000000/s", CELERY_BROKER_URL=broker_url, REDIS_URL=redis_url)


def create_fixtures() -> tuple[list[str], str]:
    """Tenants with one key each (ingest, preflight, read), workflows, budgets with hard limits on every
    tenant (monthly cost, daily tokens of one workflow in prod) and on the platform (monthly cost of the
    standard tier), and an operator for the pages. Returns the raw keys in TENANTS order and the cookie."""
    from django.contrib.auth import get_user_model

    from bench.dashboard import operator_session_cookie
    from budgets.models import Budget
    from finops.models import ModelTier, Workflow
    from tenants.models import Tenant
    from tenants.services import api_key_create

    workflows = {}
    for slug, *_ in WORKFLOWS:
        workflows[slug] = Workflow.objects.create(slug=slug, name=slug.replace("-", " ").capitalize(), owner="bench")
    keys = []
    for slug, name, _ in TENANTS:
        tenant = Tenant.objects.create(slug=slug, name=name)
        _, raw = api_key_create(tenant=tenant, name="bench load", scopes="ingest,preflight,read")
        keys.append(raw)
        Budget.objects.create(
            name=f"{slug} monthly", tenant=tenant, metric="cost", period="month", hard_limit=HUGE_COST
        )
        Budget.objects.create(
            name=f"{slug} chat tokens daily",
            tenant=tenant,
            workflow=workflows["chat-assistant"],
            environment="prod",
            metric="tokens",
            period="day",
            hard_limit=HUGE_TOKENS,
        )
    Budget.objects.create(
        name="platform standard tier monthly",
        tier=ModelTier.objects.get(slug="standard"),
        metric="cost",
        period="month",
        hard_limit=HUGE_COST,
    )
    get_user_model().objects.create_superuser("bench-operator", "ops@bench.example", "not-used-bench-password")
    return keys, operator_session_cookie()


# --- the Celery worker and beat ---------------------------------------------------------------------


class Celery:
    """`celery -A finops worker` and `beat` as `manage.py serve` starts them with PostgreSQL and Redis."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        env["LOG_LEVEL"] = "INFO"  # the worker's "drifted" lines are warnings; INFO shows what ran
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        py = sys.executable
        argvs = {
            "worker": [py, "-m", "celery", "-A", "finops", "worker", "--loglevel", "INFO", "--pool", "prefork",
                       "--concurrency", "2", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            "beat": [py, "-m", "celery", "-A", "finops", "beat", "--loglevel", "INFO",
                     "--schedule", str(self.workdir / "celerybeat-schedule")],
        }  # fmt: skip
        for name, argv in argvs.items():
            with (self.workdir / f"{name}.log").open("ab") as out:
                self.procs[name] = subprocess.Popen(
                    argv, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
        deadline = time.monotonic() + 60
        for name, marker in (("worker", " ready."), ("beat", "beat: Starting")):
            while marker not in self.log(name):
                if self.procs[name].poll() is not None:
                    raise BenchError(
                        f"celery {name} exited with {self.procs[name].returncode}:\n{self.log(name)[-2000:]}"
                    )
                if time.monotonic() > deadline:
                    raise BenchError(f"celery {name} did not start within 60 s:\n{self.log(name)[-2000:]}")
                time.sleep(0.3)

    def log(self, name: str) -> str:
        try:
            return (self.workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def pids(self) -> set[int]:
        """The worker, its pool processes and beat (for the CPU meter)."""
        roots = {p.pid for p in self.procs.values() if p.poll() is None}
        found = set(roots)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid in roots:
                    found.add(int(entry.name))
        return found

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs.values())

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


class Meter(CpuMeter):
    """bench/ingest.py's meter, with the Celery processes counted as ours."""

    def __init__(self, db: str, server: Server, celery: Celery, preflight_server: Server | None = None):
        super().__init__(db, server)
        self.celery = celery
        self.preflight_server = preflight_server

    def _our_pids(self) -> set[int]:
        pids = super()._our_pids() | self.celery.pids()
        extra = self.preflight_server
        if extra is not None and extra.process is not None:
            pids |= {extra.process.pid, *extra.worker_pids()}
        return pids


# --- the clients --------------------------------------------------------------------------------------


@dataclass
class Tick:
    """What one operation did since its previous tick (sent from a client process to the main one)."""

    op: str
    requests: int = 0
    records: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # request-id prefix -> ids sent (0..n-1), final tick only
    final: bool = False
    span: float = 0.0  # seconds this tick covers


class Op:
    """One kind of request, driven by `clients` threads in its own process at `rate` requests per second
    (a shared schedule: a late request is sent at once, so falling behind shows as a lower rate)."""

    name = ""

    def __init__(self, port: int, rate: float, clients: int):
        self.port, self.rate, self.clients = port, rate, clients
        self.lock = threading.Lock()
        self.tick = Tick(self.name)
        self.sent: dict[str, int] = {}
        self.flushed_at = 0.0

    # each op implements one request on `conn`; returns records stored by it (0 for reads)
    def one(self, conn: Connection, n: int, client: int) -> int:
        raise NotImplementedError

    def record(self, latency: float | None, records: int = 0, error: str | None = None, timed: bool = True) -> None:
        """Count a request (its latency among this op's unless `timed` is false) and its error, if any."""
        with self.lock:
            self.tick.records += records
            if latency is not None and timed:
                self.tick.requests += 1
                self.tick.latencies.append(latency)
            if error:
                self.tick.errors += 1
                if len(self.tick.messages) < 3:
                    self.tick.messages.append(error[:300])

    def run(self, start_at: float, stop_at: float, progress: float, results) -> None:
        counter = itertools.count()

        def client(c: int) -> None:
            conn = Connection("127.0.0.1", self.port, timeout=60)
            while True:
                n = next(counter)
                due = start_at + n / self.rate
                if due >= stop_at or time.time() >= stop_at:
                    break
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                try:
                    self.one(conn, n, c)
                except Exception as exc:  # noqa: BLE001 - an error of the bench client, counted and shown
                    conn.close()
                    self.record(None, error=f"client: {exc!r}")
            conn.close()

        threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(self.clients)]
        self.flushed_at = start_at
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        for t in threads:
            t.start()
        next_tick = start_at + progress
        while any(t.is_alive() for t in threads):
            time.sleep(min(0.2, max(0.0, next_tick - time.time())))
            if time.time() >= next_tick:
                next_tick += progress
                self.flush(results)
        self.flush(results, final=True)

    def flush(self, results, final: bool = False) -> None:
        with self.lock:
            tick, self.tick = self.tick, Tick(self.name)
        now = time.time()
        tick.final, tick.span, self.flushed_at = final, max(0.001, now - self.flushed_at), now
        if final:
            tick.sent = dict(self.sent)
        results.put(tick)

    # -- helpers ---------------------------------------------------------------------------------------

    def request(self, conn: Connection, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, bytes]:
        try:
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            return response.status, response.read()
        except OSError as exc:
            conn.close()
            return 0, repr(exc).encode()

    def post_records(
        self, conn: Connection, body: bytes, headers: dict, expected: int, label: str, timed: bool = True
    ) -> tuple[int, float]:
        """POST usage until it is all stored (accepted now or earlier); each failed attempt is an error.
        Returns the records stored and the seconds it took, retries included."""
        first = time.perf_counter()
        for attempt in range(RETRIES):
            started = time.perf_counter()
            status, data = self.request(conn, "POST", USAGE_PATH, body, headers)
            latency = time.perf_counter() - started
            if status == 200:
                answer = orjson.loads(data)
                stored = answer.get("accepted", 0) + answer.get("duplicate", 0)
                if stored == expected and (attempt > 0 or answer.get("duplicate", 0) == 0):
                    self.record(latency, answer.get("accepted", 0), timed=timed)
                    return expected, time.perf_counter() - first
                others = [i for i in answer.get("items", []) if i.get("status") not in ("accepted", "duplicate")][:2]
                error = f"{label}: {stored}/{expected} stored: {others}"
                self.record(latency, answer.get("accepted", 0), error, timed=timed)
                return stored, time.perf_counter() - first  # refused for its content: a retry cannot help
            self.record(latency, error=f"{label}: HTTP {status}: {data[:200]!r}", timed=timed)
            time.sleep(min(5.0, 0.25 * 2**attempt))
        return 0, time.perf_counter() - first


class IngestBatches(Op):
    name = "ingest batch"

    def __init__(self, port, rate, clients, keys, pool, prefix):
        super().__init__(port, rate, clients)
        self.headers = [_headers(k) for k in keys]
        self.pool, self.prefix = pool, prefix
        self.weights = [t[2] for t in TENANTS]
        self.sent = {f"{prefix}{c}": 0 for c in range(clients)}

    def one(self, conn, n, client):
        prefix = f"{self.prefix}{client}"
        first = self.sent[prefix]
        rng = random.Random(n)
        template = self.pool[(n * 7) % len(self.pool)]
        records = [dict(r, request_id=f"{prefix}-{first + i:010d}") for i, r in enumerate(template)]
        body = orjson.dumps({"records": records})
        self.sent[prefix] = first + len(records)  # one client per prefix: no lock needed
        tenant = rng.choices(range(len(TENANTS)), weights=self.weights)[0]
        self.post_records(conn, body, self.headers[tenant], len(records), "batch")


class SingleRecords(Op):
    name = "single record"

    def __init__(self, port, rate, clients, keys, pool):
        super().__init__(port, rate, clients)
        self.headers = [_headers(k) for k in keys]
        self.pool = [r for batch in pool[:3] for r in batch]
        self.sent = {f"S{c}": 0 for c in range(clients)}

    def one(self, conn, n, client):
        prefix = f"S{client}"
        record = dict(self.pool[n % len(self.pool)], request_id=f"{prefix}-{self.sent[prefix]:010d}")
        self.sent[prefix] += 1
        self.post_records(conn, orjson.dumps(record), self.headers[n % len(self.headers)], 1, "single")


class PreflightSettle(Op):
    """A preflight, then its usage with the reservation_id (the settle), or a release. Preflights and
    releases go to `port`, the settles to `settle_port` (the ingest server, as a service posts its usage)
    from `settlers` threads of their own, as a service posts usage after its call returns: a slow settle
    does not hold up the next preflight, so preflights keep their schedule."""

    name = "preflight"

    def __init__(self, port, rate, clients, keys, settle_port, settlers=8):
        super().__init__(port, rate, clients)
        self.settle_port = settle_port
        self.settlers = settlers
        self.settle_pool: ThreadPoolExecutor | None = None  # created in the op's own process
        self.local = threading.local()  # each settle thread's connection to the settle server
        self.headers = [_headers(k) for k in keys]
        self.sent = {f"P{c}": 0 for c in range(clients)}
        self.settle_tick_lock = threading.Lock()
        self.settles: list[float] = []  # seconds per settle, retries included (not in the preflight's latencies)
        self.decisions: Counter = Counter()

    def one(self, conn, n, client):
        rng = random.Random(n)
        model = rng.choices(PREFLIGHT_MODELS, weights=[m[1] for m in PREFLIGHT_MODELS])[0][0]
        ask = {
            "workflow": rng.choice(PREFLIGHT_WORKFLOWS),
            "model": model,
            "environment": "prod",
            "input_tokens": max(50, int(2_500 * math.exp(rng.gauss(0, 0.7)))),
            "max_output_tokens": rng.choice((256, 512, 1024)),
        }
        headers = self.headers[n % len(self.headers)]
        started = time.perf_counter()
        status, data = self.request(conn, "POST", PREFLIGHT_PATH, orjson.dumps(ask), headers)
        latency = time.perf_counter() - started
        if status != 200:
            self.record(latency, error=f"preflight: HTTP {status}: {data[:200]!r}")
            return
        answer = orjson.loads(data)
        self.record(latency)
        with self.settle_tick_lock:
            self.decisions[answer["decision"]] += 1
        reservation = answer.get("reservation_id")
        if answer["decision"] != "allow":
            if reservation:
                self.request(conn, "POST", f"/api/v1/reservations/{reservation}/release", b"{}", headers)
            return
        prefix = f"P{client}"
        usage = {
            "request_id": f"{prefix}-{self.sent[prefix]:010d}",
            "workflow": ask["workflow"],
            "model": answer.get("model") or model,
            "environment": "prod",
            "occurred_at": datetime.now(UTC).isoformat(),
            "input_tokens": ask["input_tokens"],
            "output_tokens": rng.randint(1, answer.get("max_output_tokens") or ask["max_output_tokens"]),
            "reservation_id": reservation,
        }
        self.sent[prefix] += 1
        with self.settle_tick_lock:
            if self.settle_pool is None:
                self.settle_pool = ThreadPoolExecutor(self.settlers, thread_name_prefix="settle")
        self.settle_pool.submit(self.settle, orjson.dumps(usage), headers)

    def settle(self, body: bytes, headers: dict) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = Connection("127.0.0.1", self.settle_port, timeout=60)
        try:
            _, seconds = self.post_records(conn, body, headers, 1, "settle", timed=False)
        except Exception as exc:  # noqa: BLE001 - an error of the bench client, counted and shown
            conn.close()
            self.record(None, error=f"settle client: {exc!r}")
            return
        with self.settle_tick_lock:
            self.settles.append(seconds)

    def flush(self, results, final=False):
        if final and self.settle_pool is not None:
            self.settle_pool.shutdown(wait=True)  # every settle posted before the books are counted
        super().flush(results, final)
        if final:
            results.put(("settle", self.settles, dict(self.decisions)))


class Reads(Op):
    """GETs of a rotating list of paths; 200 and a complete body or it is an error."""

    def __init__(self, port, rate, clients, name, paths, headers, expect):
        self.name = name
        super().__init__(port, rate, clients)
        self.paths, self.headers, self.expect = paths, headers, expect

    def one(self, conn, n, client):
        path = self.paths[n % len(self.paths)]
        started = time.perf_counter()
        status, data = self.request(conn, "GET", path, None, self.headers)
        latency = time.perf_counter() - started
        if status != 200 or self.expect not in data[-400:]:
            self.record(latency, error=f"GET {path}: HTTP {status}: {data[:200]!r}")
        else:
            self.record(latency)


def _headers(key: str) -> dict:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Accept": "application/json"}


def _op_process(op: Op, start_at: float, stop_at: float, progress: float, results) -> None:
    op.run(start_at, stop_at, progress, results)


def record_pool(seed: int, batches: int) -> list[list[dict]]:
    """Realistic batches (bench/ingest.py's records); each send gives them fresh request ids."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    return [[make_record(rng, b * BATCH + i, now) for i in range(BATCH)] for b in range(batches)]


# --- a phase: run ops, print progress, collect -------------------------------------------------------


@dataclass
class OpResult:
    requests: int = 0
    records: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    interval_p99: list[float] = field(default_factory=list)  # per progress interval


@dataclass
class Phase:
    label: str
    seconds: float
    ops: dict[str, OpResult]
    sent: dict[str, int]
    settles: list[float] = field(default_factory=list)
    decisions: Counter = field(default_factory=Counter)
    background: float | None = None
    intervals: list[tuple[float, float]] = field(default_factory=list)  # (records/s, preflight p99) per interval


def run_phase(label: str, ops: list[Op], seconds: float, progress: float, watch=None) -> Phase:
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start_at = time.time() + 1.0
    stop_at = start_at + seconds
    children = [
        ctx.Process(target=_op_process, args=(op, start_at, stop_at, progress, results), daemon=True) for op in ops
    ]
    for child in children:
        child.start()
    phase = Phase(label, seconds, {op.name: OpResult() for op in ops}, {})
    pending = {op.name for op in ops}
    settle_pending = any(isinstance(op, PreflightSettle) for op in ops)
    interval: dict[str, Tick] = {}
    while pending or settle_pending:
        try:
            item = results.get(timeout=5)
        except Exception:  # noqa: BLE001 - queue.Empty: check the children are alive
            if not any(c.is_alive() for c in children):
                raise BenchError(f"{label}: the client processes died") from None
            continue
        if isinstance(item, tuple):  # the preflight op's settle latencies and decisions
            phase.settles, phase.decisions = item[1], Counter(item[2])
            settle_pending = False
            continue
        result = phase.ops[item.op]
        result.requests += item.requests
        result.records += item.records
        result.errors += item.errors
        result.latencies.extend(item.latencies)
        result.messages.extend(item.messages[: max(0, 5 - len(result.messages))])
        if item.latencies:
            result.interval_p99.append(percentile(item.latencies, 99))
        if item.final:
            phase.sent.update(item.sent)
            pending.discard(item.op)
        merged = interval.setdefault(item.op, Tick(item.op))
        merged.requests += item.requests
        merged.records += item.records
        merged.errors += item.errors
        merged.latencies.extend(item.latencies)
        merged.span = max(merged.span, item.span)
        if (len(interval) == len(ops) or not pending) and not any(t.requests or t.errors for t in interval.values()):
            interval = {}  # the final flushes after the last full interval: nothing to show
        elif len(interval) == len(ops) or not pending:
            now = time.time()
            span = max(t.span for t in interval.values())  # what the ticks cover (the last one is short)
            parts = []
            for name, tick in interval.items():
                p99 = f"p99 {percentile(tick.latencies, 99) * 1000:.0f} ms" if tick.latencies else "-"
                rate = f"{tick.records / span:,.0f} rec/s" if tick.records and "ingest" in name else ""
                parts.append(f"{name} {tick.requests / span:,.1f}/s {rate} {p99} err {tick.errors}".replace("  ", " "))
            records = sum(t.records for t in interval.values())
            pf = interval.get("preflight")
            phase.intervals.append(
                (records / span, percentile(pf.latencies, 99) if pf and pf.latencies else float("nan"))
            )
            elapsed = min(seconds, now - start_at)
            extra = watch() if watch else ""
            log(f"  {label} {elapsed:,.0f}/{seconds:,.0f} s: " + "; ".join(parts) + (f"; {extra}" if extra else ""))
            interval = {}
    for child in children:
        child.join(timeout=30)
    return phase


# --- the books --------------------------------------------------------------------------------------


def check_records(db: str, sent: dict[str, int]) -> tuple[bool, list[str]]:
    """Per request-id prefix: as many rows as ids sent, ids 0..n-1 each once, nothing else stored."""
    with psycopg.connect(db, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT split_part(request_id, '-', 1), count(*), count(DISTINCT request_id),"
            f" min(split_part(request_id, '-', 2)::bigint), max(split_part(request_id, '-', 2)::bigint)"
            f" FROM {TABLE} GROUP BY 1"
        ).fetchall()
    stored = {r[0]: r[1:] for r in rows}
    lines, ok = [], True
    for prefix in sorted(set(sent) | set(stored)):
        n = sent.get(prefix, 0)
        count, distinct, lo, hi = stored.get(prefix, (0, 0, None, None))
        good = count == n == distinct and (n == 0 or (lo == 0 and hi == n - 1))
        ok &= good
        if not good:
            lines.append(f"{prefix}: sent {n:,} (ids 0..{n - 1}), stored {count:,} ({distinct:,} distinct, {lo}..{hi})")
    total_sent, total_stored = sum(sent.values()), sum(r[1] for r in rows)
    lines.insert(0, f"records sent {total_sent:,}, stored {total_stored:,}, by {len(sent)} request-id prefixes")
    return ok, lines


def drain_rollups(celery: Celery, max_wait: float) -> str:
    """Wait for the worker (beat sends refresh-rollups every minute) to leave no tenant-day marked dirty."""
    from finops.models import RollupDirtyDay
    from finops.services.rollups import rollups_refresh

    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        left = RollupDirtyDay.objects.count()
        if left == 0:
            return "the worker refreshed every dirty tenant-day"
        log(f"  waiting for the worker: {left} tenant-days still marked dirty")
        time.sleep(10)
    result = rollups_refresh(limit=100_000)
    return f"the worker had not finished within {max_wait:.0f} s; rollups_refresh() here did {result.days} tenant-days"


ROLLUP_MEASURES = (
    "calls, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nanos"
)
RAW_MEASURES = (
    "count(*), sum(input_tokens), sum(cached_input_tokens), sum(cache_write_tokens), sum(output_tokens),"
    " sum(reasoning_tokens), coalesce(sum(cost_nanos), 0)"
)


def check_rollups(db: str) -> tuple[bool, list[str]]:
    sums = ", ".join(f"sum({m})" for m in ROLLUP_MEASURES.split(", "))
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        raw = {
            (r[0], r[1]): tuple(int(v or 0) for v in r[2:])
            for r in conn.execute(
                f"SELECT tenant_id, occurred_at::date, {RAW_MEASURES} FROM {TABLE} GROUP BY 1, 2"
            ).fetchall()
        }
        daily = {
            (r[0], r[1]): tuple(int(v or 0) for v in r[2:])
            for r in conn.execute(
                f"SELECT tenant_id, bucket_start::date, {sums} FROM finops_usagerollup"
                " WHERE grain = 'day' GROUP BY 1, 2"
            ).fetchall()
        }
        everyone = {
            r[0]: tuple(int(v or 0) for v in r[1:])
            for r in conn.execute(
                f"SELECT bucket_start::date, {sums} FROM finops_alltenantsrollup GROUP BY 1"
            ).fetchall()
        }
    raw_days: dict = defaultdict(lambda: (0,) * 7)
    for (_, day), v in raw.items():
        raw_days[day] = tuple(a + b for a, b in zip(raw_days[day], v, strict=True))
    lines = []
    bad_daily = [k for k in set(raw) | set(daily) if raw.get(k) != daily.get(k)]
    bad_all = [d for d in set(raw_days) | set(everyone) if raw_days.get(d) != everyone.get(d)]
    lines.append(
        f"daily rollups: {len(daily)} tenant-days, {len(bad_daily)} differ from the raw sums; "
        f"all-tenant rollups: {len(everyone)} days, {len(bad_all)} differ"
    )
    for k in sorted(bad_daily)[:5]:
        lines.append(f"  tenant {k[0]} {k[1]}: raw {raw.get(k)} rollups {daily.get(k)}")
    for d in sorted(bad_all)[:5]:
        lines.append(f"  all tenants {d}: raw {raw_days.get(d)} rollups {everyone.get(d)}")
    return not bad_daily and not bad_all, lines


def check_windows(celery: Celery) -> tuple[bool, list[str]]:
    """Each window's spent against the records of its scope and period, summed here from raw records; its
    reserved against the holds of reservations still held."""
    from django.db.models import Sum

    from budgets.models import BudgetWindow, Reservation, ReservationHold
    from finops.measures import metric_sum
    from finops.models import UsageRecord

    lines, ok = [], True
    for window in BudgetWindow.objects.select_related("budget").order_by("budget_id", "starts_at"):
        b = window.budget
        records = UsageRecord.objects.filter(occurred_at__gte=window.starts_at, occurred_at__lt=window.ends_at)
        if b.tenant_id:
            records = records.filter(tenant_id=b.tenant_id)
        if b.workflow_id:
            records = records.filter(workflow_id=b.workflow_id)
        if b.environment:
            records = records.filter(environment=b.environment)
        if b.tier_id:
            records = records.filter(model__tier_id=b.tier_id)
        expected = records.aggregate(v=metric_sum(b.metric))["v"] or 0
        held = (
            ReservationHold.objects.filter(window=window, reservation__status=Reservation.Status.HELD).aggregate(
                v=Sum("amount")
            )["v"]
            or 0
        )
        good = window.spent == expected and window.reserved == held
        ok &= good
        unit = (lambda v: f"${v / USD:,.4f}") if b.metric == "cost" else (lambda v: f"{v:,} tokens")
        lines.append(
            f"{'ok ' if good else 'BAD'} {b.name} {window.starts_at:%Y-%m-%d}: spent {unit(window.spent)}"
            + ("" if window.spent == expected else f" (records say {unit(expected)})")
            + f", reserved {window.reserved:,}"
            + ("" if window.reserved == held else f" (holds say {held:,})")
        )
    held_now = Reservation.objects.filter(status=Reservation.Status.HELD).count()
    statuses = Counter(Reservation.objects.values_list("status", flat=True))
    lines.append(f"reservations: {dict(statuses)}; still held: {held_now}")
    ok &= held_now == 0
    drift = [line for line in celery.log("worker").splitlines() if "drifted" in line]
    lines.append(f"windows the worker corrected for drift during the run: {len(drift)}")
    lines.extend(f"  {line}" for line in drift[:5])
    ok &= not drift
    return ok, lines


def log_problems(server: Server, celery: Celery, preflight_server: Server | None) -> list[str]:
    lines = []
    for name, text in (
        ("gunicorn", server.log_tail(100_000)),
        ("preflight gunicorn", preflight_server.log_tail(100_000) if preflight_server else ""),
        ("worker", celery.log("worker")),
        ("beat", celery.log("beat")),
    ):
        bad = [line for line in text.splitlines() if " ERROR " in line or "Traceback" in line or "CRITICAL" in line]
        if bad:
            lines.append(f"{name} log: {len(bad)} error lines, first: {bad[0][:300]}")
    return lines


# --- report -------------------------------------------------------------------------------------------


def fmt_ms(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1000:,.1f} ms"


def print_phase(phase: Phase) -> None:
    print(f"\n### {phase.label}: {phase.seconds:g} s, other load {phase.background:.0%}\n")
    print(f"| {'operation':<16} | {'requests':>9} | {'per s':>8} | {'records/s':>9} | {'p50':>9} | {'p99':>9} "
          f"| {'worst interval p99':>18} | {'errors':>6} |")  # fmt: skip
    print(f"|{'-' * 18}|{'-' * 10}:|{'-' * 9}:|{'-' * 10}:|{'-' * 10}:|{'-' * 10}:|{'-' * 19}:|{'-' * 7}:|")
    rows = list(phase.ops.items())
    if phase.settles:
        settle = OpResult(requests=len(phase.settles), latencies=phase.settles)
        rows.insert([n for n, _ in rows].index("preflight") + 1, ("settle (usage)", settle))
    for name, r in rows:
        records = f"{r.records / phase.seconds:,.0f}" if r.records else "-"
        worst = max(r.interval_p99) if r.interval_p99 else float("nan")
        print(f"| {name:<16} | {r.requests:>9,} | {r.requests / phase.seconds:>8,.1f} | {records:>9} "
              f"| {fmt_ms(percentile(r.latencies, 50) if r.latencies else float('nan')):>9} "
              f"| {fmt_ms(percentile(r.latencies, 99) if r.latencies else float('nan')):>9} "
              f"| {fmt_ms(worst):>18} | {r.errors:>6} |")  # fmt: skip
    for name, r in rows:
        for message in r.messages[:3]:
            print(f"  {name} error: {message}")
    if phase.decisions:
        print(f"\nPreflight decisions: {dict(phase.decisions)}")


# --- main ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/finops_loadbench",
        help="dropped and recreated; its name must contain 'bench' (default %(default)s)",
    )
    p.add_argument("--broker-url", default=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
                   help="the Celery broker (default $CELERY_BROKER_URL or %(default)s)")  # fmt: skip
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/1"),
                   help="the cache: throttle counters, sessions (default $REDIS_URL or %(default)s)")  # fmt: skip
    p.add_argument("--seconds", type=float, default=600, help="length of the mixed phase (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="60 s of mix, 10 s of ceiling")
    p.add_argument("--ceiling-seconds", type=float, default=30, help="the ingest-only phase (default %(default)s)")
    p.add_argument("--ingest-rate", type=float, default=None,
                   help="records/s of the ceiling, taken as given (skips the ingest-only phase)")  # fmt: skip
    p.add_argument("--share", type=float, default=TARGET_SHARE, help="of the ceiling, for the mix (default 0.8)")
    p.add_argument("--ingest-clients", type=int, default=4, help="concurrent batch clients (default %(default)s)")
    p.add_argument("--singles", type=float, default=20, help="single-record POSTs per second (default %(default)s)")
    p.add_argument("--preflights", type=float, default=100, help="preflights (each settled) per second (default 100)")
    p.add_argument("--preflight-clients", type=int, default=4)
    p.add_argument("--settlers", type=int, default=8, help="threads posting the preflights' usage (default 8)")
    p.add_argument("--pages", type=float, default=0.5, help="dashboard pages per second (default %(default)s)")
    p.add_argument("--spend", type=float, default=2, help="spend API calls per second (default %(default)s)")
    p.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1), help="gunicorn sync workers (2 x cores)")
    p.add_argument("--preflight-workers", type=int, default=2,
                   help="sync workers of a second gunicorn serving only preflights and releases, so they never\n"
                        "queue behind ingest batches (docs/scaling.md); 0 = one gunicorn (default 2)")  # fmt: skip
    p.add_argument("--progress", type=float, default=10, help="seconds between progress lines (default 10)")
    p.add_argument("--drain-seconds", type=float, default=300, help="wait this long for the worker's rollups")
    p.add_argument("--wait-quiet", type=float, default=60, help="wait up to this long for a quiet machine first")
    p.add_argument("--check", action="store_true", help="exit 1 when a check or a target fails")
    p.add_argument("--seed", type=int, default=13)
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.ceiling_seconds = min(args.seconds, 60), min(args.ceiling_seconds, 10)
    return args


def _preflight_server_text(args) -> str:
    if not args.preflight_workers:
        return "preflights on the same gunicorn"
    return f"preflights on a second gunicorn ({args.preflight_workers} sync workers)"


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop gunicorn and Celery on the way out
    db = args.database_url
    log(f"Recreating database {urlsplit(db).path.lstrip('/')} and migrating")
    recreate_database(db)
    django_setup(db, args.broker_url, args.redis_url)
    from django.core.cache import cache
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0, interactive=False)
    log(f"Catalog: {load_catalog()}")
    cache.clear()  # the bench's own Redis database: no throttle windows or snapshots of an earlier run
    keys, cookie = create_fixtures()
    facts = machine_facts(db)
    for name, value in facts:
        log(f"{name}: {value}")
    pool = record_pool(args.seed, 24)
    connections.close_all()  # the client processes are forked from here

    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    server = Server(workers=args.workers, worker_class="sync", threads=1, log_path=workdir / "gunicorn.log")
    server.argv += ["--backlog", "2048"]
    preflight_server = None
    if args.preflight_workers:
        preflight_server = Server(
            workers=args.preflight_workers, worker_class="sync", threads=1, log_path=workdir / "gunicorn-preflight.log"
        )
        preflight_server.argv += ["--backlog", "2048"]
    celery = Celery(workdir)
    meter = Meter(db, server, celery, preflight_server)
    log(f"Starting gunicorn ({args.workers} sync workers), {_preflight_server_text(args)}, a Celery worker "
        f"(prefork, 2) and beat; logs in {workdir}")  # fmt: skip
    server.start()
    phases: list[Phase] = []
    try:
        if preflight_server is not None:
            preflight_server.start()
        celery.start()

        def watch() -> str:
            from finops.models import RollupDirtyDay

            dirty = RollupDirtyDay.objects.count()
            connections.close_all()
            return f"dirty tenant-days {dirty}" + ("" if celery.alive() else "; CELERY DIED")

        if args.ingest_rate:
            ceiling = args.ingest_rate
            log(f"Ingest ceiling taken as given: {ceiling:,.0f} records/s")
        else:
            meter.wait_quiet(args.wait_quiet)
            log(f"Ingest only, as fast as it goes: {args.ingest_clients} clients x {BATCH:,}-record batches, "
                f"{args.ceiling_seconds:g} s")  # fmt: skip
            before = meter.snapshot()
            only = run_phase(
                "ingest only",
                [IngestBatches(server.port, 10_000, args.ingest_clients, keys, pool, "C")],
                args.ceiling_seconds,
                args.progress,
            )
            only.background = meter.background(before)
            phases.append(only)
            ceiling = only.ops["ingest batch"].records / args.ceiling_seconds
            log(f"  ceiling: {ceiling:,.0f} records/s (other load {only.background:.0%})")
        target = args.share * ceiling
        batch_rate = max(0.1, (target - args.singles - args.preflights) / BATCH)
        log(
            f"Mix for {args.seconds:g} s at {args.share:.0%} of the ceiling, {target:,.0f} records/s: "
            f"{batch_rate:.2f} batches/s, {args.singles:g} singles/s, {args.preflights:g} preflights/s (each "
            f"settled), {args.pages:g} pages/s, {args.spend:g} spend API calls/s"
        )
        pages = ["/", f"/?tenant={TENANTS[0][0]}", f"/tenants/{TENANTS[1][0]}/", "/usage/", "/budgets/", "/explore/"]
        spend = [
            "/api/v1/spend?" + urlencode({"group_by": "workflow"}),
            "/api/v1/spend?" + urlencode({"group_by": "model", "granularity": "day"}),
        ]
        ops = [
            IngestBatches(server.port, batch_rate, args.ingest_clients, keys, pool, "B"),
            SingleRecords(server.port, args.singles, 2, keys, pool),
            PreflightSettle(
                preflight_server.port if preflight_server else server.port,
                args.preflights,
                args.preflight_clients,
                keys,
                settle_port=server.port,
                settlers=args.settlers,
            ),
            Reads(
                server.port,
                args.pages,
                1,
                "dashboard page",
                pages,
                {"Cookie": cookie, "Accept": "text/html"},
                b"</html>",
            ),  # fmt: skip
            Reads(server.port, args.spend, 1, "spend API", spend, _headers(keys[0]), b"}"),
        ]
        before = meter.snapshot()
        mix = run_phase("mix", ops, args.seconds, args.progress, watch)
        mix.background = meter.background(before)
        phases.append(mix)

        log("Letting the worker drain")
        drained = drain_rollups(celery, args.drain_seconds)
        log(f"  {drained}")
        sent = {k: v for p in phases for k, v in p.sent.items()}
        records_ok, record_lines = check_records(db, sent)
        rollups_ok, rollup_lines = check_rollups(db)
        windows_ok, window_lines = check_windows(celery)
        problems = log_problems(server, celery, preflight_server)
        alive = celery.alive()
    finally:
        celery.stop()
        server.stop()
        if preflight_server is not None:
            preflight_server.stop()

    print(f"\n## Mixed load: {args.seconds:g} s at {args.share:.0%} of the ingest ceiling\n")
    for name, value in facts:
        print(f"- {name}: {value}")
    print(f"- Server: gunicorn, {args.workers} sync workers; {_preflight_server_text(args)}; "
          f"Celery worker (prefork, 2 processes) and beat; "
          f"Redis for the cache and the broker")  # fmt: skip
    print(f"- Ingest ceiling: {ceiling:,.0f} records/s ({'measured in this run' if not args.ingest_rate else 'given'});"
          f" mix target {target:,.0f} records/s")  # fmt: skip
    for phase in phases:
        print_phase(phase)
    mixed = sum(r.records for r in mix.ops.values())
    achieved = mixed / args.seconds
    errors = sum(r.errors for r in mix.ops.values()) + sum(r.errors for p in phases[:-1] for r in p.ops.values())
    pf = mix.ops["preflight"]
    worst = max(pf.interval_p99) if pf.interval_p99 else float("inf")
    print("\nThe books:")
    for line in [*record_lines, drained, *rollup_lines, *window_lines, *problems]:
        print(f"  {line}")
    checks = [
        ("records stored == records sent, every request id once", records_ok, record_lines[0]),
        ("rollups equal the raw sums", rollups_ok, rollup_lines[0]),
        (
            "every budget window equals its records and holds, no drift corrected",
            windows_ok,
            f"{sum(1 for line in window_lines if line.startswith('ok '))} windows exact",
        ),  # fmt: skip
        ("zero errors", errors == 0, f"{errors}"),
        (
            f"records/s at >= {args.share:.0%} of the ceiling",
            achieved >= 0.98 * target,
            f"{achieved:,.0f} of {target:,.0f} ({achieved / ceiling:.2f} of the ceiling)",
        ),  # fmt: skip
        (
            "preflight p99 under 25 ms in every interval",
            worst < TARGET_PREFLIGHT_P99,
            f"worst {fmt_ms(worst)}, overall {fmt_ms(percentile(pf.latencies, 99) if pf.latencies else float('nan'))}",
        ),
        ("the Celery worker and beat ran throughout", alive, "alive" if alive else "one of them exited"),
        ("no error in the gunicorn, worker and beat logs", not problems, "; ".join(problems) or "none"),
    ]
    print("\nTargets and checks:")
    for name, ok, value in checks:
        print(f"  {name}: {'yes' if ok else 'NO'} ({value})")
    print(f"\nLogs: {workdir}")
    return 1 if args.check and not all(ok for _, ok, _ in checks) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"\nBENCH FAILED: {exc}", file=sys.stderr)
        sys.exit(2)
