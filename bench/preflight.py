"""Preflight decisions: POST /api/v1/preflight under gunicorn on PostgreSQL, beside its ceiling.

One run, on its own database, with 5 budgets and 2 active controls that every benchmark call matches:

- decisions/s and p50/p99 latency of POST /api/v1/preflight from 4 and from 32 concurrent clients;
- the ceiling: the same requests to the preflight view with the decision taken out (same base class:
  API-key authentication, scope, throttle, tenant resolution, JSON body; bench/_preflight_urls.py),
  served by the same gunicorn in the same run;
- API-key authentication in process (ApiKeyAuthentication.authenticate), in µs per call, with its
  two parts (the key lookup query and the SHA-256) beside it;
- the reservations that piled up (nothing settles them during the run) and the budgets' totals.

    .venv/bin/python bench/preflight.py             # 15 s per phase, best of 2 rounds: about 3 minutes
    .venv/bin/python bench/preflight.py --quick     # 4 s per phase, 1 round
    .venv/bin/python bench/preflight.py --profile   # adds a py-spy pass: where a worker's time goes

It drops and recreates its own database (default `finops_preflightbench`; the name must contain "bench").
Figures and method: docs/performance.md, section "Preflight".
"""

from __future__ import annotations

import argparse
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
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import psycopg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.ingest import (  # noqa: E402 - after the sys.path line above
    BenchError,
    Connection,
    CpuMeter,
    Server,
    find_py_spy,
    load_catalog,
    log,
    machine_facts,
    percentile,
    recreate_database,
)
from bench.ingest import django_setup as ingest_django_setup  # noqa: E402

PREFLIGHT_PATH = "/api/v1/preflight"
CEILING_PATH = "/bench/ceiling/preflight"

TARGET_P99_AT_4 = 0.010  # seconds (issue 13)
TARGET_SHARE_OF_CEILING_AT_32 = 0.7
TARGET_AUTH = 0.0005  # seconds per call

TENANT = ("acme", "Acme Corp")
WORKFLOW = "support-reply"
# Standard-tier models (the tier budget matches them all), by share of the calls.
MODELS = [("gpt-4o", 0.5), ("claude-sonnet-4-5", 0.25), ("gemini-2.5-flash", 0.15), ("gpt-5-mini", 0.10)]
MAX_OUTPUT_CHOICES = (256, 512, 1024, 2048, 4096)  # above 1,024 the output cap control applies
USD = 10**9  # nano-USD
# Limits far above what a run reserves, so no call is denied (denials would be counted separately).
BUDGETS = [
    # name, scope, metric, period, soft limit, hard limit
    ("Acme monthly", {"tenant": True}, "cost", "month", None, 1_000_000 * USD),
    ("Platform monthly", {}, "cost", "month", None, 5_000_000 * USD),
    ("support-reply daily", {"workflow": True}, "cost", "day", 500_000 * USD, 1_000_000 * USD),
    ("prod tokens monthly", {"environment": "prod"}, "tokens", "month", None, 10**14),
    ("standard tier monthly", {"tier": "standard"}, "cost", "month", 1_000_000 * USD, None),
]


# --- database and fixtures --------------------------------------------------------------------------


def django_setup(database_url: str, redis_url: str | None) -> None:
    """As bench/ingest.py's, with the ceiling view's settings; gunicorn inherits the environment."""
    if not redis_url:
        os.environ.pop("REDIS_URL", None)  # per-worker memory cache, as bench/ingest.py
    ingest_django_setup(
        database_url,
        DJANGO_SETTINGS_MODULE="bench._preflight_settings",
        # Per second, not per minute: DRF's throttle kept every timestamp of its window in one cached list,
        # so a minute at bench rates made the ceiling measure that list (see time_throttle).
        API_KEY_RATE="1000000/s",
        **({"REDIS_URL": redis_url} if redis_url else {}),  # the throttle's counters in Redis, as in production
    )


def create_fixtures() -> str:
    """The tenant, workflow, preflight key, 5 budgets and 2 controls; returns the raw key."""
    from budgets.models import Budget, Control, ControlKind
    from budgets.services.controls import control_start
    from finops.models import ModelTier, Workflow
    from tenants.models import Tenant
    from tenants.services import api_key_create

    tenant = Tenant.objects.create(slug=TENANT[0], name=TENANT[1])
    Tenant.objects.create(slug="globex", name="Globex")  # a second tenant, as in any real install
    workflow = Workflow.objects.create(slug=WORKFLOW, name="Support reply", owner="bench")
    _, raw = api_key_create(tenant=tenant, name="bench preflight", scopes="preflight")
    for name, scope, metric, period, soft, hard in BUDGETS:
        Budget.objects.create(
            name=name,
            tenant=tenant if scope.get("tenant") else None,
            workflow=workflow if scope.get("workflow") else None,
            environment=scope.get("environment", ""),
            tier=ModelTier.objects.get(slug=scope["tier"]) if scope.get("tier") else None,
            metric=metric,
            period=period,
            soft_limit=soft,
            hard_limit=hard,
        )
    control_start(
        kind=ControlKind.CAP_OUTPUT_TOKENS,
        tenant=tenant,
        params={"max_output_tokens": 1024},
        source=Control.Source.MANUAL,
        reason="bench: cap output",
    )
    control_start(
        kind=ControlKind.COMPRESS_CONTEXT,
        workflow=workflow,
        params={"ratio": "0.5"},
        source=Control.Source.MANUAL,
        reason="bench: compress context",
    )
    return raw


def make_bodies(rng: random.Random, n: int) -> list[bytes]:
    """Calls of the one workflow in prod on standard-tier models: every one matches all budgets and controls."""
    bodies = []
    for _ in range(n):
        model = rng.choices(MODELS, weights=[m[1] for m in MODELS])[0][0]
        bodies.append(
            orjson.dumps(
                {
                    "workflow": WORKFLOW,
                    "model": model,
                    "environment": "prod",
                    "input_tokens": max(50, int(2_500 * math.exp(rng.gauss(0, 0.7)))),
                    "max_output_tokens": rng.choice(MAX_OUTPUT_CHOICES),
                }
            )
        )
    return bodies


# --- the clients ----------------------------------------------------------------------------------------


@dataclass
class HoldRun:
    seconds: dict[str, float]
    background: float | None = None


@dataclass
class Run:
    label: str
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    decisions: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    client_cpu: float = 0.0  # CPU seconds the client processes used
    background: float | None = None

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def failures(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    def pct(self, p: float) -> float:
        return percentile(self.latencies, p)


def _client_process(port, path, headers, bodies, threads, offset, start_at, stop_at, results) -> None:
    """`threads` clients, each with its own connection, posting until `stop_at`; reports once at the end."""
    latencies: list[float] = []
    statuses: Counter = Counter()
    decisions: Counter = Counter()
    errors: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        conn = Connection("127.0.0.1", port, timeout=60)
        mine, i = [], offset + n * 7919
        my_statuses, my_decisions = Counter(), Counter()
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        try:
            while time.time() < stop_at:
                body = bodies[i % len(bodies)]
                i += 1
                started = time.perf_counter()
                try:
                    conn.request("POST", path, body, headers)
                    response = conn.getresponse()
                    data = response.read()
                except OSError as exc:
                    conn.close()
                    my_statuses["connection error"] += 1
                    if len(errors) < 5:
                        errors.append(repr(exc))
                    continue
                mine.append(time.perf_counter() - started)
                my_statuses[response.status] += 1
                if response.status == 200:
                    my_decisions[orjson.loads(data)["decision"]] += 1
                elif len(errors) < 5:
                    errors.append(f"HTTP {response.status}: {data[:300]!r}")
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)
                statuses.update(my_statuses)
                decisions.update(my_decisions)

    cpu0 = time.process_time()
    workers = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    results.put((latencies, statuses, decisions, errors, time.process_time() - cpu0))


def drive(port: int, path: str, key: str, bodies: list[bytes], clients: int, procs: int, seconds: float, label: str):
    """`clients` concurrent connections spread over `procs` client processes (no GIL between them)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Accept": "application/json"}
    procs = max(1, min(procs, clients))
    per_proc = [clients // procs + (1 if p < clients % procs else 0) for p in range(procs)]
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start_at = time.time() + 0.5  # every process is forked and connected-ready before the clock starts
    stop_at = start_at + seconds
    children = [
        ctx.Process(
            target=_client_process,
            args=(port, path, headers, bodies, n, sum(per_proc[:p]) * 104_729, start_at, stop_at, results),
            daemon=True,
        )
        for p, n in enumerate(per_proc)
    ]
    for child in children:
        child.start()
    run = Run(label=label, clients=clients, seconds=0.0)
    for _ in children:
        latencies, statuses, decisions, errors, cpu = results.get(timeout=seconds + 120)
        run.latencies.extend(latencies)
        run.statuses.update(statuses)
        run.decisions.update(decisions)
        run.errors.extend(errors)
        run.client_cpu += cpu
    for child in children:
        child.join()
    # Requests in flight at stop_at finish and count; the span runs until the last one did.
    run.seconds = max(seconds, time.time() - start_at)
    return run


# --- API-key authentication in process ------------------------------------------------------------------


def time_authentication(raw_key: str, calls: int) -> dict[str, float]:
    """Seconds per call of ApiKeyAuthentication.authenticate and of its two parts, on the bench database."""
    from django.test import RequestFactory

    from tenants.authentication import ApiKeyAuthentication
    from tenants.models import ApiKey
    from tenants.services import hash_secret

    auth = ApiKeyAuthentication()
    request = RequestFactory().post(PREFLIGHT_PATH, HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    prefix = raw_key.split("_", 2)[1]
    for _ in range(200):  # connection, statement cache, last_used_at written once
        key, _ = auth.authenticate(request)
    assert key.scopes and key.tenant_id

    def per_call(fn) -> float:
        best = math.inf
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, (time.perf_counter() - started) / calls)
        return best

    return {
        "authenticate": per_call(lambda: auth.authenticate(request)),
        "key lookup (SELECT .. JOIN tenant)": per_call(
            lambda: ApiKey.objects.select_related("tenant").filter(prefix=prefix).first()
        ),
        "the same lookup as SQL through a cursor": per_call(lambda: _key_row(prefix)),
        "SHA-256 of the key": per_call(lambda: hash_secret(raw_key)),
        "SELECT 1 round trip (reference)": per_call(_select_one),
    }


def time_views(raw_key: str, bodies: list[bytes], requests: int = 500, rounds: int = 5) -> dict[str, float]:
    """CPU of this process per request, in process through Django's test client (no HTTP, no gunicorn),
    for the ceiling and for preflight, alternated, best of `rounds`. CPU time moves much less with
    other load on the machine than throughput does, so what preflight costs beyond the ceiling can be
    read even on a busy machine (PostgreSQL's share of the reservation is not in it)."""
    from django.test import Client

    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw_key}"}

    def run(path: str, n: int) -> None:
        for i in range(n):
            response = client.post(path, bodies[i % len(bodies)], content_type="application/json", **headers)
            if response.status_code != 200:
                raise BenchError(f"{path} answered {response.status_code}: {response.content[:300]!r}")

    for path in (CEILING_PATH, PREFLIGHT_PATH):
        run(path, 200)
    best = {CEILING_PATH: math.inf, PREFLIGHT_PATH: math.inf}
    for _ in range(rounds):
        for path in best:
            started = time.process_time()
            run(path, requests)
            best[path] = min(best[path], (time.process_time() - started) / requests)
    return {"ceiling": best[CEILING_PATH], "preflight": best[PREFLIGHT_PATH]}


def time_throttle(calls: int) -> dict[int, float]:
    """Seconds per ApiKeyRateThrottle.allow_request when the key's window already holds n requests.

    A fixed-window counter (one INCR): the cost must not grow with the traffic already in the window, as
    DRF's history throttle did (it pickled every request time of the window: 1.4 ms at 30,000).
    """
    from django.core.cache import cache

    from tenants.authentication import ApiKeyRateThrottle
    from tenants.models import ApiKey

    key = ApiKey.objects.first()
    request = type("Request", (), {"auth": key, "user": None, "META": {}})()
    out = {}
    for n in (0, 1_000, 6_000, 30_000):
        throttle = ApiKeyRateThrottle()
        throttle.limit, throttle.period = 10**9, 60  # a minute's window that never refuses
        best = math.inf
        for _ in range(3):
            window = int(time.time() // 60)
            for w in (window, window + 1):  # a window that turns over while timing starts from n too
                cache.set(f"throttle:{throttle.scope}:key:{key.pk}:{w}", n, 61)
            started = time.perf_counter()
            for _ in range(calls):
                assert throttle.allow_request(request, None)
            best = min(best, (time.perf_counter() - started) / calls)
        out[n] = best
    return out


def time_decide(calls: int) -> dict[str, float]:
    """preflight_decide in process, one call at a time (no HTTP, no concurrency): wall and CPU per decision."""
    from budgets.services.preflight import PreflightInput, preflight_decide
    from tenants.models import Tenant

    tenant = Tenant.objects.get(slug=TENANT[0])

    def one():
        return preflight_decide(
            PreflightInput(
                tenant=tenant,
                model="gpt-4o",
                environment="prod",
                workflow=WORKFLOW,
                input_tokens=2_500,
                max_output_tokens=2_048,
            )
        )

    for _ in range(20):
        assert one().decision == "allow"
    cpu, started = time.process_time(), time.perf_counter()
    for _ in range(calls):
        one()
    return {
        "preflight_decide, wall": (time.perf_counter() - started) / calls,
        "preflight_decide, CPU of this process": (time.process_time() - cpu) / calls,
    }


def time_hold_transaction(calls: int) -> dict[str, float]:
    """Seconds per preflight write transaction, in process, one at a time: what each preflight holds the
    hot window rows' locks for (budgets_reserve() on 4 windows: the holds, the reservation and its holds,
    the commit as PREFLIGHT_ASYNC_COMMIT makes it), beside a one-row UPDATE with a synchronous commit."""
    from django.db import connection, transaction
    from django.utils import timezone

    from budgets.models import BudgetWindow
    from budgets.services.reservations import ReservationSpec, reserve
    from tenants.models import Tenant

    tenant = Tenant.objects.get(slug=TENANT[0])
    amounts = {w.pk: 1_000 for w in BudgetWindow.objects.exclude(hard_limit=None)}

    spec = ReservationSpec(
        tenant_id=tenant.pk, workflow_id=None, model_id=None, environment="prod", estimated_cost_nanos=1_000,
        estimated_tokens=1_000, api_key_id=None,
    )  # fmt: skip

    def hold() -> None:
        reserve(spec, amounts=amounts, ttl_seconds=600, now=timezone.now())

    def commit_only() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE budgets_budgetwindow SET reserved = reserved WHERE id = %s", [min(amounts)])

    out = {}
    for name, fn in (("hold transaction (4 windows)", hold), ("one-row UPDATE + synchronous commit", commit_only)):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        out[name] = (time.perf_counter() - started) / calls
    return out


_KEY_SQL = (
    "SELECT k.id, k.tenant_id, k.name, k.prefix, k.secret_hash, k.scopes, k.revoked_at, k.expires_at,"
    " k.last_used_at, t.slug, t.status FROM tenants_apikey k LEFT JOIN tenants_tenant t ON t.id = k.tenant_id"
    " WHERE k.prefix = %s"
)


def _key_row(prefix: str) -> tuple:
    """What authenticate reads, without the ORM: the reference for its per-query overhead."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(_KEY_SQL, [prefix])
        return cursor.fetchone()


def _select_one() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


# --- what piled up ------------------------------------------------------------------------------------


def budget_totals(db: str) -> list[tuple]:
    with psycopg.connect(db, autocommit=True) as conn:
        return conn.execute(
            "SELECT b.name, b.metric, w.spent, w.reserved, w.hard_limit FROM budgets_budgetwindow w"
            " JOIN budgets_budget b ON b.id = w.budget_id ORDER BY b.id"
        ).fetchall()


def reservation_counts(db: str) -> list[tuple]:
    with psycopg.connect(db, autocommit=True) as conn:
        return conn.execute(
            "SELECT status, count(*), coalesce(sum(estimated_cost_nanos), 0) FROM budgets_reservation GROUP BY status"
        ).fetchall()


def truncate_reservations(db: str) -> None:
    """Between phases: release what the previous phase held, so every phase starts from the same tables."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("TRUNCATE budgets_reservationhold, budgets_reservation")
        conn.execute("UPDATE budgets_budgetwindow SET reserved = 0")
        conn.execute("VACUUM ANALYZE budgets_budgetwindow")
        conn.execute("CHECKPOINT")


# --- profile (py-spy) ----------------------------------------------------------------------------------

PROFILE_RATE = 250
# A sample belongs to the deepest frame of its stack that matches one of these (category, functions, file).
PROFILE_MARKERS = [
    ("gunicorn: accept, read and parse the request", None, "gunicorn/"),
    ("API key authentication (1 query)", {"authenticate"}, "tenants/authentication.py"),
    ("throttle", {"allow_request"}, "rest_framework/throttling.py"),
    ("tenant resolution", {"resolve_tenant"}, "tenants/scoping.py"),
    ("input serializer", {"is_valid", "run_validation", "to_internal_value"}, "rest_framework/serializers.py"),
    ("input check (plain Python)", {"preflight_input_fast"}, "budgets/apis/preflight.py"),
    ("preflight: rest", {"preflight_decide"}, "budgets/services/preflight.py"),
    ("catalog, budgets, controls, workflows (1 query)", {"preflight_state"}, "budgets/state.py"),
    ("controls for the call", {"controls_for_call"}, "budgets/services/controls.py"),
    ("windows (cached ids)", {"window_ids_open"}, "budgets/services/windows.py"),
    ("reserve: holds + reservation + commit (1 statement)", {"reserve"}, "budgets/services/reservations.py"),
    ("response: budget views", {"budget_views", "budget_view"}, "budgets/headroom.py"),
    ("response: render JSON", {"render"}, "rest_framework/renderers.py"),
    ("response: render JSON", {"render"}, "finops/renderers.py"),
]
OUTSIDE = "Django + DRF request/response machinery"


def _frame_matches(frame: str, functions: set[str] | None, path: str) -> bool:
    name, _, location = frame.partition(" (")
    return path in location and (functions is None or name.rpartition(".")[2] in functions)


def summarise_profile(raw_path: Path) -> Counter:
    totals: Counter = Counter()
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        if not any(_frame_matches(f, {"handle"}, "gunicorn/workers/") for f in frames):
            continue
        category = OUTSIDE
        for frame in frames:
            for name, functions, path in PROFILE_MARKERS:
                if _frame_matches(frame, functions, path):
                    category = name
        totals[category] += int(count)
    return totals


def run_profile(server: Server, py_spy: str, phase, out: Path, workdir: Path):
    log(f"Profile: preflight again under py-spy (collapsed stacks: {out})")
    with (workdir / "py-spy.log").open("ab") as spy_log:
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(server.process.pid), "--subprocesses", "--idle", "--nonblocking",
             "--rate", str(PROFILE_RATE), "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=spy_log,
        )  # fmt: skip
    time.sleep(2)
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
    return run, summarise_profile(out)


def print_profile(run: Run, totals: Counter) -> None:
    busy = sum(totals.values())
    if not busy:
        print("\nProfile: no samples inside request handling")
        return
    print()
    print(
        f"## Where a worker's time goes: py-spy, wall clock while handling a request, {busy:,} samples, "
        f"{run.clients} clients ({run.per_second:,.0f} decisions/s while profiled)"
    )
    print()
    print(f"| {'part':<48} | {'share':>6} | {'ms per request':>14} |")
    print(f"|{'-' * 50}|{'-' * 7}:|{'-' * 15}:|")
    for name, n in totals.most_common():
        print(f"| {name:<48} | {n / busy:>6.1%} | {n / PROFILE_RATE / run.requests * 1000:>14.3f} |")


# --- report -------------------------------------------------------------------------------------------


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def best(runs: list[Run]) -> Run:
    return max(runs, key=lambda r: r.per_second)


def print_results(
    args,
    facts,
    results: dict[tuple[str, int], list[Run]],
    auth: dict[str, float],
    throttle,
    holds,
    totals,
    counts,
    views: dict[str, float],
):
    print()
    print(
        f"## Preflight benchmark: {args.seconds:g} s per phase, best of {args.rounds}; "
        f"5 budgets (4 with hard limits) and 2 controls match every call"
    )
    print()
    for name, value in facts:
        print(f"- {name}: {value}")
    print(
        f"- Server: gunicorn, {args.workers} sync workers, CONN_MAX_AGE=60 (persistent connections); "
        f"throttle cache: {'Redis' if args.redis_url else 'per-worker memory'}"
    )
    print(f"- Clients: {args.client_procs} processes on the same machine, one connection per client")
    print()
    header = (
        f"| {'path':<40} | {'clients':>7} | {'requests/s':>10} | {'x ceiling':>9} | {'p50':>8} | {'p99':>8} "
        f"| {'errors':>6} | {'client CPU':>10} | {'other load':>10} |"
    )
    print(header)
    print(f"|{'-' * 42}|{'-' * 8}:|{'-' * 11}:|{'-' * 10}:|{'-' * 9}:|{'-' * 9}:|{'-' * 7}:|{'-' * 11}:|{'-' * 11}:|")
    for clients in args.clients:
        ceiling = best(results[("ceiling", clients)]) if ("ceiling", clients) in results else None
        for kind, name in (("ceiling", f"ceiling: POST {CEILING_PATH}"), ("preflight", f"POST {PREFLIGHT_PATH}")):
            if (kind, clients) not in results:
                continue
            run = best(results[(kind, clients)])
            ratio = f"{run.per_second / ceiling.per_second:.2f}" if ceiling else "-"
            load = "-" if run.background is None else f"{run.background:.0%}"
            print(
                f"| {name:<40} | {clients:>7} | {run.per_second:>10,.0f} | {ratio:>9} | {fmt_ms(run.pct(50)):>8} "
                f"| {fmt_ms(run.pct(99)):>8} | {run.failures:>6} | {run.client_cpu / run.seconds:>10.0%} "
                f"| {load:>10} |"
            )
    print()
    print(
        "'client CPU': the client processes' CPU over the phase, in cores (100% = one core); 'other load': the share "
        "of the machine's CPU used meanwhile by processes other than this benchmark, its gunicorn and its PostgreSQL."
    )
    for (kind, clients), runs in results.items():
        if kind == "preflight":
            run = best(runs)
            others = {k: v for k, v in run.decisions.items() if k != "allow"}
            print(
                f"Decisions at {clients} clients: {run.decisions['allow']:,} allow"
                + (f", others {dict(others)}" if others else ", no deny or needs_approval")
                + (f"; errors {dict((k, v) for k, v in run.statuses.items() if k != 200)}" if run.failures else "")
            )
    print()
    ceiling_cpu, preflight_cpu = views["ceiling"], views["preflight"]
    print("In process through Django's test client (no HTTP), CPU of this process per request, best of 5 x 500:")
    beyond = preflight_cpu - ceiling_cpu
    print(
        f"  ceiling {ceiling_cpu * 1e3:.3f} ms, preflight {preflight_cpu * 1e3:.3f} ms, beyond the ceiling "
        f"{beyond * 1e3:.3f} ms, ceiling / preflight {ceiling_cpu / preflight_cpu:.2f}"
    )
    print()
    print(f"API-key authentication in process, best of 3 x {args.auth_calls:,} calls:")
    for name, seconds in auth.items():
        print(f"  {name:<36} {seconds * 1e6:>8.1f} µs")
    print()
    print(
        f"In process, one at a time: a whole decision, and its write transaction (other load {holds.background:.0%}):"
    )
    for name, seconds in holds.seconds.items():
        print(f"  {name:<36} {seconds * 1e3:>8.2f} ms  ({1 / seconds:,.0f}/s if serialised)")
    print()
    store = "Redis" if args.redis_url else "this process's memory"
    print(f"Throttle (ApiKeyRateThrottle.allow_request, counter in {store}) by requests already in the window:")
    for n, seconds in throttle.items():
        print(f"  {n:>6,} in the window {seconds * 1e6:>8.1f} µs")
    print()
    print("Budget windows at the end (reservations held by the last phase; nothing settles them during the run):")
    for name, metric, spent, reserved, hard in totals:
        unit = (lambda v: f"${Decimal(v) / USD:,.2f}") if metric == "cost" else (lambda v: f"{v:,} tokens")
        limit = unit(hard) if hard else "-"
        print(f"  {name:<24} reserved {unit(reserved):>20}  spent {unit(spent)}  hard limit {limit}")
    for status, n, cost in counts:
        print(f"  reservations {status}: {n:,}, estimated ${Decimal(cost) / USD:,.2f}")

    checks = []
    if ("preflight", 4) in results:
        p99 = best(results[("preflight", 4)]).pct(99)
        checks.append((f"p99 under {TARGET_P99_AT_4 * 1000:g} ms with 4 clients", p99 < TARGET_P99_AT_4,
                       f"{fmt_ms(p99)}, {p99 / TARGET_P99_AT_4:.2f} of the target"))  # fmt: skip
    if ("preflight", 32) in results and ("ceiling", 32) in results:
        run, ceiling = best(results[("preflight", 32)]), best(results[("ceiling", 32)])
        errors = sum(r.failures for r in results[("preflight", 32)])
        share = run.per_second / ceiling.per_second
        checks.append(("no errors with 32 clients", errors == 0, f"{errors} in {len(results[('preflight', 32)])} runs"))
        checks.append((f">= {TARGET_SHARE_OF_CEILING_AT_32:g} of the ceiling's throughput with 32 clients",
                       share >= TARGET_SHARE_OF_CEILING_AT_32,
                       f"{share:.2f}"))  # fmt: skip
    per_auth = auth["authenticate"]
    checks.append(("API-key authentication under 0.5 ms", per_auth < TARGET_AUTH,
                   f"{per_auth * 1e6:.0f} µs, {per_auth / TARGET_AUTH:.2f} of the budget"))  # fmt: skip
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
        default="postgresql://postgres@127.0.0.1:5432/finops_preflightbench",
        help="dropped and recreated; its name must contain 'bench' (default %(default)s)",
    )
    p.add_argument("--redis-url", default=None, help="keep the throttle's counters in Redis (default: worker memory)")
    p.add_argument("--seconds", type=float, default=15, help="length of each measured phase (default %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="measure each phase this many times, keep the best")
    p.add_argument(
        "--clients",
        type=lambda v: [int(x) for x in v.split(",") if x.strip()],
        default=[4, 32],
        help="comma-separated concurrent client counts (default 4,32)",
    )
    p.add_argument("--client-procs", type=int, default=4, help="client processes (default %(default)s)")
    p.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1), help="gunicorn sync workers (2 x cores)")
    p.add_argument("--auth-calls", type=int, default=5000, help="in-process authentications per pass")
    p.add_argument("--quick", action="store_true", help="4 s per phase, 1 round")
    p.add_argument("--profile", action="store_true", help="add a py-spy pass over preflight at 4 clients")
    p.add_argument("--wait-quiet", type=float, default=60, help="wait up to this long for a quiet machine per phase")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = min(args.seconds, 4), 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    db = args.database_url
    py_spy = find_py_spy() if args.profile else None
    if args.profile and py_spy is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")

    log(f"Recreating database {urlsplit(db).path.lstrip('/')} and migrating")
    recreate_database(db)
    django_setup(db, args.redis_url)
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0, interactive=False)
    log(f"Catalog: {load_catalog()}")
    key = create_fixtures()
    facts = machine_facts(db)
    for name, value in facts:
        log(f"{name}: {value}")
    bodies = make_bodies(random.Random(args.seed), 5000)

    log(f"API-key authentication in process: {args.auth_calls:,} calls x 3")
    auth = time_authentication(key, args.auth_calls)
    log(f"  {auth['authenticate'] * 1e6:.1f} µs per call")
    throttle = time_throttle(200)
    log("In process through Django's test client: CPU per request of the ceiling and of preflight, best of 5 x 500")
    views = time_views(key, bodies)
    truncate_reservations(db)
    connections.close_all()  # the client processes are forked from here

    workdir = Path(tempfile.mkdtemp(prefix="bench-preflight-"))
    server = Server(workers=args.workers, worker_class="sync", threads=1, log_path=workdir / "gunicorn.log")
    server.argv += ["--backlog", "2048"]
    meter = CpuMeter(db, server)
    results: dict[tuple[str, int], list[Run]] = {}
    profiled = None
    log(f"Starting gunicorn: {' '.join(server.argv[1:])}")
    server.start()
    try:
        log("Warming up both paths (connections, catalog and budget snapshots, imports)")
        for path in (CEILING_PATH, PREFLIGHT_PATH):
            drive(server.port, path, key, bodies, max(args.clients), args.client_procs, 2, "warm-up")
        for round_no in range(1, args.rounds + 1):
            for clients in args.clients:
                for kind, path in (("ceiling", CEILING_PATH), ("preflight", PREFLIGHT_PATH)):
                    truncate_reservations(db)
                    label = f"{kind}, {clients} clients"
                    log(f"Round {round_no}: {label}, {args.seconds:g} s")
                    run = meter.measure(
                        args.wait_quiet,
                        lambda p=path, c=clients, lb=label: drive(
                            server.port, p, key, bodies, c, args.client_procs, args.seconds, lb
                        ),
                    )
                    log(
                        f"  {run.per_second:,.0f}/s, p50 {fmt_ms(run.pct(50))}, p99 {fmt_ms(run.pct(99))}, "
                        f"errors {run.failures}, client CPU {run.client_cpu / run.seconds:.0%}, "
                        f"other load {run.background:.0%}" + (f"; first error: {run.errors[0]}" if run.errors else "")
                    )
                    results.setdefault((kind, clients), []).append(run)
        totals, counts = budget_totals(db), reservation_counts(db)
        log("In process, one at a time: preflight_decide, and its write transaction")
        holds = meter.measure(args.wait_quiet, lambda: HoldRun({**time_decide(300), **time_hold_transaction(500)}))
        connections.close_all()
        if py_spy:
            truncate_reservations(db)
            profiled = run_profile(
                server,
                py_spy,
                lambda: drive(server.port, PREFLIGHT_PATH, key, bodies, 4, args.client_procs, args.seconds, "py-spy"),
                workdir / "profile-preflight.txt",
                workdir,
            )
    finally:
        server.stop()

    met = print_results(args, facts, results, auth, throttle, holds, totals, counts, views)
    if profiled:
        print_profile(*profiled)
    print(f"\ngunicorn log: {server.log_path}")
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"\nBENCH FAILED: {exc}", file=sys.stderr)
        sys.exit(2)
