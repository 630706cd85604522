"""`catalog_import`: load prices from a file as new effective-dated prices, never rewriting history.

Two formats:
- the project's own catalog JSON (the shipped seed file's shape, `finops/data/seed_catalog.json`):
  models with their tier and prices, each price with its own `effective_from` and billing rules
  (finops/services/catalog_prices.py). Models the catalog lacks are created.
- LiteLLM's `model_prices_and_context_window.json` (USD per token, one key per model and channel).
  Only models the catalog already knows (by name, alias or pattern) are priced: the file has no tier
  or substitute to create a model from. Channel comes from `litellm_provider`; `*_batches`, `*_flex`
  and `*_priority` keys become their tier's own rows, `*_above_<N>k_tokens` a long-context rule,
  `cache_creation_input_token_cost_above_1hr` the 1-hour write price. All prices start at
  `effective_from` (default: now).

For every (model, channel, tier) a price differing from the one in force at its start becomes a new
row, saved through `model_price_save` (audited, re-prices what it covers). A price identical to the
one in force is `unchanged`; one that would start at or before the latest start of its key is
`skipped` (that would rewrite history: correct a price on the model page instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from finops.catalog import get_catalog
from finops.models import LlmModel, ModelPrice, ModelTier
from finops.services.catalog_prices import LONG_CONTEXT_BUCKETS, price_key, price_spec_values, same_price
from finops.services.repricing import model_price_save
from tenants.errors import ApplicationError
from tenants.scope import Actor

PROJECT, LITELLM = "project", "litellm"
_CODE = "invalid_catalog_file"


@dataclass
class PriceChange:
    model: str
    channel: str
    service_tier: str
    effective_from: datetime
    values: dict[str, Any]
    status: str  # "new", "unchanged", "skipped"
    before: ModelPrice | None = None
    note: str = ""
    source: str = ""
    price_taken_on: date | None = None
    new_model: dict[str, Any] | None = None  # project format: a model the catalog lacks

    def describe(self) -> str:
        where = (
            "" if (self.channel, self.service_tier) == ("api", "standard") else f" [{self.channel} {self.service_tier}]"
        )
        head = f"{self.status:9} {self.model}{where} from {self.effective_from:%Y-%m-%d}"
        if self.status == "new":
            diffs = [
                f"{k} {_fmt(getattr(self.before, k, None)) if self.before else '-'} -> {_fmt(v)}"
                for k, v in self.values.items()
                if k not in ("channel", "service_tier")
                and (self.before is None or getattr(self.before, k) != v)
                and not (self.before is None and v in (None, {}))
            ]
            return f"{head}: " + ", ".join(diffs) if diffs else head
        return f"{head}: {self.note}" if self.note else head


def _fmt(value: Any) -> str:
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    return "-" if value is None else str(value)


@dataclass
class ImportPlan:
    format: str
    changes: list[PriceChange] = field(default_factory=list)
    unknown_models: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for c in self.changes if c.status == status)

    def summary(self) -> str:
        return (
            f"{self.format} file: {self.count('new')} new prices, {self.count('unchanged')} unchanged, "
            f"{self.count('skipped')} skipped, {len(self.unknown_models)} names not in the catalog"
        )


def detect_format(data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("models"), list):
        return PROJECT
    if isinstance(data, dict) and any(isinstance(v, dict) and "litellm_provider" in v for v in data.values()):
        return LITELLM
    raise ApplicationError(_CODE, "Neither the project's catalog JSON nor LiteLLM's model price table.")


def catalog_import_plan(
    *,
    data: Any,
    fmt: str | None = None,
    effective_from: datetime | None = None,
    price_taken_on: date | None = None,
    source: str = "",
) -> ImportPlan:
    """What importing `data` would change; changes nothing."""
    fmt = fmt or detect_format(data)
    if fmt == PROJECT:
        plan = ImportPlan(format=PROJECT)
        specs = _project_specs(data, plan, effective_from)
    else:
        plan = ImportPlan(format=LITELLM)
        when = effective_from or timezone.now().replace(microsecond=0)
        specs = _litellm_specs(data, plan, when, price_taken_on or timezone.localdate(), source)
    _classify(plan, specs)
    return plan


def _project_specs(data: dict, plan: ImportPlan, override: datetime | None = None) -> list[PriceChange]:
    """The file's prices; with `override`, every price starts then instead (to take a newer file's
    prices or rules on a catalog seeded from an older one, from now on)."""
    if data.get("format") != 1:
        raise ApplicationError(_CODE, 'The project format needs "format": 1.')
    known = {m.name.lower(): m for m in LlmModel.objects.all()}
    tiers = set(ModelTier.objects.values_list("slug", flat=True))
    out: list[PriceChange] = []
    starts: list[datetime] = []  # each change's own effective_from in the file
    for spec in data["models"]:
        name = spec.get("name")
        if not isinstance(name, str) or not spec.get("prices"):
            raise ApplicationError(_CODE, f"Every model needs a name and prices ({name!r}).")
        new_model = None
        if name.lower() not in known:
            if spec.get("tier") not in tiers or not spec.get("provider"):
                plan.unknown_models.append(name)
                continue
            new_model = spec
        for price in spec["prices"]:
            own = parse_datetime(str(price.get("effective_from")))
            if override is None and (own is None or own.tzinfo is None):
                raise ApplicationError(_CODE, f"Model {name}: effective_from must be an ISO datetime with a zone.")
            when = override or own
            assert when is not None
            starts.append(own if own is not None and own.tzinfo is not None else when)
            values = price_spec_values(name, price)
            taken = price.get("price_taken_on")
            out.append(
                PriceChange(
                    model=known[name.lower()].name if new_model is None else name,
                    channel=values["channel"],
                    service_tier=values["service_tier"],
                    effective_from=when,
                    values=values,
                    status="new",
                    source=price.get("source", ""),
                    price_taken_on=date.fromisoformat(taken) if taken else None,
                    new_model=new_model,
                )
            )
    if override is not None:
        # Every price now starts at the same moment: only each key's latest price in the file may.
        latest: dict[tuple[str, str, str], tuple[datetime, PriceChange]] = {}
        for own, change in zip(starts, out, strict=True):
            key = (change.model, change.channel, change.service_tier)
            if key not in latest or own >= latest[key][0]:
                latest[key] = (own, change)
        out = [change for _own, change in latest.values()]
    return out


# --- LiteLLM ---------------------------------------------------------------------------------------------

_TIER_SUFFIX = {"standard": "", "batch": "_batches", "flex": "_flex", "priority": "_priority"}
_ABOVE = re.compile(r"^input_cost_per_token_above_(\d+)k_tokens$")


def litellm_channel(key: str, provider: str) -> str | None:
    """The channel of a LiteLLM entry, or None for resellers the catalog does not model."""
    provider = provider.lower()
    if provider.startswith("vertex_ai"):
        return "vertex"
    if provider.startswith("bedrock"):
        return "bedrock"
    if provider.startswith("azure"):
        return "azure"
    if provider in ("openai", "anthropic", "gemini", "text-completion-openai"):
        return "api"
    return None


def _usd_per_mtok(per_token: Any) -> str | None:
    """LiteLLM's USD per token (a float such as 3.75e-06) as USD per 1M tokens, '3.75'."""
    if per_token is None or isinstance(per_token, bool) or not isinstance(per_token, int | float):
        return None
    value = (Decimal(repr(float(per_token))) * 1_000_000).quantize(Decimal("0.000001"))
    return f"{value.normalize():f}"


def litellm_price_specs(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The project-format price specs (no effective_from) of one LiteLLM entry: one per service tier.

    Where the entry leaves a bucket out, the provider's billing fills it: cache reads and writes
    without a price cost input (OpenAI and Google bill writes as input; a model without caching never
    reports cached tokens); a tier's missing bucket costs what standard charges, never more than the
    tier's input for cache reads; a tier without its own long-context prices gets the standard ones
    scaled by the tier's input ratio when that stays exact, else the standard ones (an upper bound).
    """
    if _usd_per_mtok(entry.get("input_cost_per_token")) is None:
        return []
    thresholds = sorted(int(m.group(1)) for k in entry if (m := _ABOVE.match(k)))
    threshold = thresholds[0] if thresholds else None
    writes_priced = entry.get("cache_creation_input_token_cost") is not None
    specs: list[dict[str, Any]] = []
    for tier, suffix in _TIER_SUFFIX.items():

        def get(base: str, suffix: str = suffix) -> str | None:
            return _usd_per_mtok(entry.get(f"{base}{suffix}"))

        inp = get("input_cost_per_token")
        if inp is None:
            continue
        std = specs[0] if specs else None
        if std is None:
            cached = get("cache_read_input_token_cost") or inp
            write = get("cache_creation_input_token_cost") or inp
            out = get("output_cost_per_token") or "0"
        else:
            cached = get("cache_read_input_token_cost") or min(std["cached_input"], inp, key=Decimal)
            write = get("cache_creation_input_token_cost") or (
                inp if std["cache_write"] == std["input"] else std["cache_write"]
            )
            out = get("output_cost_per_token") or std["output"]
        spec: dict[str, Any] = {
            "service_tier": tier,
            "input": inp,
            "cached_input": cached,
            "cache_write": write,
            "output": out,
            "reasoning": get("output_cost_per_reasoning_token"),
            "cache_write_1h": get("cache_creation_input_token_cost_above_1hr")
            or (std["cache_write_1h"] if std else None),
        }
        if threshold is not None:
            above = f"_above_{threshold}k_tokens"
            lc_input = get(f"input_cost_per_token{above}")
            lc_output = get(f"output_cost_per_token{above}")
            if lc_input is not None and lc_output is not None:
                spec["long_context"] = {
                    "threshold": threshold * 1000,
                    "input": lc_input,
                    "output": lc_output,
                    "cached_input": get(f"cache_read_input_token_cost{above}"),
                    # Google's table lists a storage-like rate here; writes it does not bill apart cost input.
                    "cache_write": get(f"cache_creation_input_token_cost{above}") if writes_priced else lc_input,
                    "cache_write_1h": get(f"cache_creation_input_token_cost_above_1hr{above}"),
                }
            elif std is not None and std.get("long_context"):
                spec["long_context"] = _scaled(std["long_context"], Decimal(inp) / Decimal(std["input"]))
        specs.append(spec)
    return specs


def _scaled(long_context: dict[str, Any], ratio: Decimal) -> dict[str, Any]:
    scaled: dict[str, Any] = {"threshold": long_context["threshold"]}
    for key, value in long_context.items():
        if key == "threshold" or value is None:
            continue
        exact = Decimal(value) * ratio
        if exact != exact.quantize(Decimal("0.000001")):
            return long_context  # not exact in 6 places: keep the standard (higher) prices
        scaled[key] = f"{exact.normalize():f}"
    return scaled


def _litellm_specs(data: dict, plan: ImportPlan, when: datetime, taken: date, source: str) -> list[PriceChange]:
    catalog = get_catalog()
    names = {m.pk: m.name for m in LlmModel.objects.all()}
    out: list[PriceChange] = []
    seen: dict[tuple[int, str], str] = {}
    # Shorter keys first: `anthropic.claude-…` before its regional `eu.anthropic.claude-…` variants.
    for key in sorted((k for k, v in data.items() if isinstance(v, dict)), key=lambda k: (len(k), k)):
        if key == "sample_spec":  # LiteLLM's documentation entry
            continue
        entry = data[key]
        channel = litellm_channel(key, str(entry.get("litellm_provider", "")))
        if channel is None:
            continue
        model = catalog.resolve(key)
        if model is None:
            if entry.get("mode") in ("chat", "responses", "embedding", "completion") and channel == "api":
                plan.unknown_models.append(key)
            continue
        first = seen.get((model.id, channel))
        if first is not None:
            continue  # the first (shortest) key of a model and channel wins
        seen[(model.id, channel)] = key
        for spec in litellm_price_specs(entry):
            spec["channel"] = channel
            values = price_spec_values(key, spec)
            out.append(
                PriceChange(
                    model=names[model.id],
                    channel=channel,
                    service_tier=values["service_tier"],
                    effective_from=when,
                    values=values,
                    status="new",
                    source=source or f"LiteLLM model_prices_and_context_window.json: {key}",
                    price_taken_on=taken,
                    note=key,
                )
            )
    return out


# --- classify and apply ------------------------------------------------------------------------------------


def _carry_forward(change: PriceChange, current: ModelPrice) -> None:
    """LiteLLM's table leaves out what its contributors have not entered yet; that silence is not the
    provider dropping a long-context premium or a 1-hour write price, and taking it as one would
    under-price those calls. So a rule the file does not state is kept from the price in force."""
    values = change.values
    if values.get("long_context_threshold") is None and current.long_context_threshold is not None:
        values["long_context_threshold"] = current.long_context_threshold
        for b in LONG_CONTEXT_BUCKETS:
            values[f"long_context_{b}"] = getattr(current, f"long_context_{b}")
    if values.get("cache_write_1h") is None and current.cache_write_1h is not None:
        values["cache_write_1h"] = current.cache_write_1h


def _classify(plan: ImportPlan, specs: list[PriceChange]) -> None:
    prices: dict[tuple[str, str, str], list[ModelPrice]] = {}
    for p in ModelPrice.objects.select_related("model").order_by("effective_from"):
        prices.setdefault((p.model.name, p.channel, p.service_tier), []).append(p)
    for change in specs:
        rows = prices.get((change.model, change.channel, change.service_tier), [])
        in_force = [p for p in rows if p.effective_from <= change.effective_from]
        current = in_force[-1] if in_force else None
        change.before = current
        if current is not None and plan.format == LITELLM:
            _carry_forward(change, current)
        if current is not None and same_price(current, change.values):
            change.status, change.note = "unchanged", f"same as the price from {current.effective_from:%Y-%m-%d}"
        elif rows and change.effective_from <= rows[-1].effective_from:
            change.status = "skipped"
            change.note = (
                f"differs, but starts on or before the latest price ({rows[-1].effective_from:%Y-%m-%d}): "
                "importing would rewrite history; correct the price on the model page instead"
            )
        plan.changes.append(change)


@transaction.atomic
def catalog_import_apply(*, plan: ImportPlan, actor: Actor = Actor.system()) -> int:
    """Create the plan's new prices (and, project format, its new models); returns prices created."""
    tiers = {t.slug: t for t in ModelTier.objects.all()}
    created = 0
    for change in plan.changes:
        if change.status != "new":
            continue
        model = LlmModel.objects.filter(name__iexact=change.model).first()
        if model is None and change.new_model is not None:
            spec = change.new_model
            model = LlmModel.objects.create(
                name=spec["name"],
                display_name=spec.get("display_name") or "",
                provider=spec["provider"],
                tier=tiers[spec["tier"]],
                aliases=list(spec.get("aliases", [])),
                match_pattern=spec.get("match_pattern") or "",
                encoding=spec.get("encoding") or "",
                context_window=spec.get("context_window"),
                max_output_tokens=spec.get("max_output_tokens"),
            )
        if model is None:
            continue
        key = price_key(change.values)
        if ModelPrice.objects.filter(
            model=model, channel=key[0], service_tier=key[1], effective_from=change.effective_from
        ).exists():
            continue  # a second row of the file for the same start: the first one is kept
        model_price_save(
            price=ModelPrice(
                model=model,
                effective_from=change.effective_from,
                source=change.source[:300],
                price_taken_on=change.price_taken_on,
                **change.values,
            ),
            actor=actor,
        )
        created += 1
    return created
