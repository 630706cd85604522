"""Usage ingest: validate, price and store a batch of LLM call reports with per-item outcomes.

The hot path is built for volume (DESIGN.md section 12): validation is plain Python over dicts,
lookups are one query each per batch (catalog fingerprint, tenants, workflows, existing request
ids), and new rows go to PostgreSQL with one COPY. Nothing is looked up per record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from django.db import IntegrityError, connection, transaction

from finops import hooks
from finops.catalog import CatalogSnapshot, get_catalog
from finops.hooks import Charge
from finops.measures import TOKEN_FIELDS
from finops.models import UsageKey, UsageRecord, Workflow
from finops.pricing import cost_nanos
from finops.usage_identity import usage_content_hash
from tenants.models import ApiKey, Tenant

from .rollups import rollup_mark_dirty
from .usage_validation import Candidate, Limits, RecordError, count_text_tokens, validate_record

logger = logging.getLogger(__name__)

ACCEPTED, DUPLICATE, CONFLICT, REJECTED = "accepted", "duplicate", "conflict", "rejected"


@dataclass(slots=True)
class ItemOutcome:
    index: int
    status: str
    request_id: str | None = None
    id: int | None = None
    cost_nanos: int | None = None
    priced: bool | None = None
    errors: dict[str, list[str]] | None = None


@dataclass
class IngestResult:
    items: list[ItemOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for item in self.items if item.status == status)

    @property
    def all_stored(self) -> bool:
        """True when every item is now stored as sent (accepted now or before)."""
        return all(item.status in (ACCEPTED, DUPLICATE) for item in self.items)


def usage_ingest(
    *,
    records: list[Any],
    bound_tenant: Tenant | None,
    api_key: ApiKey | None = None,
    now: datetime | None = None,
) -> IngestResult:
    """Store every valid record of a batch and say per item what happened.

    `bound_tenant` is the tenant of a tenant key (records may not name another); with None the
    caller is a platform key or operator and each record names its tenant. A record whose
    request_id is already stored for its tenant is a duplicate when its content hash matches and
    a conflict otherwise; neither changes anything.
    """
    now = now or datetime.now(UTC)
    result = IngestResult(items=[ItemOutcome(index=i, status=REJECTED) for i in range(len(records))])
    bound_slug = bound_tenant.slug if bound_tenant is not None else None

    limits = Limits.current(now)
    candidates: list[Candidate] = []
    for i, raw in enumerate(records):
        try:
            candidates.append(validate_record(i, raw, limits, bound_slug))
        except RecordError as exc:
            _reject(result, i, exc, raw)
    if not candidates:
        return result

    catalog = get_catalog()
    tenant_ids = _resolve_tenants(candidates, bound_tenant, result)
    valid: list[Candidate] = []
    for c in candidates:
        if c.tenant_slug not in tenant_ids:
            continue
        c.tenant_id = tenant_ids[c.tenant_slug]
        try:
            if c.buckets is None:
                count_text_tokens(c, catalog)
        except RecordError as exc:
            _reject(result, c.index, exc, c.raw)
            continue
        _price(c, catalog)
        c.content_hash = _content_hash(c)
        valid.append(c)
    if not valid:
        return result

    # Optimistic first attempt: most batches are new, so insert without looking up stored ids and
    # let the unique index object. On a violation (a replayed batch, or a concurrent request with
    # the same ids) everything rolls back and the batch is classified against what is stored.
    for attempt in range(3):
        try:
            with transaction.atomic():
                _resolve_workflows(valid)
                fresh, copies = _classify(valid, result, look_up=attempt > 0)
                if fresh:
                    _insert(fresh, api_key, now, result)
            break
        except (IntegrityError, psycopg.errors.UniqueViolation):
            if attempt == 2:
                raise
        except psycopg.errors.CheckViolation as exc:
            # The batch waited for the maintenance job creating its month's partition (it locks the
            # default partition while it moves that month's rows out): the COPY, routed to the default
            # partition before the new one was attached, is refused by the default's new bounds. Run
            # again, it is routed to the new partition (tests/finops/test_usage_partitions.py).
            if "partition constraint" not in str(exc) or attempt == 2:
                raise
    for dup_index, first_index in copies.items():
        result.items[dup_index].id = result.items[first_index].id
    return result


def _reject(result: IngestResult, index: int, exc: RecordError, raw: Any) -> None:
    item = result.items[index]
    item.status = REJECTED
    request_id = raw.get("request_id") if isinstance(raw, dict) else None
    item.request_id = request_id if isinstance(request_id, str) else None
    item.errors = {exc.field: [exc.message]}


def _resolve_tenants(candidates: list[Candidate], bound: Tenant | None, result: IngestResult) -> dict[str, int]:
    if bound is not None:
        return {bound.slug: bound.pk}
    slugs = {c.tenant_slug for c in candidates}
    found = dict(Tenant.objects.filter(slug__in=slugs, status=Tenant.Status.ACTIVE).values_list("slug", "id"))
    for c in candidates:
        if c.tenant_slug not in found:
            _reject(result, c.index, RecordError("tenant", f"No active tenant '{c.tenant_slug}'."), c.raw)
    return found


def _price(c: Candidate, catalog: CatalogSnapshot) -> None:
    entry = catalog.resolve(c.model_name)
    if entry is None:
        return
    c.model_id = entry.id
    c.tier_id = entry.tier_id
    price = catalog.price_at(entry.id, c.occurred_at, channel=c.channel, service_tier=c.service_tier)
    if price is not None:
        c.price_id = price.id
        c.cost = cost_nanos(price, c.counted_buckets)
        c.price_rule = price.rule(c.counted_buckets)


def _content_hash(c: Candidate) -> str:
    b = c.counted_buckets
    return usage_content_hash(
        workflow=c.workflow_slug or "",
        model_name=c.model_name,
        environment=c.environment,
        occurred_at=c.occurred_at if c.raw.get("occurred_at") is not None else None,
        input_tokens=b.input,
        cached_input_tokens=b.cached_input,
        cache_write_tokens=b.cache_write,
        output_tokens=b.output,
        reasoning_tokens=b.reasoning,
        tags=c.tags,
        reservation_id=c.reservation_id,
        prompt_version=c.prompt_version,
        cache_write_1h_tokens=b.cache_write_1h,
        service_tier=c.service_tier,
        channel=c.channel,
    )


def _resolve_workflows(valid: list[Candidate]) -> None:
    """Map slugs to ids; an unknown slug registers the workflow as auto-discovered."""
    slugs = {c.workflow_slug for c in valid if c.workflow_slug}
    if not slugs:
        return
    ids = dict(Workflow.objects.filter(slug__in=slugs).values_list("slug", "id"))
    missing = slugs - ids.keys()
    if missing:
        Workflow.objects.bulk_create(
            [
                Workflow(
                    slug=s,
                    name=s.replace("-", " ").replace("_", " ").capitalize(),
                    status=Workflow.Status.AUTO_DISCOVERED,
                )
                for s in sorted(missing)
            ],
            ignore_conflicts=True,
        )
        ids.update(Workflow.objects.filter(slug__in=missing).values_list("slug", "id"))
    for c in valid:
        if c.workflow_slug:
            c.workflow_id = ids[c.workflow_slug]


def stored_lookup_sql(tenant_ids: list[int], request_ids: list[str]) -> tuple[str, list[Any]]:
    """PostgreSQL: the query for stored rows under these (tenant, request_id) keys (bench/usage_layout.py
    EXPLAINs it). The key lives in finops_usagekey (the usage table is partitioned by month: see UsageKey),
    which gives each stored record's id and occurred_at; the usage row is then read by its primary key
    (id, occurred_at), so each probe touches one month's partition (run-time pruning). One array parameter
    per column: an IN list of 1,000 placeholders costs far more to bind. A batch of one tenant (every tenant
    key's) names it as a plain value: one shard on Citus, not a join on a list."""
    usage = f"LEFT JOIN {UsageRecord._meta.db_table} u ON u.id = k.usage_id AND u.occurred_at = k.occurred_at"
    select = "SELECT k.tenant_id, k.request_id, k.usage_id, u.content_hash, u.cost_nanos, u.priced"
    tenants = set(tenant_ids)
    if len(tenants) == 1:
        # unnest + join, not `request_id = ANY(...)`: with ANY the planner may pick a scan of the whole key
        # table for a large batch (it did at 400,000 keys); the join probes the primary key per request id.
        sql = (
            f"{select} FROM unnest(%s::text[]) AS q(request_id) JOIN finops_usagekey k "
            f"ON k.tenant_id = %s AND k.request_id = q.request_id {usage}"
        )
        return sql, [request_ids, next(iter(tenants))]
    sql = (
        f"{select} FROM unnest(%s::bigint[], %s::text[]) AS q(tenant_id, request_id) JOIN finops_usagekey k "
        f"ON k.tenant_id = q.tenant_id AND k.request_id = q.request_id {usage}"
    )
    return sql, [tenant_ids, request_ids]


def _stored(valid: list[Candidate]) -> dict[tuple[int, str], tuple[int, str, int | None, bool]]:
    """Rows already stored under the batch's (tenant, request_id) keys, in one query."""
    stored = {}
    if connection.vendor == "postgresql":
        sql, params = stored_lookup_sql([c.tenant_id for c in valid], [c.request_id for c in valid])
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    else:
        by_tenant: dict[int, list[str]] = {}
        for c in valid:
            by_tenant.setdefault(c.tenant_id, []).append(c.request_id)
        rows = []
        for tenant_id, request_ids in by_tenant.items():
            rows += UsageRecord.objects.filter(tenant_id=tenant_id, request_id__in=request_ids).values_list(
                "tenant_id", "request_id", "id", "content_hash", "cost_nanos", "priced"
            )
    for tenant_id, request_id, pk, content_hash, cost, priced in rows:
        stored[(tenant_id, request_id)] = (pk, content_hash, cost, priced)
    return stored


def _classify(valid: list[Candidate], result: IngestResult, *, look_up: bool) -> tuple[list[Candidate], dict[int, int]]:
    """Mark duplicates and conflicts within the batch and, with `look_up`, against stored rows.

    Returns the records to insert and, for repeats inside the batch, the index of the first copy.
    """
    stored = _stored(valid) if look_up else {}

    fresh: list[Candidate] = []
    copies: dict[int, int] = {}
    seen: dict[tuple[int, str], Candidate] = {}
    for c in valid:
        item = result.items[c.index] = ItemOutcome(index=c.index, status=REJECTED, request_id=c.request_id)
        key = (c.tenant_id, c.request_id)
        hit = stored.get(key)
        if hit is not None:
            pk, content_hash, cost, priced = hit
            item.id = pk
            if content_hash == c.content_hash:
                item.status, item.cost_nanos, item.priced = DUPLICATE, cost, priced
            else:
                item.status = CONFLICT
                item.errors = {"request_id": ["Already recorded with different content; nothing was changed."]}
            continue
        first = seen.get(key)
        if first is not None:
            if first.content_hash == c.content_hash:
                item.status, item.cost_nanos, item.priced = DUPLICATE, first.cost, first.cost is not None
                copies[c.index] = first.index
            else:
                item.status = CONFLICT
                item.errors = {"request_id": ["Appears earlier in this batch with different content."]}
            continue
        seen[key] = c
        fresh.append(c)
    return fresh, copies


_COLUMNS = (
    "id",
    "tenant_id",
    "workflow_id",
    "model_id",
    "model_name",
    "environment",
    *TOKEN_FIELDS,
    "cost_nanos",
    "priced",
    "price_id",
    "tokens_counted",
    "tokens_estimated",
    "occurred_at",
    "received_at",
    "request_id",
    "content_hash",
    "reservation_id",
    "api_key_id",
    "tags",
    "prompt_version",
    "cache_write_1h_tokens",
    "service_tier",
    "channel",
    "price_rule",
)


def _insert(fresh: list[Candidate], api_key: ApiKey | None, now: datetime, result: IngestResult) -> None:
    key_id = api_key.pk if api_key is not None else None
    if connection.vendor == "postgresql":
        ids = _pg_copy(fresh, key_id, now)
    else:
        ids = _orm_insert(fresh, key_id, now)
    for c, pk in zip(fresh, ids, strict=True):
        item = result.items[c.index]
        item.status, item.id, item.cost_nanos, item.priced = ACCEPTED, pk, c.cost, c.cost is not None
    # Same transaction as the rows: the rollup job sees the mark exactly when it sees the records,
    # and budget windows move (and reservations settle) exactly when the records are stored.
    rollup_mark_dirty(pairs={(c.tenant_id, c.occurred_at.date()) for c in fresh})
    charger = hooks.usage_charger  # registered by the budgets app when it is installed
    if charger is None:
        return
    charger(
        [
            Charge(
                tenant_id=c.tenant_id,
                workflow_id=c.workflow_id,
                environment=c.environment,
                tier_id=c.tier_id,
                occurred_at=c.occurred_at,
                cost_nanos=c.cost,
                tokens=c.counted_buckets.total,
                reservation_id=c.reservation_id,
                usage_id=result.items[c.index].id,
                input_tokens=c.counted_buckets.prompt,
            )
            for c in fresh
        ],
        now=now,
    )


def _pg_copy(fresh: list[Candidate], key_id: int | None, now: datetime) -> list[int]:
    table = UsageRecord._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            # Resolve the sequence once, not per generated row.
            f"SELECT nextval('{table}_id_seq'::regclass) FROM generate_series(1, %s)",
            [len(fresh)],
        )
        ids = [row[0] for row in cursor.fetchall()]
        copy_sql = f"COPY {table} ({', '.join(_COLUMNS)}) FROM STDIN"
        with cursor.cursor.copy(copy_sql) as copy:
            for pk, c in zip(ids, fresh, strict=True):
                b = c.counted_buckets
                copy.write_row(
                    (
                        pk,
                        c.tenant_id,
                        c.workflow_id,
                        c.model_id,
                        c.model_name,
                        c.environment,
                        b.input,
                        b.cached_input,
                        b.cache_write,
                        b.output,
                        b.reasoning,
                        c.cost,
                        c.cost is not None,
                        c.price_id,
                        c.tokens_counted,
                        c.tokens_estimated,
                        c.occurred_at,
                        now,
                        c.request_id,
                        c.content_hash,
                        c.reservation_id,
                        key_id,
                        orjson.dumps(c.tags).decode(),
                        c.prompt_version,
                        b.cache_write_1h,
                        c.service_tier,
                        c.channel,
                        c.price_rule,
                    )
                )
    return ids


def _orm_insert(fresh: list[Candidate], key_id: int | None, now: datetime) -> list[int]:
    objs = [
        UsageRecord(
            tenant_id=c.tenant_id,
            workflow_id=c.workflow_id,
            model_id=c.model_id,
            model_name=c.model_name,
            environment=c.environment,
            input_tokens=c.counted_buckets.input,
            cached_input_tokens=c.counted_buckets.cached_input,
            cache_write_tokens=c.counted_buckets.cache_write,
            output_tokens=c.counted_buckets.output,
            reasoning_tokens=c.counted_buckets.reasoning,
            cost_nanos=c.cost,
            priced=c.cost is not None,
            price_id=c.price_id,
            tokens_counted=c.tokens_counted,
            tokens_estimated=c.tokens_estimated,
            occurred_at=c.occurred_at,
            received_at=now,
            request_id=c.request_id,
            content_hash=c.content_hash,
            reservation_id=c.reservation_id,
            api_key_id=key_id,
            tags=c.tags,
            prompt_version=c.prompt_version,
            cache_write_1h_tokens=c.counted_buckets.cache_write_1h,
            service_tier=c.service_tier,
            channel=c.channel,
            price_rule=c.price_rule,
        )
        for c in fresh
    ]
    UsageRecord.objects.bulk_create(objs, batch_size=500)
    return [o.pk for o in objs]


def usage_bulk_insert_new(rows: list[UsageRecord], *, batch_size: int = 2000) -> int:
    """Insert the records whose (tenant, request_id) is not stored yet; returns how many were inserted.

    For seeders and backfills, not the ingest path. `bulk_create(ignore_conflicts=True)` cannot skip a
    stored key on PostgreSQL: the key lives in finops_usagekey (the usage table is partitioned), and its
    trigger raises on a repeat instead. SQLite keeps the unique constraint on the usage table itself.
    """
    by_tenant: dict[int, set[str]] = {}
    for row in rows:
        by_tenant.setdefault(row.tenant_id, set()).add(row.request_id)
    stored: set[tuple[int, str]] = set()
    keys = UsageKey.objects if connection.vendor == "postgresql" else UsageRecord.objects
    for tenant_id, request_ids in by_tenant.items():
        for request_id in keys.filter(tenant_id=tenant_id, request_id__in=request_ids).values_list(
            "request_id", flat=True
        ):
            stored.add((tenant_id, request_id))
    new, seen = [], set(stored)
    for row in rows:
        key = (row.tenant_id, row.request_id)
        if key not in seen:
            seen.add(key)
            new.append(row)
    UsageRecord.objects.bulk_create(new, batch_size=batch_size)
    return len(new)
