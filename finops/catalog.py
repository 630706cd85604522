"""An in-process snapshot of the model catalog and prices for the hot paths (ingest, counting).

The snapshot is rebuilt when a one-row fingerprint query (counts and last edit times of tiers,
models and prices) changes, so every process sees a price edit on its next batch while a batch
costs one small query instead of a lookup per record.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from datetime import datetime

from .models import LlmModel, ModelPrice
from .pricing import API, STANDARD, PriceRow
from .snapshots import FingerprintSnapshot


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: int
    name: str
    provider: str
    tier_id: int
    tier_slug: str
    tier_rank: int
    encoding: str
    context_window: int | None
    max_output_tokens: int | None
    downgrade_to_id: int | None = None


@dataclass
class CatalogSnapshot:
    fingerprint: tuple = ()
    by_name: dict[str, ModelEntry] = field(default_factory=dict)
    patterns: list[tuple[re.Pattern, ModelEntry]] = field(default_factory=list)
    # Keyed by (model id, channel, service tier), each list in effective order.
    prices: dict[tuple[int, str, str], list[PriceRow]] = field(default_factory=dict)
    _starts: dict[tuple[int, str, str], list[datetime]] = field(default_factory=dict)
    _channels: set[tuple[int, str]] = field(default_factory=set)
    _resolved: dict[str, ModelEntry | None] = field(default_factory=dict)
    by_id: dict[int, ModelEntry] = field(default_factory=dict)

    def resolve(self, name: str) -> ModelEntry | None:
        """Exact name or alias (case-insensitive), else the first full-match pattern; None if unknown."""
        key = name.strip().lower()
        try:
            return self._resolved[key]
        except KeyError:
            pass
        entry = self.by_name.get(key)
        if entry is None:
            entry = next((e for pattern, e in self.patterns if pattern.fullmatch(name.strip())), None)
        if entry is None and key.startswith(_STRIP_PREFIXES):
            # `vertex_ai/gemini-2.0-flash` is the catalog's gemini-2.0-flash called through Vertex.
            bare = name.strip().split("/", 1)[1]
            entry = self.by_name.get(bare.lower()) or next(
                (e for pattern, e in self.patterns if pattern.fullmatch(bare)), None
            )
        if len(self._resolved) < 10_000:
            self._resolved[key] = entry
        return entry

    def _row_at(self, key: tuple[int, str, str], when: datetime) -> PriceRow | None:
        starts = self._starts.get(key)
        if not starts:
            return None
        i = bisect.bisect_right(starts, when) - 1
        return self.prices[key][i] if i >= 0 else None

    def price_at(
        self, model_id: int, when: datetime, *, channel: str = API, service_tier: str = STANDARD
    ) -> PriceRow | None:
        """The price in force at `when` for a channel and service tier.

        Within a channel: its row for the tier; else its standard row, with the multiplier the standard
        row gives the tier, or as it is (the rule says `no <tier> price: standard`). A channel with no
        price in force falls back to the provider API's (the rule says `no <channel> price: api`).
        """
        row = self._in_channel(model_id, when, channel, service_tier)
        if row is None and channel != API:
            row = self._in_channel(model_id, when, API, service_tier)
            if row is not None:
                row = row.derived(fallback="; ".join(f for f in (f"no {channel} price: api", row.fallback) if f))
        return row

    def _in_channel(self, model_id: int, when: datetime, channel: str, service_tier: str) -> PriceRow | None:
        if (model_id, channel) not in self._channels:
            return None
        row = self._row_at((model_id, channel, service_tier), when)
        if row is not None or service_tier == STANDARD:
            return row
        std = self._row_at((model_id, channel, STANDARD), when)
        if std is None:
            return None
        multiplier = std.multiplier_for(service_tier)
        if multiplier is not None:
            return std.derived(service_tier=service_tier, multiplier_permille=multiplier)
        # No price for the tier: standard applies, and the record's rule says so.
        return std.derived(fallback=f"no {service_tier} price: standard")

    def current_price(self, model_id: int, *, channel: str = API, service_tier: str = STANDARD) -> PriceRow | None:
        from django.utils import timezone

        return self.price_at(model_id, timezone.now(), channel=channel, service_tier=service_tier)


def channel_from_model_name(name: str) -> str:
    """The channel a model name implies: `vertex_ai/…`, `bedrock/…` or Bedrock ids, `azure/…`."""
    lowered = name.strip().lower()
    prefix = lowered.split("/", 1)[0] if "/" in lowered else ""
    if prefix in _CHANNEL_PREFIXES:
        return _CHANNEL_PREFIXES[prefix]
    if _BEDROCK_ID.match(lowered):
        return "bedrock"
    if "@" in lowered and lowered.startswith("claude"):  # Vertex spells versions claude-3-5-haiku@20241022
        return "vertex"
    return API


_CHANNEL_PREFIXES = {"vertex_ai": "vertex", "vertex": "vertex", "bedrock": "bedrock", "azure": "azure"}
_STRIP_PREFIXES = ("vertex_ai/", "vertex/", "bedrock/", "azure/", "openai/", "anthropic/", "gemini/", "google/")
_BEDROCK_ID = re.compile(r"^(?:(?:us|eu|apac|global|jp|au)\.)?(?:anthropic|amazon|meta|mistral|cohere)\.")


FINGERPRINT_SELECT = (
    "(SELECT COUNT(*) FROM finops_modeltier), (SELECT MAX(rank) FROM finops_modeltier),"
    " (SELECT COUNT(*) FROM finops_llmmodel), (SELECT MAX(updated_at) FROM finops_llmmodel),"
    " (SELECT COUNT(*) FROM finops_modelprice), (SELECT MAX(updated_at) FROM finops_modelprice)"
)
FINGERPRINT_COLUMNS = 6
_FINGERPRINT_SQL = "SELECT " + FINGERPRINT_SELECT


def _build(fingerprint: tuple) -> CatalogSnapshot:
    snap = CatalogSnapshot(fingerprint=fingerprint)
    for m in LlmModel.objects.select_related("tier").filter(is_active=True):
        entry = ModelEntry(
            id=m.pk,
            name=m.name,
            provider=m.provider,
            tier_id=m.tier_id,
            tier_slug=m.tier.slug,
            tier_rank=m.tier.rank,
            encoding=m.encoding,
            context_window=m.context_window,
            max_output_tokens=m.max_output_tokens,
            downgrade_to_id=m.downgrade_to_id,
        )
        snap.by_id[m.pk] = entry
        for alias in [m.name, *(m.aliases or [])]:
            snap.by_name.setdefault(str(alias).strip().lower(), entry)
        if m.match_pattern:
            try:
                snap.patterns.append((re.compile(m.match_pattern), entry))
            except re.error:
                pass  # rejected by the catalog's validation; an old bad row must not break ingest
    for p in ModelPrice.objects.filter(model__is_active=True).order_by("model_id", "effective_from"):
        snap.prices.setdefault((p.model_id, p.channel, p.service_tier), []).append(PriceRow.from_model_price(p))
    snap._starts = {key: [p.effective_from for p in rows] for key, rows in snap.prices.items()}
    snap._channels = {(model_id, channel) for model_id, channel, _tier in snap.prices}
    return snap


_snapshot = FingerprintSnapshot(_FINGERPRINT_SQL, _build)


def get_catalog(*, fingerprint: tuple | None = None) -> CatalogSnapshot:
    """The current snapshot; costs one fingerprint query, rebuilds only when the catalog changed.

    A caller that read FINGERPRINT_SELECT as part of its own query passes the values instead.
    """
    return _snapshot.get(fingerprint)
