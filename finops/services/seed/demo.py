"""The demo data set: tenants, workflows, people, keys and `days` of hourly usage, then the other apps' parts.

Idempotent and deterministic (see demo_usage.py): a rerun adds only the hours not stored yet. Apps
above finops add their part of the demo (budgets, controls, approvals) through `finops.hooks`: they
register a demo seeder, which `demo_seed` calls once the usage and its rollups are stored.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import accumulate
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone

from finops import hooks
from finops.catalog import get_catalog
from finops.models import ModelTier, UsageRecord, Workflow
from finops.services.ingest import usage_bulk_insert_new
from finops.services.rollups import rollup_mark_dirty, rollups_refresh
from tenants.errors import ApplicationError
from tenants.models import ApiKey, Membership, Tenant
from tenants.scope import Actor
from tenants.services import api_key_create, audit_record

from .demo_specs import (
    DEMO_API_KEY,
    DEMO_MEMBERS,
    DEMO_PASSWORD,
    DEMO_PLATFORM_KEY,
    DEMO_REQUEST_PREFIX,
    DEMO_TENANT_SLUG,
    DEMO_USERNAME,
    RELEASE_DAYS_AGO,
    TENANTS,
    WORKFLOWS,
)
from .demo_usage import Pair, demo_record, expected_calls, hours_to_fill, is_spiking, poisson, seed_for

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

_CHUNK = 10_000


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


def _setup() -> tuple[list[Pair], int]:
    """Tenants, workflows, people and keys: created when missing, never changed when present."""
    tiers = {t.slug: t for t in ModelTier.objects.all()}
    missing = {w.tier for w in WORKFLOWS} - tiers.keys()
    if missing:
        raise ApplicationError("catalog_not_seeded", "Seed the model catalog first (manage.py seed_catalog).")

    tenants = {}
    for spec in TENANTS:
        tenants[spec.slug], _ = Tenant.objects.get_or_create(
            slug=spec.slug, defaults={"name": spec.name, "external_id": spec.external_id}
        )
    workflows = {}
    for wf in WORKFLOWS:
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
    for spec in TENANTS:
        for slug in spec.workflows:
            wf = next(w for w in WORKFLOWS if w.slug == slug)
            choices = spec.models.get(slug, wf.models)
            pairs.append(
                Pair(
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
            tenant=tenant, name=name, scopes="ingest,preflight,read,manage", actor=Actor(user=operator), raw_key=raw_key
        )
    return key


def _refresh_rollups(touched: set[tuple[int, date]], stdout: SupportsWrite[str] | None) -> None:
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


def demo_seed(*, days: int = 75, now: datetime | None = None, stdout: SupportsWrite[str] | None = None) -> DemoSummary:
    """Load the demo data set: tenants, workflows, people, keys and `days` of hourly usage up to `now`,
    then run the demo seeders other apps registered (`finops.hooks.demo_seeder_register`).

    Idempotent: existing rows are left as they are, and only hours not stored yet are generated
    (a run on a later day adds the hours since the last run). Needs the seeded catalog.
    """
    started = time.monotonic()
    now = (now or timezone.now()).astimezone(UTC)
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=days * 24 - 1)
    release_at = datetime.combine(end.date() - timedelta(days=RELEASE_DAYS_AGO), datetime.min.time(), tzinfo=UTC)

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
    plan: list[tuple[Pair, datetime, float]] = []
    planned = 0
    for hour in hours_to_fill(pairs=pairs, start=start, end=end):
        for pair in pairs:
            lam = expected_calls(pair, hour, today=end.date(), release_at=release_at)
            n = poisson(random.Random(seed_for(pair, hour)), lam)
            if n:
                plan.append((pair, hour, lam))
                planned += n

    batch: list[UsageRecord] = []
    done = 0
    touched = {(pair.tenant.pk, hour.date()) for pair, hour, _ in plan}
    for pair, hour, lam in plan:
        rng = random.Random(seed_for(pair, hour))
        n = poisson(rng, lam)
        spiking = is_spiking(pair, hour, release_at)
        flags = (pair.wf.flags_after_release or pair.wf.flags) if hour >= release_at else pair.wf.flags
        for i in range(n):
            record = demo_record(pair, hour, i, rng, resolved, catalog, flags, spiking)
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
    # The other apps' parts (demo budgets, controls, approvals) read the usage and rollups just stored.
    for seeder in hooks.demo_seeders:
        seeder(now=now)

    span = demo_records.aggregate(first=Min("occurred_at"), last=Max("occurred_at"))
    total = demo_records.count()
    summary = DemoSummary(
        tenants=len(TENANTS),
        workflows=len(WORKFLOWS),
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


def _insert(batch: list[UsageRecord]) -> None:
    with transaction.atomic():
        usage_bulk_insert_new(batch)


def _progress(stdout: SupportsWrite[str] | None, done: int, total: int) -> None:
    if stdout is not None:
        stdout.write(f"usage: {done:,} / {total:,} records ({done * 100 // max(total, 1)}%)\n")
