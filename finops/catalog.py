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
from .pricing import PriceRow
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
    prices: dict[int, list[PriceRow]] = field(default_factory=dict)
    _starts: dict[int, list[datetime]] = field(default_factory=dict)
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
        if len(self._resolved) < 10_000:
            self._resolved[key] = entry
        return entry

    def price_at(self, model_id: int, when: datetime) -> PriceRow | None:
        starts = self._starts.get(model_id)
        if not starts:
            return None
        i = bisect.bisect_right(starts, when) - 1
        return self.prices[model_id][i] if i >= 0 else None

    def current_price(self, model_id: int) -> PriceRow | None:
        from django.utils import timezone

        return self.price_at(model_id, timezone.now())


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
        snap.prices.setdefault(p.model_id, []).append(PriceRow.from_model_price(p))
    snap._starts = {mid: [p.effective_from for p in rows] for mid, rows in snap.prices.items()}
    return snap


_snapshot = FingerprintSnapshot(_FINGERPRINT_SQL, _build)


def get_catalog(*, fingerprint: tuple | None = None) -> CatalogSnapshot:
    """The current snapshot; costs one fingerprint query, rebuilds only when the catalog changed.

    A caller that read FINGERPRINT_SELECT as part of its own query passes the values instead.
    """
    return _snapshot.get(fingerprint)
