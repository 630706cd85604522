"""Ingest throughput: POST /api/v1/usage under gunicorn on PostgreSQL, beside its baseline and its ceiling.

One run prints, for the same realistic records:

- records/s through the API (batches of 1,000 from a few concurrent client connections on the same
  machine), with the p50/p99 latency of one batch request;
- the straightforward path as a baseline: DRF ModelSerializer(many=True) + bulk_create, served by the
  same gunicorn under a bench-only URL (bench/_baseline.py);
- the ceiling: psycopg COPY of the rows the API stored, into the same table with the same indexes;
- single-record POST latency (sequential requests from one client).

    .venv/bin/python bench/ingest.py            # 100,000 records, a few minutes
    .venv/bin/python bench/ingest.py --quick    # 10,000 records
    .venv/bin/python bench/ingest.py --profile  # adds py-spy passes: where a worker's time goes

It drops and recreates its own database (default `finops_bench`; the name must contain "bench").
Figures and method: docs/performance.md.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

API_PATH = "/api/v1/usage"
BASELINE_PATH = "/bench/baseline/usage"
TABLE = "finops_usagerecord"

TARGET_RECORDS_PER_SECOND = 25_000
TARGET_TIMES_BASELINE = 4.0
TARGET_SHARE_OF_COPY = 1 / 3

# --- realistic records ------------------------------------------------------------------------------

# (slug, name, share of the traffic)
TENANTS = [
    ("acme", "Acme Corp", 0.34),
    ("globex", "Globex", 0.24),
    ("initech", "Initech", 0.18),
    ("umbrella", "Umbrella Health", 0.14),
    ("hooli", "Hooli", 0.10),
]
# (slug, share, input tokens p50, output tokens p50, share of input served from a prompt cache)
WORKFLOWS = [
    ("ticket-summary", 0.18, 1_800, 250, 0.2),
    ("chat-assistant", 0.22, 3_500, 400, 0.6),
    ("nightly-reindex", 0.10, 900, 60, 0.0),
    ("email-draft", 0.08, 1_200, 500, 0.1),
    ("code-review", 0.06, 6_000, 900, 0.3),
    ("search-rerank", 0.12, 2_500, 40, 0.0),
    ("doc-qa", 0.10, 8_000, 350, 0.7),
    ("sentiment-tagging", 0.08, 300, 5, 0.0),
    ("meeting-notes", 0.03, 12_000, 1_200, 0.1),
    ("translation", 0.03, 700, 750, 0.0),
]
# (name as sent, provider, share, has reasoning tokens). Dated snapshots and aliases resolve through the
# catalog; the last two are unknown to it (~1%) and are stored unpriced.
MODELS = [
    ("gpt-4o", "openai", 0.12, False),
    ("gpt-4o-2024-08-06", "openai", 0.06, False),
    ("gpt-4o-mini", "openai", 0.16, False),
    ("gpt-4.1-mini-2025-04-14", "openai", 0.08, False),
    ("o4-mini", "openai", 0.07, True),
    ("gpt-5-mini", "openai", 0.08, True),
    ("claude-sonnet-4-5-20250929", "anthropic", 0.14, False),
    ("claude-haiku-4-5", "anthropic", 0.12, False),
    ("claude-opus-4-1", "anthropic", 0.04, False),
    ("gemini-2.5-flash", "google", 0.12, False),
    ("llama-3.1-70b-instruct", "self-hosted", 0.006, False),
    ("acme-ft-support-v3", "self-hosted", 0.004, False),
]
UNKNOWN_MODELS = ("llama-3.1-70b-instruct", "acme-ft-support-v3")
# Shares of the token shapes: canonical fields ~60%, OpenAI usage ~25%, Anthropic usage ~15%. OpenAI
# models are ~57% of the traffic and Anthropic ones ~30%, hence the conditional shares.
OPENAI_USAGE_SHARE = 0.25 / 0.57
ANTHROPIC_USAGE_SHARE = 0.15 / 0.30
ENVIRONMENTS = (("prod", 0.90), ("stage", 0.07), ("dev", 0.03))
TEAMS = ("support", "growth", "platform", "search", "success", "data")
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
OFFSETS = (timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30)))


def _tokens(rng: random.Random, p50: int) -> int:
    return max(1, int(p50 * math.exp(rng.gauss(0, 0.6))))


def _timestamp(rng: random.Random, now: datetime) -> str:
    when = now - timedelta(seconds=rng.uniform(60, 3 * 86_400))
    style = rng.random()
    if style < 0.7:  # what most SDKs and loggers emit
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if style < 0.9:
        return when.isoformat()
    return when.astimezone(rng.choice(OFFSETS)).isoformat()


def make_record(rng: random.Random, serial: int, now: datetime) -> dict:
    workflow, _, in_p50, out_p50, cache_share = rng.choices(WORKFLOWS, weights=[w[1] for w in WORKFLOWS])[0]
    model, provider, _, reasons = rng.choices(MODELS, weights=[m[2] for m in MODELS])[0]
    prompt = _tokens(rng, in_p50)
    cached = int(prompt * cache_share * rng.random()) if cache_share and rng.random() < 0.7 else 0
    output = _tokens(rng, out_p50)
    reasoning = int(output * rng.uniform(0.5, 3)) if reasons else 0
    tags = {"team": rng.choice(TEAMS), "region": rng.choice(REGIONS)}
    if rng.random() < 0.5:
        tags["release"] = f"2026.11.{rng.randint(1, 4)}"
    record = {
        "request_id": "",
        "workflow": workflow,
        "model": model,
        "environment": rng.choices(ENVIRONMENTS, weights=[e[1] for e in ENVIRONMENTS])[0][0],
        "occurred_at": _timestamp(rng, now),
        "tags": tags,
    }
    if provider == "openai" and rng.random() < OPENAI_USAGE_SHARE:
        record["request_id"] = f"chatcmpl-{serial:08x}{rng.getrandbits(84):021x}"
        record["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": output + reasoning,
            "total_tokens": prompt + output + reasoning,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
    elif provider == "anthropic" and rng.random() < ANTHROPIC_USAGE_SHARE:
        record["request_id"] = f"msg_01{serial:08x}{rng.getrandbits(56):014x}"
        record["usage"] = {
            "input_tokens": prompt - cached,
            "cache_creation_input_tokens": int(prompt * 0.2) if cached == 0 and rng.random() < 0.3 else 0,
            "cache_read_input_tokens": cached,
            "output_tokens": output,
            "service_tier": "standard",
        }
    else:
        record["request_id"] = f"req-{serial:08x}-{rng.getrandbits(64):016x}"
        record["input_tokens"] = prompt - cached
        record["output_tokens"] = output
        if cached:
            record["cached_input_tokens"] = cached
        if reasoning:
            record["reasoning_tokens"] = reasoning
    return record


def shape_of(record: dict) -> str:
    usage = record.get("usage")
    if usage is None:
        return "canonical"
    return "openai" if "prompt_tokens" in usage else "anthropic"


@dataclass
class Job:
    tenant: int  # index into TENANTS: each batch is posted with that tenant's key
    body: bytes
    records: int


def make_batches(rng: random.Random, total: int, batch_size: int, now: datetime) -> tuple[list[Job], Counter]:
    jobs, shapes, serial = [], Counter(), 0
    weights = [t[2] for t in TENANTS]
    while serial < total:
        n = min(batch_size, total - serial)
        tenant = rng.choices(range(len(TENANTS)), weights=weights)[0]
        records = [make_record(rng, serial + i, now) for i in range(n)]
        shapes.update(shape_of(r) for r in records)
        shapes.update("unknown model" for r in records if r["model"] in UNKNOWN_MODELS)
        jobs.append(Job(tenant=tenant, body=orjson.dumps({"records": records}), records=n))
        serial += n
    return jobs, shapes


# --- database and fixtures --------------------------------------------------------------------------


def recreate_database(url: str) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if "bench" not in name:
        raise SystemExit(f"Refusing to drop database {name!r}: the bench database's name must contain 'bench'.")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def django_setup(database_url: str, **env: str) -> None:
    """The benches' environment (inherited by the servers and workers they start), with `env` on top."""
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench._settings",
            "DATABASE_URL": database_url,
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": "bench-only-secret-key-not-for-production",
            "LOG_LEVEL": "WARNING",
            # High enough that no bench request is throttled; the throttle itself still runs on each one.
            "API_KEY_RATE": "1000000/min",
            **env,
        }
    )
    import django

    django.setup()


FALLBACK_CATALOG = [
    # name, provider, tier, aliases, pattern, input, cached input, cache write, output (USD per 1M tokens)
    ("gpt-4o", "openai", "standard", ["gpt-4o-2024-08-06"], r"gpt-4o-\d{4}-\d{2}-\d{2}", "2.50", "1.25", "2.50", "10"),
    ("gpt-4o-mini", "openai", "economy", [], r"gpt-4o-mini-\d{4}-\d{2}-\d{2}", "0.15", "0.075", "0.15", "0.60"),
    ("gpt-4.1-mini", "openai", "economy", [], r"gpt-4\.1-mini-\d{4}-\d{2}-\d{2}", "0.40", "0.10", "0.40", "1.60"),
    ("o4-mini", "openai", "standard", [], r"o4-mini-\d{4}-\d{2}-\d{2}", "1.10", "0.275", "1.10", "4.40"),
    ("gpt-5-mini", "openai", "standard", [], r"gpt-5-mini-\d{4}-\d{2}-\d{2}", "0.25", "0.025", "0.25", "2"),
    ("claude-sonnet-4-5", "anthropic", "standard", [], r"claude-sonnet-4-5-\d{8}", "3", "0.30", "3.75", "15"),
    ("claude-haiku-4-5", "anthropic", "economy", [], r"claude-haiku-4-5-\d{8}", "1", "0.10", "1.25", "5"),
    ("claude-opus-4-1", "anthropic", "premium", [], r"claude-opus-4-1-\d{8}", "15", "1.50", "18.75", "75"),
    ("gemini-2.5-flash", "google", "standard", [], "", "0.30", "0.03", "0.30", "2.50"),
]


def load_catalog() -> str:
    """The shipped seed catalog when `catalog_seed` exists, else a handful of models and prices."""
    try:
        from finops.services.seed import catalog_seed
    except ImportError:
        catalog_seed = None
    if catalog_seed is not None:
        catalog_seed()
        return "finops.services.seed.catalog_seed()"

    from finops.models import LlmModel, ModelPrice, ModelTier

    tiers = {
        slug: ModelTier.objects.create(slug=slug, name=slug.capitalize(), rank=rank)
        for rank, slug in enumerate(("economy", "standard", "premium"), start=1)
    }
    since = datetime(2025, 1, 1, tzinfo=UTC)
    for name, provider, tier, aliases, pattern, inp, cached, write, out in FALLBACK_CATALOG:
        model = LlmModel.objects.create(
            name=name, provider=provider, tier=tiers[tier], aliases=aliases, match_pattern=pattern
        )
        ModelPrice.objects.create(
            model=model,
            effective_from=since,
            input=Decimal(inp),
            cached_input=Decimal(cached),
            cache_write=Decimal(write),
            output=Decimal(out),
        )
    return f"{len(FALLBACK_CATALOG)} models created by the bench (finops.services.seed not found)"


def create_fixtures() -> list[str]:
    """Tenants, one ingest key each (returns the raw keys in TENANTS order) and the registered workflows."""
    from finops.models import Workflow
    from tenants.models import Tenant
    from tenants.services import api_key_create

    for slug, *_ in WORKFLOWS:
        Workflow.objects.create(slug=slug, name=slug.replace("-", " ").capitalize(), owner="bench")
    keys = []
    for slug, name, _ in TENANTS:
        tenant = Tenant.objects.create(slug=slug, name=name)
        _, raw = api_key_create(tenant=tenant, name="bench ingest", scopes="ingest,read")
        keys.append(raw)
    return keys


def reset_table(db: str) -> None:
    """Every phase starts from an empty table and a fresh checkpoint, so none pays for another's writes."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLE}")
        conn.execute("CHECKPOINT")


def count_rows(db: str) -> int:
    with psycopg.connect(db, autocommit=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]


# --- gunicorn -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The app under gunicorn, as production runs it, with the bench URL added (bench/_settings.py)."""

    def __init__(self, *, workers: int, worker_class: str, threads: int, log_path: Path):
        self.port = free_port()
        self.log_path = log_path
        self.argv = [
            sys.executable, "-m", "gunicorn", "finops.wsgi:application",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(workers),
            "--worker-class", worker_class,
            "--log-level", "warning",
            "--timeout", "120",
        ]  # fmt: skip
        if worker_class == "gthread":
            self.argv += ["--threads", str(threads)]
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"gunicorn exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", API_PATH)
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                time.sleep(0.2)
        raise BenchError(f"gunicorn did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                    pids.append(int(entry.name))
        return pids

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # our own session: the master and its workers
            self.process.wait()


# --- a shared machine ---------------------------------------------------------------------------------


def _jiffies(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def _machine_jiffies() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])
    return total, total - values[3] - values[4]  # (all, busy): idle and iowait are not busy


class CpuMeter:
    """Tells this benchmark's CPU use (itself, gunicorn, its PostgreSQL backends and PostgreSQL's WAL writer,
    checkpointer and background writer) from other processes'.

    Other people's tests and servers on the same two cores slow every phase down; each figure is
    printed with the share of the machine they used meanwhile, and a phase waits for a quiet
    machine first (up to --wait-quiet seconds).
    """

    def __init__(self, db: str, server: Server | None = None):
        self.conn = psycopg.connect(db, autocommit=True)
        self.server = server

    def _our_pids(self) -> set[int]:
        pids = {os.getpid()}
        if self.server is not None and self.server.process is not None:
            pids |= {self.server.process.pid, *self.server.worker_pids()}
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " OR backend_type IN ('checkpointer', 'walwriter', 'background writer')"
        ).fetchall()
        return pids | {r[0] for r in rows}

    def snapshot(self) -> tuple[int, int, dict[int, int]]:
        total, busy = _machine_jiffies()
        return total, busy, {pid: _jiffies(pid) for pid in self._our_pids()}

    def background(self, before: tuple[int, int, dict[int, int]]) -> float:
        total0, busy0, ours0 = before
        total1, busy1, ours1 = self.snapshot()
        ours = sum(max(0, ours1.get(pid, j) - j) for pid, j in ours0.items())
        ours += sum(j for pid, j in ours1.items() if pid not in ours0)
        return max(0.0, (busy1 - busy0 - ours) / max(1, total1 - total0))

    def wait_quiet(self, max_wait: float, threshold: float = 0.2) -> None:
        deadline = time.monotonic() + max_wait
        while True:
            before = self.snapshot()
            time.sleep(1)
            load = self.background(before)
            if load <= threshold:
                return
            if time.monotonic() >= deadline:
                log(f"  the machine is still {load:.0%} busy with other processes; measuring anyway")
                return
            log(f"  waiting for a quieter machine: other processes use {load:.0%} of the CPU")
            time.sleep(4)

    def measure(self, max_wait: float, phase):
        """Run `phase()` (which returns a Run) on as quiet a machine as we get; note the background load."""
        self.wait_quiet(max_wait)
        before = self.snapshot()
        run = phase()
        run.background = self.background(before)
        return run


# --- the client ---------------------------------------------------------------------------------------


class BenchError(Exception):
    pass


class Connection(http.client.HTTPConnection):
    """Keep-alive where the server allows it; gunicorn's sync workers close the connection after each
    response and http.client opens a new one for the next request."""

    def connect(self):
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class Run:
    label: str
    records: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    background: float | None = None  # share of the machine's CPU that other processes used meanwhile

    @property
    def per_second(self) -> float:
        return self.records / self.seconds

    def pct(self, p: float) -> float:
        return percentile(self.latencies, p)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def post_all(
    port: int, path: str, jobs: list[Job], keys: list[str], clients: int, label: str, quiet: bool = False
) -> Run:
    """Post every job from `clients` threads, each with its own connection; fail on anything but 200/all accepted."""
    headers = [
        {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Accept": "application/json"}
        for key in keys
    ]
    latencies = [0.0] * len(jobs)
    next_job = itertools.count()
    errors: list[BaseException] = []
    done = [0]
    lock = threading.Lock()

    def client() -> None:
        conn = Connection("127.0.0.1", port, timeout=300)
        try:
            while not errors:
                i = next(next_job)
                if i >= len(jobs):
                    return
                job = jobs[i]
                started = time.perf_counter()
                conn.request("POST", path, job.body, headers[job.tenant])
                response = conn.getresponse()
                data = response.read()
                latencies[i] = time.perf_counter() - started
                check_response(label, response.status, data, job.records)
                with lock:
                    done[0] += job.records
        except BaseException as exc:  # noqa: B036 - handed to the main thread, which raises it
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    total = sum(j.records for j in jobs)
    last_report = started
    while any(t.is_alive() for t in threads):
        threads[0].join(0.2) if threads[0].is_alive() else time.sleep(0.2)
        now = time.perf_counter()
        if not quiet and now - last_report >= 5:
            last_report = now
            log(f"  {label}: {done[0]:,}/{total:,} records, {done[0] / (now - started):,.0f}/s so far")
    seconds = time.perf_counter() - started
    if errors:
        raise BenchError(f"{label}: {errors[0]!r}") from errors[0]
    return Run(label=label, records=total, seconds=seconds, latencies=latencies)


def check_response(label: str, status: int, data: bytes, expected: int) -> None:
    """The API answers 200 with per-item outcomes; the baseline 201 with the stored records (CreateAPIView style)."""
    if status not in (200, 201):
        raise BenchError(f"{label}: HTTP {status}: {data[:600]!r}")
    body = orjson.loads(data)
    if isinstance(body, list):
        stored = sum(1 for item in body if item.get("id"))
        if status != 201 or stored != expected:
            raise BenchError(f"{label}: expected {expected} stored records, got {stored} (HTTP {status})")
        return
    if status != 200 or body.get("accepted") != expected:
        summary = {k: body.get(k) for k in ("accepted", "duplicate", "conflict", "rejected")}
        rejected = [i for i in body.get("items", []) if i.get("status") != "accepted"][:3]
        raise BenchError(f"{label}: expected {expected} accepted, got {summary}; first others: {rejected}")


def post_singles(port: int, records: list[dict], key: str) -> Run:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Accept": "application/json"}
    bodies = [orjson.dumps(r) for r in records]
    conn = Connection("127.0.0.1", port, timeout=60)
    latencies = []
    started = time.perf_counter()
    for body in bodies:
        t0 = time.perf_counter()
        conn.request("POST", API_PATH, body, headers)
        response = conn.getresponse()
        data = response.read()
        latencies.append(time.perf_counter() - t0)
        check_response("single-record POST", response.status, data, 1)
    seconds = time.perf_counter() - started
    conn.close()
    return Run(label="single", records=len(bodies), seconds=seconds, latencies=latencies)


# --- the COPY ceiling ---------------------------------------------------------------------------------


def read_stored_rows(db: str) -> tuple[list[str], list[int], list[tuple]]:
    """The rows exactly as the API stored them, with the column list and type oids of the table."""
    with psycopg.connect(db, autocommit=True) as conn:
        columns = conn.execute(
            "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum",
            [TABLE],
        ).fetchall()
        names = [c[0] for c in columns]
        rows = conn.execute(
            sql.SQL("SELECT {} FROM {} ORDER BY id").format(
                sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(TABLE)
            )
        ).fetchall()
    return names, [c[1] for c in columns], rows


def copy_rows(
    conn: psycopg.Connection, names: list[str], oids: list[int], rows: list[tuple], *, binary: bool, batch: int
) -> Run:
    """COPY `rows` in transactions of `batch` rows: binary (the fastest psycopg offers) or text, as the API does.

    The connection is opened by the caller, before the CPU meter's first reading, so its backend counts as ours.
    """
    from psycopg.types.json import set_json_dumps

    tags = names.index("tags")
    if not binary:  # the API writes tags as JSON text; prepare that outside the timing
        rows = [(*r[:tags], orjson.dumps(r[tags]).decode(), *r[tags + 1 :]) for r in rows]
    statement = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
        sql.Identifier(TABLE),
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(" (FORMAT BINARY)" if binary else ""),
    )
    latencies = []
    set_json_dumps(orjson.dumps, context=conn)
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        t0 = time.perf_counter()
        with conn.cursor() as cursor, cursor.copy(statement) as copy:
            if binary:
                copy.set_types(oids)
            for row in rows[start : start + batch]:
                copy.write_row(row)
        conn.commit()
        latencies.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - started
    transactions = "one transaction" if batch >= len(rows) else f"{batch:,}-row transactions"
    label = f"COPY {'binary' if binary else 'text'}, {transactions}"
    return Run(label=label, records=len(rows), seconds=seconds, latencies=latencies)


# --- profile (py-spy) ----------------------------------------------------------------------------------

# A sample belongs to the deepest frame of its stack that matches one of these (category, functions,
# file): "COPY" covers writing the rows and waiting for PostgreSQL to take them, and so on. Later
# entries win over earlier ones on the same frame.
PROFILE_MARKERS = [
    ("gunicorn: read and parse the request", None, "gunicorn/http/"),
    ("gunicorn: write the response", {"write", "send_headers", "close", "sendall"}, "gunicorn/http/wsgi.py"),
    ("API key authentication (1 query)", {"authenticate"}, "tenants/authentication.py"),
    ("throttle", {"allow_request"}, "rest_framework/throttling.py"),
    ("JSON parse (orjson)", {"parse"}, "finops/parsers.py"),
    ("view: rest (response dict, orjson.dumps)", {"post"}, "finops/apis/usage.py"),
    ("view: build response items", {"<listcomp>"}, "finops/apis/usage.py"),
    ("view: build response items", {"nanos_to_usd"}, "finops/pricing.py"),
    ("service: rest", {"usage_ingest"}, "finops/services/ingest.py"),
    ("service: result counts", {"count", "all_stored"}, "finops/services/ingest.py"),
    ("validation", None, "finops/services/usage_validation.py"),
    ("validation", {"_validate"}, "finops/services/ingest.py"),
    ("catalog fingerprint (1 query)", {"get_catalog"}, "finops/catalog.py"),
    ("pricing", {"_price"}, "finops/services/ingest.py"),
    ("content hash", {"_content_hash"}, "finops/services/ingest.py"),
    ("workflow ids (1 query)", {"_resolve_workflows"}, "finops/services/ingest.py"),
    ("duplicate check", {"_classify", "_classify_existing", "_stored"}, "finops/services/ingest.py"),
    ("COPY (ids + rows)", {"_insert", "_pg_copy"}, "finops/services/ingest.py"),
    ("commit (deferred FK checks, WAL flush)", {"__exit__"}, "django/db/transaction.py"),
]
OUTSIDE_THE_VIEW = "Django + DRF request/response machinery"
NOT_THE_VIEW = {OUTSIDE_THE_VIEW, *(m[0] for m in PROFILE_MARKERS[:4])}
PROFILE_RATE = 250  # samples per second per thread


def _frame_matches(frame: str, functions: set[str] | None, path: str) -> bool:
    # py-spy raw frames look like "Class.method (path/to/file.py:123)"
    name, _, location = frame.partition(" (")
    return path in location and (functions is None or name.rpartition(".")[2] in functions)


def classify_stack(frames: list[str]) -> str | None:
    """The category of one sample, or None when the thread was not handling a request."""
    if not any(_frame_matches(f, {"handle"}, "gunicorn/workers/") for f in frames):
        return None
    category = OUTSIDE_THE_VIEW
    for frame in frames:
        for name, functions, path in PROFILE_MARKERS:
            if _frame_matches(frame, functions, path):
                category = name
    return category


def summarise_profile(raw_path: Path) -> list[tuple[str, int]]:
    totals: Counter = Counter()
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        category = classify_stack(stack.split(";"))
        if category is not None:
            totals[category] += int(count)
    return totals.most_common()


def find_py_spy() -> str | None:
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


# --- report -------------------------------------------------------------------------------------------


def machine_facts(db: str) -> list[tuple[str, str]]:
    import django
    import gunicorn
    import rest_framework

    with psycopg.connect(db, autocommit=True) as conn:
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
        pg_settings = ", ".join(
            f"{name}={conn.execute(sql.SQL('SHOW {}').format(sql.Identifier(name))).fetchone()[0]}"
            for name in ("shared_buffers", "synchronous_commit", "fsync", "max_wal_size")
        )
    cpu = "?"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return [
        ("CPU", f"{os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}), {cpu}"),
        ("PostgreSQL", f"{pg_version} ({pg_settings})"),
        (
            "Python",
            f"{platform.python_version()}, Django {django.get_version()}, DRF {rest_framework.VERSION}, "
            f"psycopg {psycopg.__version__}, gunicorn {gunicorn.__version__}",
        ),
    ]


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f} ms"


def best(runs: list[Run]) -> Run:
    return max(runs, key=lambda r: r.per_second)


def fmt_rounds(runs: list[Run]) -> str:
    return " / ".join(f"{r.per_second / 1000:.1f}k" for r in runs)


def print_results(args, facts, shapes, results: dict[str, list[Run]]) -> bool:
    print()
    print(f"## Ingest benchmark: {args.records:,} records in batches of {args.batch_size:,}, best of {args.rounds}")
    print()
    for name, value in facts:
        print(f"- {name}: {value}")
    server = f"{args.workers} {args.worker_class} workers" + (
        f" x {args.threads} threads" if args.worker_class == "gthread" else ""
    )
    print(f"- Server: gunicorn, {server}; client: {args.clients} concurrent connections on the same machine")
    total = sum(shapes[s] for s in ("canonical", "openai", "anthropic"))
    print(
        "- Records: "
        + ", ".join(f"{shapes[s] / total:.0%} {s}" for s in ("canonical", "openai", "anthropic"))
        + f" token shapes; {shapes['unknown model'] / total:.1%} unknown models; 5 tenants, 10 workflows"
    )
    print()
    copies = [runs for key, runs in results.items() if key.startswith("copy")]
    ceiling = max((best(runs) for runs in copies), key=lambda r: r.per_second, default=None)
    print(
        f"| {'path':<64} | {'records/s':>10} | {'batch p50':>10} | {'batch p99':>10} | {'other load':>10} "
        f"| {'all rounds, records/s':<23} |"
    )
    print(f"|{'-' * 66}|{'-' * 11}:|{'-' * 11}:|{'-' * 11}:|{'-' * 11}:|{'-' * 25}|")
    labels = {
        "api": f"API: POST {API_PATH}",
        "baseline": "Baseline: DRF ModelSerializer(many=True) + bulk_create [1]",
    }
    for key, runs in results.items():
        if key == "single":
            continue
        run = best(runs)
        name = labels.get(key, run.label) + (" (ceiling)" if run is ceiling else "")
        has_latency = len(run.latencies) > 1
        p50 = fmt_ms(run.pct(50)) if has_latency else "-"
        p99 = fmt_ms(run.pct(99)) if has_latency else "-"
        load = "-" if run.background is None else f"{run.background:.0%}"
        print(
            f"| {name:<64} | {run.per_second:>10,.0f} | {p50:>10} | {p99:>10} | {load:>10} | {fmt_rounds(runs):<23} |"
        )
    if "single" in results:
        single = min(results["single"], key=lambda r: r.pct(50))
        print()
        print(
            f"Single-record POST {API_PATH}, {single.records:,} sequential requests from one client: "
            f"p50 {fmt_ms(single.pct(50))}, p99 {fmt_ms(single.pct(99))}, {single.per_second:,.0f} requests/s"
            f" (other load {single.background:.0%}; best p50 of {len(results['single'])})"
        )
    print()
    print(
        "'other load': the share of the machine's CPU used during the phase by processes other than this benchmark,"
        " its gunicorn and its PostgreSQL backends; figures taken under load understate the code's speed."
    )
    if "baseline" in results:
        print(
            "[1] validators = [] (DRF's default unique-together validator would issue one SELECT per record); "
            "workflow slugs memoised per request; ListSerializer.create is one bulk_create; the response is "
            "serializer.data (201); no pricing, content hash or duplicate detection."
        )
    if "api" not in results:
        return True
    api = best(results["api"])
    checks = [
        (
            f">= {TARGET_RECORDS_PER_SECOND:,} records/s through the API",
            api.per_second >= TARGET_RECORDS_PER_SECOND,
            f"{api.per_second:,.0f}",
        )
    ]
    if "baseline" in results:
        x_baseline = api.per_second / best(results["baseline"]).per_second
        checks.append((f">= {TARGET_TIMES_BASELINE:.0f}x the baseline", x_baseline >= TARGET_TIMES_BASELINE,
                       f"{x_baseline:.1f}x"))  # fmt: skip
    if ceiling is not None:
        of_copy = api.per_second / ceiling.per_second
        checks.append((">= 1/3 of the COPY ceiling", of_copy >= TARGET_SHARE_OF_COPY,
                       f"{of_copy:.2f} of {ceiling.label}"))  # fmt: skip
    print()
    print("Targets:")
    for name, ok, value in checks:
        print(f"  {name}: {'yes' if ok else 'NO'} ({value})")
    return all(ok for _, ok, _ in checks)


# --- main ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/finops_bench",
        help="dropped and recreated; its name must contain 'bench' (default %(default)s)",
    )
    p.add_argument("--records", type=int, default=100_000, help="records per phase (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=1000, help="records per request (default %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (default %(default)s)")
    p.add_argument("--worker-class", choices=["sync", "gthread"], default="sync", help="(default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="threads per gthread worker (default %(default)s)")
    p.add_argument("--clients", type=int, default=3, help="concurrent client connections (default %(default)s)")
    p.add_argument("--single", type=int, default=2000, help="single-record POSTs (default %(default)s)")
    p.add_argument(
        "--rounds", type=int, default=3, help="measure each path this many times, keep the best (default %(default)s)"
    )
    p.add_argument(
        "--phases",
        type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
        default=["api", "baseline", "single", "copy"],
        help="comma-separated subset of api,baseline,single,copy (default: all)",
    )
    p.add_argument("--quick", action="store_true", help="10,000 records, 300 single-record POSTs, 1 round")
    p.add_argument("--profile", action="store_true", help="add py-spy passes over the API phases (pip install py-spy)")
    p.add_argument(
        "--profile-out",
        default=None,
        help="path stem for py-spy's collapsed stacks (<stem>-batches.txt, <stem>-single.txt; default: a temp dir)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=120,
        help="wait up to this many seconds before each phase for other processes to go quiet (default %(default)s)",
    )
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--seed", type=int, default=42, help="random seed of the records (default %(default)s)")
    args = p.parse_args(argv)  # fmt: skip
    if args.quick:
        args.records, args.single, args.rounds = min(args.records, 10_000), min(args.single, 300), 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    db = args.database_url
    py_spy = find_py_spy() if args.profile else None
    if args.profile and py_spy is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")

    log(f"Recreating database {urlsplit(db).path.lstrip('/')} and migrating")
    recreate_database(db)
    django_setup(db)
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    log(f"Catalog: {load_catalog()}")
    keys = create_fixtures()
    facts = machine_facts(db)
    for name, value in facts:
        log(f"{name}: {value}")

    rng = random.Random(args.seed)
    now = datetime.now(UTC)
    log(f"Generating {args.records:,} records in batches of {args.batch_size:,}")
    jobs, shapes = make_batches(rng, args.records, args.batch_size, now)
    warmup, _ = make_batches(random.Random(args.seed + 1), args.batch_size * 3 * args.workers, args.batch_size, now)
    for job in warmup:  # distinct request ids: warm-up rows never collide with the measured ones
        job.body = job.body.replace(b'"request_id":"', b'"request_id":"warm-')
    singles = [make_record(rng, 10**7 + i, now) for i in range(args.single + 50)]
    log(f"  {sum(len(j.body) for j in jobs) / len(jobs) / 1024:,.0f} KiB per batch body; shapes {dict(shapes)}")

    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    server = Server(
        workers=args.workers, worker_class=args.worker_class, threads=args.threads, log_path=workdir / "gunicorn.log"
    )
    meter = CpuMeter(db, server)
    phases = set(args.phases)
    results: dict[str, list[Run]] = {}
    stored = None
    profiles = []
    log(f"Starting gunicorn: {' '.join(server.argv[1:])}")
    server.start()
    try:
        log("Warming up both paths (connections, catalog snapshot, imports)")
        post_all(server.port, API_PATH, warmup, keys, args.clients, "warm-up API", quiet=True)
        reset_table(db)
        post_all(server.port, BASELINE_PATH, warmup, keys, args.clients, "warm-up baseline", quiet=True)
        post_singles(server.port, singles[:50], keys[0])

        for round_no in range(1, args.rounds + 1):
            log(f"Round {round_no} of {args.rounds}")
            if "api" in phases or "copy" in phases:
                reset_table(db)
                log(f"API: posting {args.records:,} records to {API_PATH}")
                run = meter.measure(
                    args.wait_quiet, lambda: post_all(server.port, API_PATH, jobs, keys, args.clients, "API")
                )
                log(f"  API: {run.per_second:,.0f} records/s, batch p50 {fmt_ms(run.pct(50))} "
                    f"p99 {fmt_ms(run.pct(99))}, other load {run.background:.0%}")  # fmt: skip
                results.setdefault("api", []).append(run)
                stored_count = count_rows(db)
                if stored_count != args.records:
                    raise BenchError(f"the table holds {stored_count} rows after the API phase, not {args.records}")
                if stored is None:
                    names, oids, stored = read_stored_rows(db)
                    priced = sum(1 for r in stored if r[names.index("priced")])
                    log(f"  {priced:,} of {len(stored):,} stored rows priced")

            if "baseline" in phases:
                reset_table(db)
                log(f"Baseline: posting the same {args.records:,} records to {BASELINE_PATH}")
                run = meter.measure(
                    args.wait_quiet, lambda: post_all(server.port, BASELINE_PATH, jobs, keys, args.clients, "baseline")
                )
                log(f"  baseline: {run.per_second:,.0f} records/s, batch p50 {fmt_ms(run.pct(50))}, "
                    f"other load {run.background:.0%}")  # fmt: skip
                results.setdefault("baseline", []).append(run)

            if "single" in phases:
                reset_table(db)
                log(f"Single-record POSTs: {args.single:,} sequential requests")
                run = meter.measure(args.wait_quiet, lambda: post_singles(server.port, singles[50:], keys[0]))
                log(f"  single: p50 {fmt_ms(run.pct(50))}, p99 {fmt_ms(run.pct(99))}, "
                    f"other load {run.background:.0%}")  # fmt: skip
                results.setdefault("single", []).append(run)

        if py_spy:
            stem = Path(args.profile_out) if args.profile_out else workdir / "profile"
            reset_table(db)
            profiles.append(
                run_profile(
                    "1,000-record batches",
                    lambda: post_all(server.port, API_PATH, jobs, keys, args.clients, "API (py-spy)"),
                    server,
                    py_spy,
                    stem.with_name(f"{stem.name}-batches.txt"),
                    workdir,
                )
            )
            reset_table(db)
            profiles.append(
                run_profile(
                    "single-record POSTs",
                    lambda: post_singles(server.port, singles[50:], keys[0]),
                    server,
                    py_spy,
                    stem.with_name(f"{stem.name}-single.txt"),
                    workdir,
                )
            )
    finally:
        server.stop()

    if "copy" in phases:
        meter.server = None
        variants = [("copy-binary", True, len(stored)), ("copy-text", False, len(stored))]
        variants.append(("copy-text-batches", False, args.batch_size))
        for _ in range(args.rounds):
            for key, binary, batch in variants:
                reset_table(db)
                with psycopg.connect(db) as conn:
                    run = meter.measure(
                        args.wait_quiet,
                        lambda b=binary, n=batch: copy_rows(conn, names, oids, stored, binary=b, batch=n),
                    )
                if count_rows(db) != len(stored):
                    raise BenchError(f"{run.label} stored {count_rows(db)} rows, expected {len(stored)}")
                log(f"{run.label}: {run.per_second:,.0f} rows/s, other load {run.background:.0%}")
                results.setdefault(key, []).append(run)
        reset_table(db)

    met = print_results(args, facts, shapes, results)
    for profile in profiles:
        if profile:
            print_profile(*profile)
    print(f"\ngunicorn log: {server.log_path}")
    return 1 if args.check and not met else 0


def run_profile(label: str, phase, server: Server, py_spy: str, out: Path, workdir: Path):
    """Run `phase()` again under py-spy (sampling the gunicorn workers) and sum its samples by category."""
    log(f"Profile: {label} again under py-spy (collapsed stacks: {out})")
    with (workdir / "py-spy.log").open("ab") as spy_log:
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(server.process.pid), "--subprocesses", "--idle", "--nonblocking",
             "--rate", str(PROFILE_RATE), "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=spy_log,
        )  # fmt: skip
    time.sleep(2)  # py-spy attaches to the master, then finds the workers
    run = phase()
    time.sleep(0.5)
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()
    if not out.exists():
        log(f"  py-spy wrote nothing: {(workdir / 'py-spy.log').read_text(errors='replace')[-500:]}")
        return None
    return label, run, summarise_profile(out), out


def print_profile(label: str, run: Run, totals: list[tuple[str, int]], out: Path) -> None:
    busy = sum(n for _, n in totals)
    if not busy:
        print(f"\nProfile of {label}: no samples inside request handling")
        return
    requests = len(run.latencies)
    outside = sum(n for name, n in totals if name in NOT_THE_VIEW)
    print()
    print(
        f"## Where a worker's time goes, {label}: py-spy, wall clock while handling a request, {busy:,} samples "
        f"({run.per_second:,.0f} records/s while profiled)"
    )
    print()
    print(f"| {'part':<48} | {'share':>6} | {'ms per request':>14} |")
    print(f"|{'-' * 50}|{'-' * 7}:|{'-' * 15}:|")
    for name, n in totals:
        print(f"| {name:<48} | {n / busy:>6.1%} | {n / PROFILE_RATE / requests * 1000:>14.2f} |")
    print()
    print(f"Outside the view (gunicorn, Django, DRF, auth, throttle): {outside / busy:.0%}")
    print(f"Collapsed stacks (speedscope.app or flamegraph.pl read them): {out}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"\nBENCH FAILED: {exc}", file=sys.stderr)
        sys.exit(2)
