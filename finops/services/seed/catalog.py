"""The shipped model catalog with public list prices (finops/data/seed_catalog.json).

The catalog seed only creates what is missing and never changes a row that exists. Once seeded the
catalog belongs to the operators: they correct prices, add deployment aliases and retire patterns,
and a later seed run (which `seed_demo` does on every call) must not undo that. Rows that differ
from the file are counted and listed instead, so a newer file's corrections are visible for review.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils.dateparse import parse_date, parse_datetime

from finops.models import LlmModel, ModelPrice, ModelTier
from finops.services.catalog_prices import price_key, price_spec_values, same_price
from tenants.errors import ApplicationError
from tenants.services import audit_record

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

SEED_CATALOG_PATH = Path(__file__).resolve().parents[2] / "data" / "seed_catalog.json"

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
            # Billing rules (1-hour writes, long context, tiers, channel): finops/services/catalog_prices.py.
            price["values"] = price_spec_values(name, price, code="invalid_seed_catalog")
            price.update({k: price["values"][k] for k in PRICE_FIELDS})
    return data


def _counter() -> dict[str, int]:
    return {"created": 0, "unchanged": 0, "differs": 0}


@transaction.atomic
def catalog_seed(*, path: Path | None = None, stdout: SupportsWrite[str] | None = None) -> dict[str, dict[str, int]]:
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
    prices = {(p.model_id, p.channel, p.service_tier, p.effective_from): p for p in ModelPrice.objects.all()}
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
            values = price_spec["values"]
            existing = prices.get((model.pk, *price_key(values), price_spec["effective_from"]))
            if existing is None:
                ModelPrice.objects.create(
                    model=model,
                    effective_from=price_spec["effective_from"],
                    source=price_spec.get("source", ""),
                    price_taken_on=price_spec.get("price_taken_on"),
                    **values,
                )
                counts["prices"]["created"] += 1
            elif same_price(existing, values):
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
