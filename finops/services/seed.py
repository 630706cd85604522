"""Seed data: the shipped model catalog with public list prices, and a realistic demo data set.

The catalog seed only creates what is missing and never changes a row that exists. Once seeded the
catalog belongs to the operators: they correct prices, add deployment aliases and retire patterns,
and a later seed run (which `seed_demo` does on every call) must not undo that. Rows that differ
from the file are counted and listed instead, so a newer file's corrections are visible for review.

The demo data set is deterministic: every (tenant, workflow, hour) draws from its own seeded
random generator, so a rerun produces the same request ids and content, and the unique
(tenant, request_id) constraint turns it into a no-op.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from itertools import accumulate
from pathlib import Path
from typing import IO, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from budgets.services.demo import budgets_demo_seed
from finops.catalog import CatalogSnapshot, ModelEntry, get_catalog
from finops.errors import ApplicationError
from finops.models import Environment, LlmModel, ModelPrice, ModelTier, UsageRecord, Workflow
from finops.pricing import TokenBuckets, cost_nanos, usd_per_mtok_to_pico
from finops.services.rollups import rollup_mark_dirty, rollups_refresh
from finops.usage_identity import usage_content_hash
from tenants.models import ApiKey, Membership, Tenant
from tenants.services import api_key_create, audit_record

SEED_CATALOG_PATH = Path(__file__).resolve().parent.parent / "data" / "seed_catalog.json"

# ----------------------------------------------------------------------------------------------------
# Catalog
# ----------------------------------------------------------------------------------------------------

PRICE_FIELDS = ("input", "cached_input", "cache_write", "output", "reasoning")


def _invalid(message: str) -> ApplicationError:
    return ApplicationError("invalid_seed_catalog", message)


def seed_catalog_load(*, path: Path | None = None) -> dict[str, Any]:
    """Read and validate the seed file; prices become Decimal and dates become aware datetimes."""
    data = json.loads((path or SEED_CATALOG_PATH).read_text())
    tier_slugs = {t["slug"] for t in data["tiers"]}
    names: set[str] = set()
    for spec in data["models"]:
        name = spec["name"]
        if name.lower() in names:
            raise _invalid(f"Model {name} is listed twice.")
        names.add(name.lower())
        if spec["tier"] not in tier_slugs:
            raise _invalid(f"Model {name} names unknown tier {spec['tier']!r}.")
        if spec.get("encoding", "") not in ("", *LlmModel.Encoding.values):
            raise _invalid(f"Model {name} names unknown encoding {spec['encoding']!r}.")
        try:
            re.compile(spec.get("match_pattern") or "")
        except re.error as exc:
            raise _invalid(f"Model {name} has an invalid match_pattern: {exc}.") from exc
        if not spec.get("prices"):
            raise _invalid(f"Model {name} has no price.")
        for price in spec["prices"]:
            when = parse_datetime(price["effective_from"])
            if when is None or when.tzinfo is None:
                raise _invalid(f"Model {name}: effective_from must be an ISO datetime with a zone.")
            price["effective_from"] = when
            price["price_taken_on"] = parse_date(price["price_taken_on"]) if price.get("price_taken_on") else None
            for key in PRICE_FIELDS:
                raw = price.get(key)
                if raw is None and key == "reasoning":
                    continue
                if not isinstance(raw, str):
                    raise _invalid(f"Model {name}: {key} must be a decimal string, not {raw!r}.")
                try:
                    value = Decimal(raw)
                    usd_per_mtok_to_pico(value)  # rejects more than 6 decimal places
                except (InvalidOperation, ValueError) as exc:
                    raise _invalid(f"Model {name}: {key}={raw!r} is not a price with at most 6 decimals.") from exc
                if value < 0:
                    raise _invalid(f"Model {name}: {key} is negative.")
                price[key] = value
    return data


def _counter() -> dict[str, int]:
    return {"created": 0, "unchanged": 0, "differs": 0}


@transaction.atomic
def catalog_seed(*, path: Path | None = None, stdout: IO[str] | None = None) -> dict[str, dict[str, int]]:
    """Create the tiers, models and prices of the seed file that do not exist yet.

    Keys: tier slug, model name (case-insensitive), price (model, effective_from). Existing rows are
    never changed (see the module docstring); they count as `unchanged` or `differs`.
    """
    data = seed_catalog_load(path=path)
    counts = {"tiers": _counter(), "models": _counter(), "prices": _counter()}
    notes: list[str] = []

    tiers = {t.slug: t for t in ModelTier.objects.all()}
    for spec in data["tiers"]:
        tier = tiers.get(spec["slug"])
        if tier is None:
            if ModelTier.objects.filter(rank=spec["rank"]).exists():
                raise ApplicationError(
                    "seed_tier_rank_taken",
                    f"Tier rank {spec['rank']} is taken by another tier; cannot add tier {spec['slug']!r}.",
                )
            tiers[spec["slug"]] = ModelTier.objects.create(slug=spec["slug"], name=spec["name"], rank=spec["rank"])
            counts["tiers"]["created"] += 1
        elif (tier.name, tier.rank) == (spec["name"], spec["rank"]):
            counts["tiers"]["unchanged"] += 1
        else:
            counts["tiers"]["differs"] += 1
            notes.append(f"tier {tier.slug}: kept as edited (file: {spec['name']}, rank {spec['rank']})")

    models = {m.name.lower(): m for m in LlmModel.objects.select_related("tier")}
    new_models: list[tuple[LlmModel, str]] = []
    prices = {(p.model_id, p.effective_from): p for p in ModelPrice.objects.all()}
    for spec in data["models"]:
        wanted = {
            "display_name": spec.get("display_name") or "",
            "provider": spec["provider"],
            "match_pattern": spec.get("match_pattern") or "",
            "encoding": spec.get("encoding") or "",
            "context_window": spec.get("context_window"),
            "max_output_tokens": spec.get("max_output_tokens"),
        }
        model = models.get(spec["name"].lower())
        if model is None:
            model = LlmModel.objects.create(
                name=spec["name"], tier=tiers[spec["tier"]], aliases=list(spec.get("aliases", [])), **wanted
            )
            counts["models"]["created"] += 1
            if spec.get("downgrade_to"):
                new_models.append((model, spec["downgrade_to"]))
        elif (
            all(getattr(model, f) == v for f, v in wanted.items())
            and model.tier.slug == spec["tier"]
            and list(model.aliases or []) == list(spec.get("aliases", []))
        ):
            counts["models"]["unchanged"] += 1
        else:
            counts["models"]["differs"] += 1
            notes.append(f"model {model.name}: kept as edited")

        for price_spec in spec["prices"]:
            values = {k: price_spec.get(k) for k in PRICE_FIELDS}
            existing = prices.get((model.pk, price_spec["effective_from"]))
            if existing is None:
                ModelPrice.objects.create(
                    model=model,
                    effective_from=price_spec["effective_from"],
                    source=price_spec.get("source", ""),
                    price_taken_on=price_spec.get("price_taken_on"),
                    **values,
                )
                counts["prices"]["created"] += 1
            elif all(getattr(existing, k) == v for k, v in values.items()):
                counts["prices"]["unchanged"] += 1
            else:
                counts["prices"]["differs"] += 1
                notes.append(
                    f"price {model.name} from {existing.effective_from:%Y-%m-%d}: kept as edited "
                    f"(file: input {values['input']}, output {values['output']})"
                )

    # Substitutes link models to each other, so they are set once every model exists; only on models
    # this run created (an operator's choice on an existing model is kept).
    for model, target in new_models:
        model.downgrade_to = models.get(target.lower()) or LlmModel.objects.get(name__iexact=target)
        model.save(update_fields=["downgrade_to", "updated_at"])

    created = sum(c["created"] for c in counts.values())
    if created:
        audit_record(action="catalog.seed", after=counts)
    if stdout is not None:
        for note in notes[:20]:
            stdout.write(f"  {note}\n")
        if len(notes) > 20:
            stdout.write(f"  … and {len(notes) - 20} more rows that differ from the seed file\n")
    return counts


def catalog_counts_format(counts: dict[str, dict[str, int]]) -> str:
    """One line for command output, e.g. 'catalog: tiers 3 new, 0 unchanged; models 29 new, ...'."""
    parts = []
    for kind, c in counts.items():
        part = f"{kind} {c['created']} new, {c['unchanged']} unchanged"
        if c["differs"]:
            part += f", {c['differs']} differ from the file (kept)"
        parts.append(part)
    return "catalog: " + "; ".join(parts)


# ----------------------------------------------------------------------------------------------------
# Demo data set
# ----------------------------------------------------------------------------------------------------

DEMO_TENANT_SLUG = "northwind"
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password"  # noqa: S105 - the demo's published password
# Fixed on purpose so the README and scripts can use them. They are public: never seed a real deployment.
DEMO_API_KEY = "tsk_de0000000a_demo-tenant-key-northwind-public-not-secret"
DEMO_PLATFORM_KEY = "tsk_de0000000b_demo-platform-key-public-on-purpose-0000000"
DEMO_REQUEST_PREFIX = "demo-"
DEMO_UNKNOWN_MODEL = "mistral-large-2411"

_SPIKE_TENANT = DEMO_TENANT_SLUG
_SPIKE_WORKFLOW = "chat-assistant"
_RELEASE_DAYS_AGO = 12
_CHUNK = 10_000


@dataclass(frozen=True)
class _WorkflowSpec:
    slug: str
    name: str
    owner: str
    priority: str
    tier: str
    models: tuple[tuple[str, float], ...]  # name as the service sends it, weight
    calls_per_day: int  # weekday calls of one tenant at scale 1.0
    input_p50: int
    input_p95: int
    output_p50: int
    output_p95: int
    approval_threshold_usd: str | None = None
    envelope: bool = True  # False: the owners have not set the envelope yet
    cache_share: float = 0.0  # share of calls whose prompt prefix is served from (or written to) a cache
    batch: bool = False  # nightly job: runs 01:00-05:00 local time, weekends included
    flags: tuple[str, ...] = ("default",)
    flags_after_release: tuple[str, ...] = ()


@dataclass(frozen=True)
class _TenantSpec:
    slug: str
    name: str
    external_id: str
    region: str
    utc_offset: int  # hours; shifts the business-day curve
    scale: float
    workflows: tuple[str, ...]
    models: dict[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)  # per-workflow override


# The demo's customers and features. Tabular data: kept aligned by hand.
# fmt: off
_WORKFLOWS = (
    _WorkflowSpec(
        slug="support-ticket-summary", name="Support ticket summary", owner="support-platform",
        priority="normal", tier="economy",
        models=(("gpt-4.1-mini-2025-04-14", 0.7), ("claude-haiku-4-5-20251001", 0.3)),
        calls_per_day=80, input_p50=1800, input_p95=5200, output_p50=220, output_p95=480,
        approval_threshold_usd="0.05", cache_share=0.3, flags=("summary_v2", "summary_v2", "summary_v1"),
    ),
    _WorkflowSpec(
        slug="chat-assistant", name="In-app chat assistant", owner="assistant-team",
        priority="high", tier="standard",
        models=(("claude-sonnet-4-5-20250929", 0.6), ("gpt-5-mini", 0.4)),
        calls_per_day=90, input_p50=3500, input_p95=12000, output_p50=450, output_p95=1400,
        approval_threshold_usd="0.50", cache_share=0.7,
        flags=("assistant_v2",), flags_after_release=("assistant_v3",),
    ),
    _WorkflowSpec(
        slug="contract-review", name="Contract review", owner="legal-ai",
        priority="critical", tier="premium",
        models=(("claude-opus-4-1-20250805", 0.5), ("gpt-5", 0.5)),
        calls_per_day=10, input_p50=24000, input_p95=90000, output_p50=1800, output_p95=5000,
        approval_threshold_usd="2.00", cache_share=0.2, flags=("clause_extraction", "redline"),
    ),
    _WorkflowSpec(
        slug="code-review-bot", name="Pull request review bot", owner="developer-experience",
        priority="high", tier="premium",
        models=(("o3", 0.6), ("claude-sonnet-4-5", 0.4)),
        calls_per_day=30, input_p50=9000, input_p95=40000, output_p50=900, output_p95=3000,
        approval_threshold_usd="1.00", cache_share=0.4, flags=("pr_review", "security_scan"),
    ),
    _WorkflowSpec(
        slug="email-drafting", name="Email reply drafting", owner="growth",
        priority="normal", tier="economy",
        models=(("gpt-4o-mini", 0.6), ("gemini-2.0-flash", 0.4)),
        calls_per_day=60, input_p50=800, input_p95=2000, output_p50=300, output_p95=700,
        approval_threshold_usd="0.02", flags=("tone_formal", "tone_friendly"),
    ),
    _WorkflowSpec(
        slug="sql-copilot", name="SQL copilot", owner="data-platform",
        priority="normal", tier="standard",
        models=(("gpt-4.1", 0.7), ("o4-mini-2025-04-16", 0.3)),
        calls_per_day=40, input_p50=2500, input_p95=8000, output_p50=350, output_p95=1200,
        approval_threshold_usd="0.20", cache_share=0.5, flags=("schema_rag",),
    ),
    _WorkflowSpec(
        slug="meeting-notes", name="Meeting notes", owner="collaboration",
        priority="low", tier="standard",
        models=(("gemini-2.5-flash", 0.7), ("claude-3-5-haiku-latest", 0.3)),
        calls_per_day=20, input_p50=7000, input_p95=20000, output_p50=600, output_p95=1500,
        approval_threshold_usd="0.10", cache_share=0.1, flags=("transcript_v1",),
    ),
    _WorkflowSpec(
        slug="catalog-enrichment", name="Nightly catalog enrichment", owner="commerce-data",
        priority="low", tier="economy",
        models=(("gemini-2.5-flash-lite", 0.8), ("gpt-4.1-nano", 0.2)),
        calls_per_day=160, input_p50=1200, input_p95=3000, output_p50=250, output_p95=600,
        cache_share=0.6, batch=True, flags=("attributes", "seo_copy"),
    ),
    _WorkflowSpec(
        slug="review-sentiment", name="Review sentiment tagging", owner="insights",
        priority="low", tier="economy",
        models=(("gpt-5-nano", 0.5), ("gemini-2.5-flash-lite", 0.5)),
        calls_per_day=120, input_p50=400, input_p95=1200, output_p50=30, output_p95=80,
        approval_threshold_usd="0.01", flags=("sentiment_v1",),
    ),
    _WorkflowSpec(
        slug="research-agent", name="Account research agent", owner="sales-ai",
        priority="high", tier="premium",
        models=(("gemini-2.5-pro", 0.6), ("gpt-5", 0.4)),
        calls_per_day=6, input_p50=30000, input_p95=110000, output_p50=2500, output_p95=8000,
        envelope=False, cache_share=0.3, flags=("agent_beta",),
    ),
)

_TENANTS = (
    _TenantSpec(
        slug=DEMO_TENANT_SLUG, name="Northwind Traders", external_id="cus_NW482113",
        region="us-east-1", utc_offset=-5, scale=1.5,
        workflows=("support-ticket-summary", "chat-assistant", "email-drafting", "sql-copilot", "meeting-notes",
                   "review-sentiment"),
    ),
    _TenantSpec(
        slug="initech", name="Initech", external_id="cus_IN100237",
        region="us-west-2", utc_offset=-8, scale=1.0,
        workflows=("code-review-bot", "sql-copilot", "chat-assistant", "research-agent", "meeting-notes"),
        # An engineer trying a model the catalog does not know yet: stored unpriced, never priced at zero.
        models={"sql-copilot": (("gpt-4.1", 0.62), ("o4-mini-2025-04-16", 0.3), (DEMO_UNKNOWN_MODEL, 0.08))},
    ),
    _TenantSpec(
        slug="umbrella-health", name="Umbrella Health", external_id="cus_UH730045",
        region="eu-central-1", utc_offset=1, scale=0.8,
        workflows=("contract-review", "support-ticket-summary", "meeting-notes", "email-drafting"),
        # Healthcare: Anthropic models through Amazon Bedrock only, sent with Bedrock model ids.
        models={
            "contract-review": (("anthropic.claude-opus-4-1-20250805-v1:0", 1.0),),
            "support-ticket-summary": (("anthropic.claude-haiku-4-5-20251001-v1:0", 1.0),),
            "meeting-notes": (("anthropic.claude-3-5-haiku-20241022-v1:0", 1.0),),
            "email-drafting": (("anthropic.claude-3-5-haiku-20241022-v1:0", 1.0),),
        },
    ),
    _TenantSpec(
        slug="stark-logistics", name="Stark Logistics", external_id="cus_SL559102",
        region="us-east-1", utc_offset=-6, scale=1.2,
        workflows=("catalog-enrichment", "support-ticket-summary", "chat-assistant", "review-sentiment",
                   "sql-copilot", "email-drafting", "contract-review"),
    ),
    _TenantSpec(
        slug="wayne-media", name="Wayne Media", external_id="cus_WM204871",
        region="eu-west-1", utc_offset=0, scale=0.7,
        workflows=("email-drafting", "review-sentiment", "meeting-notes", "research-agent", "chat-assistant"),
    ),
    _TenantSpec(
        slug="hooli-retail", name="Hooli Retail", external_id="cus_HR918334",
        region="ap-southeast-2", utc_offset=10, scale=0.9,
        workflows=("catalog-enrichment", "review-sentiment", "chat-assistant", "support-ticket-summary",
                   "code-review-bot"),
    ),
)
# fmt: on

# (username, tenant, role); every demo user signs in with DEMO_PASSWORD.
DEMO_MEMBERS = (
    ("northwind-viewer", DEMO_TENANT_SLUG, Membership.Role.VIEWER),
    ("northwind-approver", DEMO_TENANT_SLUG, Membership.Role.APPROVER),
    ("northwind-admin", DEMO_TENANT_SLUG, Membership.Role.ADMIN),
    ("initech-admin", "initech", Membership.Role.ADMIN),
    ("stark-approver", "stark-logistics", Membership.Role.APPROVER),
    ("umbrella-viewer", "umbrella-health", Membership.Role.VIEWER),
)

# Reasoning tokens per visible output token (low, high) for the models that think before answering.
_REASONING = {
    "o3": (0.8, 3.0),
    "o3-mini": (0.6, 2.5),
    "o4-mini": (0.6, 2.5),
    "gpt-5.1": (0.2, 1.5),
    "gpt-5": (0.3, 2.0),
    "gpt-5-mini": (0.3, 1.5),
    "gpt-5-nano": (0.2, 1.0),
    "gemini-3-pro-preview": (0.3, 1.5),
    "gemini-2.5-pro": (0.3, 1.5),
    "gemini-2.5-flash": (0.1, 0.8),
}


def _normalised(weights: tuple[float, ...]) -> tuple[float, ...]:
    total = sum(weights)
    return tuple(w / total for w in weights)


# Share of a day's calls per local hour: a business day, and a nightly batch window.
_DAY_CURVE = _normalised(
    (0.10, 0.07, 0.05, 0.05, 0.07, 0.12, 0.25, 0.55, 0.95, 1.15, 1.20, 1.15,
     0.95, 1.05, 1.15, 1.10, 0.95, 0.75, 0.50, 0.38, 0.30, 0.24, 0.18, 0.13)
)  # fmt: skip
_BATCH_CURVE = _normalised(tuple(1.0 if 1 <= h <= 4 else 0.0 for h in range(24)))
_WEEKEND_FACTOR = 0.4
_ENVIRONMENTS = (Environment.PROD.value, Environment.STAGE.value, Environment.DEV.value)
_ENVIRONMENT_CUM = (0.86, 0.97, 1.0)


@dataclass(frozen=True)
class DemoSummary:
    """What `demo_seed` did and what the demo data set holds now."""

    tenants: int
    workflows: int
    users: int
    records_created: int
    records_total: int  # demo records now stored
    unpriced_records: int
    first_at: datetime | None
    last_at: datetime | None
    seconds: float


@dataclass
class _Pair:
    tenant: Tenant
    spec: _TenantSpec
    workflow: Workflow
    wf: _WorkflowSpec
    api_key_id: int
    names: tuple[str, ...]
    cum_weights: tuple[float, ...]


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _draw(rng: random.Random, p50: int, p95: int) -> int:
    sigma = math.log(p95 / p50) / 1.645
    return max(1, min(int(p50 * math.exp(sigma * rng.gauss(0.0, 1.0))), p95 * 4))


def _setup() -> tuple[list[_Pair], int]:
    """Tenants, workflows, people and keys: created when missing, never changed when present."""
    tiers = {t.slug: t for t in ModelTier.objects.all()}
    missing = {w.tier for w in _WORKFLOWS} - tiers.keys()
    if missing:
        raise ApplicationError("catalog_not_seeded", "Seed the model catalog first (manage.py seed_catalog).")

    tenants = {}
    for spec in _TENANTS:
        tenants[spec.slug], _ = Tenant.objects.get_or_create(
            slug=spec.slug, defaults={"name": spec.name, "external_id": spec.external_id}
        )
    workflows = {}
    for wf in _WORKFLOWS:
        envelope = {}
        if wf.envelope:
            envelope = {
                "expected_input_tokens_p50": wf.input_p50,
                "expected_input_tokens_p95": wf.input_p95,
                "expected_output_tokens_p50": wf.output_p50,
                "expected_output_tokens_p95": wf.output_p95,
                "expected_calls_per_day": wf.calls_per_day,
                "approval_threshold_usd": Decimal(wf.approval_threshold_usd) if wf.approval_threshold_usd else None,
            }
        workflows[wf.slug], _ = Workflow.objects.get_or_create(
            slug=wf.slug,
            defaults={
                "name": wf.name,
                "owner": wf.owner,
                "priority": wf.priority,
                "default_tier": tiers[wf.tier],
                "status": Workflow.Status.REGISTERED,
                **envelope,
            },
        )

    User = get_user_model()
    password_hash = None  # hashed once, lazily: each hash costs a few hundred milliseconds by design
    users = {}
    for username, staff in [(DEMO_USERNAME, True), *((m[0], False) for m in DEMO_MEMBERS)]:
        user = User.objects.filter(username=username).first()
        if user is None:
            password_hash = password_hash or make_password(DEMO_PASSWORD)
            user = User.objects.create(
                username=username,
                email=f"{username}@demo.example",
                password=password_hash,
                is_staff=staff,
                is_superuser=staff,
            )
        users[username] = user
    for username, tenant_slug, role in DEMO_MEMBERS:
        Membership.objects.get_or_create(user=users[username], tenant=tenants[tenant_slug], defaults={"role": role})

    operator = users[DEMO_USERNAME]
    tenant_key = _demo_key(DEMO_API_KEY, tenants[DEMO_TENANT_SLUG], "Demo tenant key", operator)
    platform_key = _demo_key(DEMO_PLATFORM_KEY, None, "Demo platform key", operator)

    pairs = []
    for spec in _TENANTS:
        for slug in spec.workflows:
            wf = next(w for w in _WORKFLOWS if w.slug == slug)
            choices = spec.models.get(slug, wf.models)
            pairs.append(
                _Pair(
                    tenant=tenants[spec.slug],
                    spec=spec,
                    workflow=workflows[slug],
                    wf=wf,
                    api_key_id=(tenant_key if spec.slug == DEMO_TENANT_SLUG else platform_key).pk,
                    names=tuple(name for name, _ in choices),
                    cum_weights=tuple(accumulate(weight for _, weight in choices)),
                )
            )
    return pairs, len(users)


def _demo_key(raw_key: str, tenant: Tenant | None, name: str, operator) -> ApiKey:
    key = ApiKey.objects.filter(prefix=raw_key.split("_", 2)[1]).first()
    if key is None:
        key, _ = api_key_create(
            tenant=tenant, name=name, scopes="ingest,preflight,read,manage", created_by=operator, raw_key=raw_key
        )
    return key


def _hours_to_fill(*, pairs: list[_Pair], start: datetime, end: datetime) -> list[datetime]:
    """The hours in [start, end] not yet stored, nearest to the stored range first.

    Stored demo hours always form one run: hours are written outwards from it (backwards before
    the first stored hour, forwards after the last, from the last even when that is before `start`)
    and committed in that order, so an interrupted run leaves a contiguous range whose two edge
    hours may be partial; those are regenerated, and the unique request ids make their existing
    rows no-ops.
    """
    stored = UsageRecord.objects.filter(
        tenant__in={p.tenant.pk for p in pairs}, request_id__startswith=DEMO_REQUEST_PREFIX
    ).aggregate(lo=Min("occurred_at"), hi=Max("occurred_at"))
    if stored["lo"] is None:
        return _hour_range(start, end)
    lo = stored["lo"].astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hi = stored["hi"].astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    every = _hour_range(min(start, hi), end)
    backwards = [h for h in reversed(every) if h <= lo]
    forwards = [h for h in every if h >= hi and h > lo]
    return backwards + forwards


def _hour_range(start: datetime, end: datetime) -> list[datetime]:
    return [start + timedelta(hours=i) for i in range(int((end - start) / timedelta(hours=1)) + 1)]


def _expected_calls(pair: _Pair, hour: datetime, *, today: date, release_at: datetime) -> float:
    local = hour + timedelta(hours=pair.spec.utc_offset)
    if pair.wf.batch:
        share, weekday_factor = _BATCH_CURVE[local.hour], 1.0
    else:
        share = _DAY_CURVE[local.hour]
        weekday_factor = _WEEKEND_FACTOR if local.weekday() >= 5 else 1.0
    # Slow organic growth: usage 75 days ago ran about 20% below today's.
    trend = max(0.5, 1.0 - 0.0025 * (today - hour.date()).days)
    lam = pair.wf.calls_per_day * pair.spec.scale * share * weekday_factor * trend
    if _is_spiking(pair, hour, release_at):
        lam *= 3
    return lam


def _is_spiking(pair: _Pair, hour: datetime, release_at: datetime) -> bool:
    return pair.spec.slug == _SPIKE_TENANT and pair.wf.slug == _SPIKE_WORKFLOW and hour >= release_at


def _seed_for(pair: _Pair, hour: datetime) -> str:
    return f"{pair.spec.slug}|{pair.wf.slug}|{hour:%Y%m%d%H}"


def _refresh_rollups(touched: set[tuple[int, date]], stdout: IO[str] | None) -> None:
    """Dashboards read rollups: recompute the tenant-days this run filled, with progress."""
    if not touched:
        return
    rollup_mark_dirty(pairs=touched)
    done = 0
    while True:
        step = rollups_refresh(limit=100)
        done += step.days
        if stdout is not None:
            stdout.write(f"rollups: {done:,} / {len(touched):,} tenant-days\n")
        if not step.days or not step.remaining:
            return


def demo_seed(*, days: int = 75, now: datetime | None = None, stdout: IO[str] | None = None) -> DemoSummary:
    """Load the demo data set: tenants, workflows, people, keys and `days` of hourly usage up to `now`.

    Idempotent: existing rows are left as they are, and only hours not stored yet are generated
    (a run on a later day adds the hours since the last run). Needs the seeded catalog.
    """
    started = time.monotonic()
    now = (now or timezone.now()).astimezone(UTC)
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=days * 24 - 1)
    release_at = datetime.combine(end.date() - timedelta(days=_RELEASE_DAYS_AGO), datetime.min.time(), tzinfo=UTC)

    with transaction.atomic():
        pairs, user_count = _setup()
    catalog = get_catalog()
    resolved = {name: catalog.resolve(name) for pair in pairs for name in pair.names}
    demo_records = UsageRecord.objects.filter(
        tenant__in={p.tenant.pk for p in pairs}, request_id__startswith=DEMO_REQUEST_PREFIX
    )
    before = demo_records.count()

    # Pass 1 draws only each (pair, hour)'s call count, so progress can show a total; pass 2 reseeds
    # the same generator and therefore draws the same count before the calls' details.
    plan: list[tuple[_Pair, datetime, float]] = []
    planned = 0
    for hour in _hours_to_fill(pairs=pairs, start=start, end=end):
        for pair in pairs:
            lam = _expected_calls(pair, hour, today=end.date(), release_at=release_at)
            n = _poisson(random.Random(_seed_for(pair, hour)), lam)
            if n:
                plan.append((pair, hour, lam))
                planned += n

    batch: list[UsageRecord] = []
    done = 0
    touched = {(pair.tenant.pk, hour.date()) for pair, hour, _ in plan}
    for pair, hour, lam in plan:
        rng = random.Random(_seed_for(pair, hour))
        n = _poisson(rng, lam)
        spiking = _is_spiking(pair, hour, release_at)
        flags = (pair.wf.flags_after_release or pair.wf.flags) if hour >= release_at else pair.wf.flags
        for i in range(n):
            record = _demo_record(pair, hour, i, rng, resolved, catalog, flags, spiking)
            if record.received_at <= now:
                batch.append(record)
        done += n
        if len(batch) >= _CHUNK:
            _insert(batch)
            batch = []
            _progress(stdout, done, planned)
    if batch:
        _insert(batch)
    if planned:
        _progress(stdout, planned, planned)
    _refresh_rollups(touched, stdout)
    budgets_demo_seed(now=now)

    span = demo_records.aggregate(first=Min("occurred_at"), last=Max("occurred_at"))
    total = demo_records.count()
    summary = DemoSummary(
        tenants=len(_TENANTS),
        workflows=len(_WORKFLOWS),
        users=user_count,
        records_created=total - before,
        records_total=total,
        unpriced_records=demo_records.filter(priced=False).count(),
        first_at=span["first"],
        last_at=span["last"],
        seconds=round(time.monotonic() - started, 1),
    )
    if summary.records_created:
        audit_record(action="demo.seed", after={"days": days, "records_created": summary.records_created})
    return summary


def _demo_record(
    pair: _Pair,
    hour: datetime,
    i: int,
    rng: random.Random,
    resolved: dict[str, ModelEntry | None],
    catalog: CatalogSnapshot,
    flags: tuple[str, ...],
    spiking: bool,
) -> UsageRecord:
    # Every draw happens on every call, whatever the branch, so a call's values never depend on the
    # catalog's state (a model added later must not shift the random stream of the calls after it).
    model_name = pair.names[bisect_right(pair.cum_weights, rng.random() * pair.cum_weights[-1])]
    environment = _ENVIRONMENTS[bisect_right(_ENVIRONMENT_CUM, rng.random())]
    prompt = _draw(rng, pair.wf.input_p50, pair.wf.input_p95)
    output = _draw(rng, pair.wf.output_p50, pair.wf.output_p95) * (2 if spiking else 1)
    cache_roll, cache_share, write_roll, think = rng.random(), rng.uniform(0.35, 0.85), rng.random(), rng.random()
    occurred = hour + timedelta(microseconds=rng.randrange(3_600_000_000))
    received = occurred + timedelta(milliseconds=rng.randint(200, 6000))
    tags = {"feature_flag": flags[rng.randrange(len(flags))], "region": pair.spec.region}

    entry = resolved[model_name]
    cached = cache_write = reasoning = 0
    if entry is not None:
        if entry.context_window:
            prompt = min(prompt, entry.context_window * 8 // 10)
        if entry.max_output_tokens:
            output = min(output, entry.max_output_tokens)
        if cache_roll < pair.wf.cache_share:
            portion = int(prompt * cache_share)
            if entry.provider == "anthropic" and write_roll < 0.12:
                cache_write = portion  # Anthropic caches only what the client marks, paying for the write
            elif entry.provider != "openai" or prompt >= 1024:  # OpenAI caches prompts from 1,024 tokens
                cached = portion
        low_high = _REASONING.get(entry.name)
        if low_high:
            reasoning = int(output * (low_high[0] + think * (low_high[1] - low_high[0])))
    tokens = TokenBuckets(
        input=prompt - cached - cache_write,
        cached_input=cached,
        cache_write=cache_write,
        output=output,
        reasoning=reasoning,
    )
    price = catalog.price_at(entry.id, occurred) if entry is not None else None
    return UsageRecord(
        tenant_id=pair.tenant.pk,
        workflow_id=pair.workflow.pk,
        model_id=entry.id if entry is not None else None,
        model_name=model_name,
        environment=environment,
        input_tokens=tokens.input,
        cached_input_tokens=tokens.cached_input,
        cache_write_tokens=tokens.cache_write,
        output_tokens=tokens.output,
        reasoning_tokens=tokens.reasoning,
        cost_nanos=cost_nanos(price, tokens) if price is not None else None,
        priced=price is not None,
        price_id=price.id if price is not None else None,
        occurred_at=occurred,
        received_at=received,
        request_id=f"{DEMO_REQUEST_PREFIX}{pair.spec.slug}-{pair.wf.slug}-{hour:%Y%m%d%H}-{i}",
        content_hash=usage_content_hash(
            workflow=pair.wf.slug,
            model_name=model_name,
            environment=environment,
            occurred_at=occurred,
            input_tokens=tokens.input,
            cached_input_tokens=tokens.cached_input,
            cache_write_tokens=tokens.cache_write,
            output_tokens=tokens.output,
            reasoning_tokens=tokens.reasoning,
            tags=tags,
        ),
        api_key_id=pair.api_key_id,
        tags=tags,
    )


def _insert(batch: list[UsageRecord]) -> None:
    with transaction.atomic():
        UsageRecord.objects.bulk_create(batch, batch_size=2000, ignore_conflicts=True)


def _progress(stdout: IO[str] | None, done: int, total: int) -> None:
    if stdout is not None:
        stdout.write(f"usage: {done:,} / {total:,} records ({done * 100 // max(total, 1)}%)\n")
