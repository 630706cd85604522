"""Re-pricing: records of models the catalog learned later, and records under a corrected price.

Costs are recomputed from the stored token buckets with the same integer arithmetic as ingest
and written in chunks keyed by id, so a job that dies half-way is simply run again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from django.db import transaction

from finops.catalog import CatalogSnapshot, get_catalog
from finops.measures import TOKEN_FIELDS
from finops.models import LlmModel, ModelPrice, UsageRecord
from finops.pricing import TokenBuckets, cost_nanos
from finops.services.rollups import rollup_mark_dirty
from tenants.scope import Actor
from tenants.services import audit_record

logger = logging.getLogger(__name__)
CHUNK = 2000
_FIELDS = (
    "id",
    "tenant_id",
    "occurred_at",
    "channel",
    "service_tier",
    "cache_write_1h_tokens",
    *TOKEN_FIELDS,
)


def _reprice_chunked(queryset, catalog: CatalogSnapshot, model_id: int) -> int:
    """Recompute cost for every record of `queryset` as priced by `model_id`; returns rows changed."""
    changed, last_id = 0, 0
    while True:
        rows = list(queryset.filter(id__gt=last_id).order_by("id").values_list(*_FIELDS)[:CHUNK])
        if not rows:
            return changed
        updates = []
        touched = set()
        for pk, tenant_id, occurred_at, channel, tier, write_1h, inp, cached, write, out, reasoning in rows:
            touched.add((tenant_id, occurred_at.astimezone(UTC).date()))
            price = catalog.price_at(model_id, occurred_at, channel=channel, service_tier=tier)
            buckets = TokenBuckets(
                input=inp,
                cached_input=cached,
                cache_write=write,
                output=out,
                reasoning=reasoning,
                cache_write_1h=write_1h,
            )
            cost = cost_nanos(price, buckets) if price is not None else None
            updates.append(
                UsageRecord(
                    id=pk,
                    model_id=model_id,
                    price_id=price.id if price else None,
                    cost_nanos=cost,
                    priced=cost is not None,
                    price_rule=price.rule(buckets) if price is not None else "",
                )
            )
        with transaction.atomic():
            UsageRecord.objects.bulk_update(
                updates, ["model_id", "price_id", "cost_nanos", "priced", "price_rule"], batch_size=500
            )
            rollup_mark_dirty(pairs=touched)
        changed += len(updates)
        last_id = rows[-1][0]


def usage_reprice_unpriced() -> int:
    """Price records that arrived for a model (or at a time) the catalog did not cover then."""
    catalog = get_catalog()
    total = 0
    names = UsageRecord.objects.filter(priced=False).values_list("model_name", flat=True).distinct()
    for name in list(names):
        entry = catalog.resolve(name)
        if entry is None:
            continue
        qs = UsageRecord.objects.filter(priced=False, model_name=name)
        total += _reprice_chunked(qs, catalog, entry.id)
    if total:
        logger.info("re-priced %s previously unpriced usage records", total)
    return total


def usage_reprice_model(*, model_id: int, since: datetime | None = None) -> int:
    """Recompute the cost of a model's records from `since` (a price's start) on."""
    catalog = get_catalog()
    qs = UsageRecord.objects.filter(model_id=model_id)
    if since is not None:
        qs = qs.filter(occurred_at__gte=since)
    total = _reprice_chunked(qs, catalog, model_id)
    logger.info("re-priced %s usage records of model %s since %s", total, model_id, since)
    return total


def _queue_reprice(model_id: int, since: datetime | None) -> None:
    # Recorded with the price change (finops.services.outbox): a broker that is down delays the
    # re-pricing until the sweeper sends it again, but neither loses it nor fails the change.
    from finops.services.outbox import enqueue_durably
    from finops.tasks import reprice_model_usage, reprice_unpriced_usage

    enqueue_durably(reprice_model_usage, model_id=model_id, since=since.isoformat() if since else None)
    enqueue_durably(reprice_unpriced_usage)


_AUDITED_PRICE_FIELDS = (
    "effective_from",
    "channel",
    "service_tier",
    "input",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "output",
    "reasoning",
    "tier_multipliers",
    "long_context_threshold",
    "long_context_input",
    "long_context_cached_input",
    "long_context_cache_write",
    "long_context_cache_write_1h",
    "long_context_output",
    "long_context_reasoning",
)


@transaction.atomic
def model_price_save(*, price: ModelPrice, actor: Actor = Actor.system()) -> ModelPrice:
    """Add or correct a price; records it affects are re-priced in the background after commit."""
    before = None
    if price.pk:
        old = ModelPrice.objects.filter(pk=price.pk).values(*_AUDITED_PRICE_FIELDS).first()
        before = {k: str(v) for k, v in (old or {}).items()}
    price.full_clean()
    price.save()
    since = price.effective_from
    if before and before.get("effective_from"):
        since = min(since, datetime.fromisoformat(before["effective_from"]))
    audit_record(
        action="model_price.save",
        actor=actor,
        target=price,
        before=before,
        after={k: str(getattr(price, k)) for k in _AUDITED_PRICE_FIELDS},
    )
    _queue_reprice(price.model_id, since)
    return price


@transaction.atomic
def llm_model_save(*, model: LlmModel, actor: Actor = Actor.system()) -> LlmModel:
    """Save a catalog model; names or patterns it now matches pick up unpriced records."""
    is_new = model.pk is None
    model.full_clean()
    model.save()
    audit_record(
        action="llm_model.create" if is_new else "llm_model.update",
        actor=actor,
        target=model,
        after={"name": model.name, "aliases": model.aliases, "match_pattern": model.match_pattern},
    )
    _queue_reprice(model.pk, None)
    return model
