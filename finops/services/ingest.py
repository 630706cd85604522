"""Usage ingest: validate, price and store a batch of LLM call reports with per-item outcomes.

The hot path is built for volume (DESIGN.md section 12): validation is plain Python over dicts,
lookups are one query each per batch (catalog fingerprint, tenants, workflows, existing request
ids), and new rows go to PostgreSQL with one COPY. Nothing is looked up per record.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from finops import tokens as tokenizer
from finops.catalog import CatalogSnapshot, get_catalog
from finops.models import Environment, UsageRecord, Workflow
from finops.pricing import TokenBuckets, cost_nanos
from finops.usage_identity import usage_content_hash
from tenants.models import ApiKey, Tenant

logger = logging.getLogger(__name__)

ACCEPTED, DUPLICATE, CONFLICT, REJECTED = "accepted", "duplicate", "conflict", "rejected"
TOKEN_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
TEXT_FIELDS = ("prompt", "messages", "completion")
KNOWN_FIELDS = frozenset(
    {
        "request_id",
        "tenant",
        "workflow",
        "model",
        "environment",
        "occurred_at",
        "tags",
        "usage",
        "reservation_id",
        *TOKEN_FIELDS,
        *TEXT_FIELDS,
    }
)
ENVIRONMENTS = frozenset(Environment.values)
MAX_TOKENS = 10**9  # per bucket, per record: far above any real call, far below overflow
_SLUG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_MAX_TEXT_CHARS = 2_000_000


class RecordError(Exception):
    """A field error on one record; collected, never raised out of the service."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message


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


@dataclass(slots=True)
class _Candidate:
    """A record that passed validation, on its way to the table."""

    index: int
    raw: dict
    request_id: str
    tenant_slug: str | None
    workflow_slug: str | None
    model_name: str
    environment: str
    occurred_at: datetime
    tags: dict[str, str]
    reservation_id: str | None
    buckets: TokenBuckets | None = None  # None until text is counted
    tokens_counted: bool = False
    tokens_estimated: bool = False
    tenant_id: int = 0
    workflow_id: int | None = None
    model_id: int | None = None
    price_id: int | None = None
    cost: int | None = None
    content_hash: str = ""


# --- validation ---------------------------------------------------------------------------------------


def _int_field(name: str, value: Any) -> int:
    # bool is an int subclass in Python; JSON true is not a token count.
    if type(value) is not int:
        raise RecordError(name, "Must be a whole number of tokens.")
    if value < 0:
        raise RecordError(name, "Must not be negative.")
    if value > MAX_TOKENS:
        raise RecordError(name, f"Must be at most {MAX_TOKENS:,} tokens.")
    return value


def _opt_int(container: dict, key: str, path: str) -> int:
    value = container.get(key)
    if value is None:
        return 0
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # the common case, without a call
        return value
    return _int_field(path, value)


def _sub(container: dict, key: str, path: str) -> dict:
    value = container.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError(path, "Must be an object.")
    return value


def buckets_from_usage(usage: Any) -> TokenBuckets:
    """Map a provider SDK's `usage` object to non-overlapping buckets.

    - OpenAI Chat Completions: prompt_tokens includes cached tokens, completion_tokens includes
      reasoning tokens, so both are subtracted out.
    - OpenAI Responses: input_tokens / output_tokens with *_details, same inclusions.
    - Anthropic Messages: input_tokens excludes cache reads and writes, which come separately.
    - Google Gemini usageMetadata: promptTokenCount includes cachedContentTokenCount; thoughts apart.
    """
    if not isinstance(usage, dict):
        raise RecordError("usage", "Must be an object as returned by the OpenAI, Anthropic or Gemini SDK.")
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        prompt = _opt_int(usage, "prompt_tokens", "usage.prompt_tokens")
        completion = _opt_int(usage, "completion_tokens", "usage.completion_tokens")
        cached = _opt_int(
            _sub(usage, "prompt_tokens_details", "usage.prompt_tokens_details"),
            "cached_tokens",
            "usage.prompt_tokens_details.cached_tokens",
        )
        reasoning = _opt_int(
            _sub(usage, "completion_tokens_details", "usage.completion_tokens_details"),
            "reasoning_tokens",
            "usage.completion_tokens_details.reasoning_tokens",
        )
        return _split("usage.prompt_tokens", prompt, cached, "usage.completion_tokens", completion, reasoning)
    if "input_tokens_details" in usage or "output_tokens_details" in usage:
        prompt = _opt_int(usage, "input_tokens", "usage.input_tokens")
        completion = _opt_int(usage, "output_tokens", "usage.output_tokens")
        cached = _opt_int(
            _sub(usage, "input_tokens_details", "usage.input_tokens_details"),
            "cached_tokens",
            "usage.input_tokens_details.cached_tokens",
        )
        reasoning = _opt_int(
            _sub(usage, "output_tokens_details", "usage.output_tokens_details"),
            "reasoning_tokens",
            "usage.output_tokens_details.reasoning_tokens",
        )
        return _split("usage.input_tokens", prompt, cached, "usage.output_tokens", completion, reasoning)
    if "input_tokens" in usage or "output_tokens" in usage:
        return TokenBuckets(
            input=_opt_int(usage, "input_tokens", "usage.input_tokens"),
            cached_input=_opt_int(usage, "cache_read_input_tokens", "usage.cache_read_input_tokens"),
            cache_write=_opt_int(usage, "cache_creation_input_tokens", "usage.cache_creation_input_tokens"),
            output=_opt_int(usage, "output_tokens", "usage.output_tokens"),
        )
    if "promptTokenCount" in usage or "candidatesTokenCount" in usage:
        prompt = _opt_int(usage, "promptTokenCount", "usage.promptTokenCount")
        cached = _opt_int(usage, "cachedContentTokenCount", "usage.cachedContentTokenCount")
        if cached > prompt:
            raise RecordError("usage.cachedContentTokenCount", "Cannot exceed promptTokenCount.")
        return TokenBuckets(
            input=prompt - cached,
            cached_input=cached,
            output=_opt_int(usage, "candidatesTokenCount", "usage.candidatesTokenCount"),
            reasoning=_opt_int(usage, "thoughtsTokenCount", "usage.thoughtsTokenCount"),
        )
    raise RecordError(
        "usage",
        "Unrecognised usage shape: expected OpenAI (prompt_tokens/completion_tokens or input_tokens_details), "
        "Anthropic (input_tokens/output_tokens) or Gemini (promptTokenCount) fields.",
    )


def _split(in_path: str, prompt: int, cached: int, out_path: str, completion: int, reasoning: int) -> TokenBuckets:
    if cached > prompt:
        raise RecordError(in_path, f"Includes the cached tokens, so it cannot be below them ({cached}).")
    if reasoning > completion:
        raise RecordError(out_path, f"Includes the reasoning tokens, so it cannot be below them ({reasoning}).")
    return TokenBuckets(input=prompt - cached, cached_input=cached, output=completion - reasoning, reasoning=reasoning)


@dataclass(frozen=True, slots=True)
class _Limits:
    """Settings read once per batch: attribute access on django.conf.settings is not free."""

    now: datetime
    earliest: datetime
    latest: datetime
    backfill_days: int
    future_seconds: int
    max_tags: int

    @classmethod
    def current(cls, now: datetime) -> _Limits:
        backfill, future = settings.USAGE_BACKFILL_DAYS, settings.USAGE_MAX_FUTURE_SECONDS
        return cls(
            now=now,
            earliest=now - timedelta(days=backfill),
            latest=now + timedelta(seconds=future),
            backfill_days=backfill,
            future_seconds=future,
            max_tags=settings.USAGE_MAX_TAGS,
        )


def _parse_occurred_at(value: Any, limits: _Limits) -> datetime:
    if value is None:
        return limits.now
    if not isinstance(value, str):
        raise RecordError("occurred_at", "Must be an ISO 8601 timestamp string with a UTC offset.")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise RecordError("occurred_at", f"'{value[:40]}' is not an ISO 8601 timestamp.") from None
    if when.tzinfo is None:
        raise RecordError("occurred_at", "Must include a UTC offset, e.g. 2025-05-01T12:00:00Z or +02:00.")
    when = when.astimezone(UTC)
    if when > limits.latest:
        raise RecordError("occurred_at", f"Is more than {limits.future_seconds} seconds in the future.")
    if when < limits.earliest:
        raise RecordError("occurred_at", f"Is older than the backfill window of {limits.backfill_days} days.")
    return when


def _parse_tags(value: Any, max_tags: int) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError("tags", "Must be an object of string keys to string values.")
    if len(value) > max_tags:
        raise RecordError("tags", f"At most {max_tags} tags per record.")
    for k, v in value.items():
        if not isinstance(v, str) or not 0 < len(k) <= 64 or len(v) > 256:
            raise RecordError("tags", f"Tag '{str(k)[:64]}': keys are 1-64 characters, values strings up to 256.")
    return value


def _validate(index: int, raw: Any, limits: _Limits, bound_slug: str | None) -> _Candidate:
    if not isinstance(raw, dict):
        raise RecordError("non_field_errors", "Each record must be a JSON object.")
    unknown = raw.keys() - KNOWN_FIELDS
    if unknown:
        raise RecordError("non_field_errors", f"Unknown field(s): {', '.join(sorted(unknown)[:5])}.")

    request_id = raw.get("request_id")
    if not isinstance(request_id, str) or not request_id.strip():
        raise RecordError("request_id", "Required: a non-empty string that identifies this call (idempotency key).")
    if len(request_id) > 200:
        raise RecordError("request_id", "At most 200 characters.")

    tenant_slug = raw.get("tenant")
    if tenant_slug is not None and not isinstance(tenant_slug, str):
        raise RecordError("tenant", "Must be a tenant slug.")
    if bound_slug is not None:
        if tenant_slug is not None and tenant_slug != bound_slug:
            raise RecordError("tenant", f"This API key records usage for tenant '{bound_slug}' only.")
        tenant_slug = bound_slug
    elif not tenant_slug:
        raise RecordError("tenant", "Required with a platform key: the slug of the tenant this call was for.")

    workflow = raw.get("workflow")
    if workflow is not None and (not isinstance(workflow, str) or not _SLUG_RE.match(workflow)):
        raise RecordError("workflow", "Must be a slug: letters, digits, '-', '_' or '.', up to 100 characters.")

    model_name = raw.get("model")
    if not isinstance(model_name, str) or not model_name.strip():
        raise RecordError("model", "Required: the model name as sent to the provider.")
    if len(model_name) > 200:
        raise RecordError("model", "At most 200 characters.")

    environment = raw.get("environment", "prod")
    if environment not in ENVIRONMENTS:
        raise RecordError("environment", f"Must be one of {', '.join(sorted(ENVIRONMENTS))}.")

    reservation_id = raw.get("reservation_id")
    if reservation_id is not None:
        try:
            reservation_id = str(uuid.UUID(str(reservation_id)))
        except ValueError:
            raise RecordError("reservation_id", "Must be the reservation id returned by preflight.") from None

    candidate = _Candidate(
        index=index,
        raw=raw,
        request_id=request_id,
        tenant_slug=tenant_slug,
        workflow_slug=workflow,
        model_name=model_name.strip(),
        environment=environment,
        occurred_at=_parse_occurred_at(raw.get("occurred_at"), limits),
        tags=_parse_tags(raw.get("tags"), limits.max_tags),
        reservation_id=reservation_id,
    )

    has_canonical = any(f in raw for f in TOKEN_FIELDS)
    has_usage = "usage" in raw
    has_text = any(f in raw for f in TEXT_FIELDS)
    if has_canonical + has_usage + has_text > 1:
        raise RecordError(
            "non_field_errors", "Give tokens one way: the *_tokens fields, a `usage` object, or prompt/messages text."
        )
    if has_canonical:
        candidate.buckets = TokenBuckets(
            input=_opt_int(raw, "input_tokens", "input_tokens"),
            cached_input=_opt_int(raw, "cached_input_tokens", "cached_input_tokens"),
            cache_write=_opt_int(raw, "cache_write_tokens", "cache_write_tokens"),
            output=_opt_int(raw, "output_tokens", "output_tokens"),
            reasoning=_opt_int(raw, "reasoning_tokens", "reasoning_tokens"),
        )
    elif has_usage:
        candidate.buckets = buckets_from_usage(raw["usage"])
    elif has_text:
        if "prompt" in raw and "messages" in raw:
            raise RecordError("non_field_errors", "Send either prompt or messages, not both.")
        for name in ("prompt", "completion"):
            value = raw.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > _MAX_TEXT_CHARS):
                raise RecordError(name, f"Must be a string of at most {_MAX_TEXT_CHARS:,} characters.")
        if "messages" in raw and not isinstance(raw["messages"], list):
            raise RecordError("messages", "Must be a list of chat messages.")
    else:
        raise RecordError(
            "non_field_errors",
            "No token counts: send input_tokens/output_tokens (and the other *_tokens fields), "
            "a provider `usage` object, or the prompt/messages and completion text to count.",
        )
    return candidate


def _count_text(c: _Candidate, catalog: CatalogSnapshot) -> None:
    """Count prompt/messages and completion with tiktoken; the text itself is never stored."""
    entry = catalog.resolve(c.model_name)
    raw = c.raw
    if "messages" in raw:
        try:
            prompt = tokenizer.count_messages(entry, c.model_name, raw["messages"])
        except ValueError as exc:
            raise RecordError("messages", str(exc)) from None
    else:
        prompt = tokenizer.count_text(entry, c.model_name, raw.get("prompt") or "")
    completion = tokenizer.count_text(entry, c.model_name, raw.get("completion") or "")
    c.buckets = TokenBuckets(input=prompt.tokens, output=completion.tokens)
    c.tokens_counted = True
    c.tokens_estimated = prompt.estimated or completion.estimated


# --- the service --------------------------------------------------------------------------------------


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

    limits = _Limits.current(now)
    candidates: list[_Candidate] = []
    for i, raw in enumerate(records):
        try:
            candidates.append(_validate(i, raw, limits, bound_slug))
        except RecordError as exc:
            _reject(result, i, exc, raw)
    if not candidates:
        return result

    catalog = get_catalog()
    tenant_ids = _resolve_tenants(candidates, bound_tenant, result)
    valid: list[_Candidate] = []
    for c in candidates:
        if c.tenant_slug not in tenant_ids:
            continue
        c.tenant_id = tenant_ids[c.tenant_slug]
        try:
            if c.buckets is None:
                _count_text(c, catalog)
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
    for dup_index, first_index in copies.items():
        result.items[dup_index].id = result.items[first_index].id
    return result


def _reject(result: IngestResult, index: int, exc: RecordError, raw: Any) -> None:
    item = result.items[index]
    item.status = REJECTED
    request_id = raw.get("request_id") if isinstance(raw, dict) else None
    item.request_id = request_id if isinstance(request_id, str) else None
    item.errors = {exc.field: [exc.message]}


def _resolve_tenants(candidates: list[_Candidate], bound: Tenant | None, result: IngestResult) -> dict[str, int]:
    if bound is not None:
        return {bound.slug: bound.pk}
    slugs = {c.tenant_slug for c in candidates}
    found = dict(Tenant.objects.filter(slug__in=slugs, status=Tenant.Status.ACTIVE).values_list("slug", "id"))
    for c in candidates:
        if c.tenant_slug not in found:
            _reject(result, c.index, RecordError("tenant", f"No active tenant '{c.tenant_slug}'."), c.raw)
    return found


def _price(c: _Candidate, catalog: CatalogSnapshot) -> None:
    entry = catalog.resolve(c.model_name)
    if entry is None:
        return
    c.model_id = entry.id
    price = catalog.price_at(entry.id, c.occurred_at)
    if price is not None:
        c.price_id = price.id
        c.cost = cost_nanos(price, c.buckets)


def _content_hash(c: _Candidate) -> str:
    b = c.buckets
    return usage_content_hash(
        workflow=c.workflow_slug or "",
        model_name=c.model_name,
        environment=c.environment,
        occurred_at=c.occurred_at,
        input_tokens=b.input,
        cached_input_tokens=b.cached_input,
        cache_write_tokens=b.cache_write,
        output_tokens=b.output,
        reasoning_tokens=b.reasoning,
        tags=c.tags,
        reservation_id=c.reservation_id,
    )


def _resolve_workflows(valid: list[_Candidate]) -> None:
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


def _stored(valid: list[_Candidate]) -> dict[tuple[int, str], tuple[int, str, int | None, bool]]:
    """Rows already stored under the batch's (tenant, request_id) keys, in one query."""
    stored = {}
    if connection.vendor == "postgresql":
        # One array parameter per column: an IN list of 1,000 placeholders costs far more to bind.
        sql = (
            f"SELECT u.tenant_id, u.request_id, u.id, u.content_hash, u.cost_nanos, u.priced "
            f"FROM {UsageRecord._meta.db_table} u JOIN unnest(%s::bigint[], %s::text[]) AS k(tenant_id, request_id) "
            f"ON u.tenant_id = k.tenant_id AND u.request_id = k.request_id"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [[c.tenant_id for c in valid], [c.request_id for c in valid]])
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


def _classify(
    valid: list[_Candidate], result: IngestResult, *, look_up: bool
) -> tuple[list[_Candidate], dict[int, int]]:
    """Mark duplicates and conflicts within the batch and, with `look_up`, against stored rows.

    Returns the records to insert and, for repeats inside the batch, the index of the first copy.
    """
    stored = _stored(valid) if look_up else {}

    fresh: list[_Candidate] = []
    copies: dict[int, int] = {}
    seen: dict[tuple[int, str], _Candidate] = {}
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
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
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
)


def _insert(fresh: list[_Candidate], api_key: ApiKey | None, now: datetime, result: IngestResult) -> None:
    key_id = api_key.pk if api_key is not None else None
    if connection.vendor == "postgresql":
        ids = _pg_copy(fresh, key_id, now)
    else:
        ids = _orm_insert(fresh, key_id, now)
    for c, pk in zip(fresh, ids, strict=True):
        item = result.items[c.index]
        item.status, item.id, item.cost_nanos, item.priced = ACCEPTED, pk, c.cost, c.cost is not None


def _pg_copy(fresh: list[_Candidate], key_id: int | None, now: datetime) -> list[int]:
    table = UsageRecord._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, %s)", [len(fresh)]
        )
        ids = [row[0] for row in cursor.fetchall()]
        copy_sql = f"COPY {table} ({', '.join(_COLUMNS)}) FROM STDIN"
        with cursor.cursor.copy(copy_sql) as copy:
            for pk, c in zip(ids, fresh, strict=True):
                b = c.buckets
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
                    )
                )
    return ids


def _orm_insert(fresh: list[_Candidate], key_id: int | None, now: datetime) -> list[int]:
    objs = [
        UsageRecord(
            tenant_id=c.tenant_id,
            workflow_id=c.workflow_id,
            model_id=c.model_id,
            model_name=c.model_name,
            environment=c.environment,
            input_tokens=c.buckets.input,
            cached_input_tokens=c.buckets.cached_input,
            cache_write_tokens=c.buckets.cache_write,
            output_tokens=c.buckets.output,
            reasoning_tokens=c.buckets.reasoning,
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
        )
        for c in fresh
    ]
    UsageRecord.objects.bulk_create(objs, batch_size=500)
    return [o.pk for o in objs]
