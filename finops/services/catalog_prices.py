"""One price as the project's catalog JSON writes it (the shipped seed file and `catalog_import`),
turned into `ModelPrice` field values, validated.

A price spec holds USD per 1M tokens as decimal strings with at most 6 places:

    {"effective_from": "2025-09-29T00:00:00Z", "channel": "api", "service_tier": "standard",
     "input": "3", "cached_input": "0.30", "cache_write": "3.75", "cache_write_1h": "6", "output": "15",
     "reasoning": null, "tier_multipliers": {"batch": "0.5"},
     "long_context": {"threshold": 200000, "input": "6", "cached_input": "0.60", "cache_write": "7.50",
                      "cache_write_1h": "12", "output": "22.50"},
     "price_taken_on": "2026-12-06", "source": "https://…"}

`channel` (api, vertex, bedrock, azure) and `service_tier` (standard, batch, flex, priority) default to
api and standard; everything after `output` is optional.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from finops.pricing import CHANNELS, SERVICE_TIERS, multiplier_to_permille, usd_per_mtok_to_pico
from tenants.errors import ApplicationError

BUCKETS = ("input", "cached_input", "cache_write", "output", "reasoning")
OPTIONAL_BUCKETS = ("reasoning", "cache_write_1h")
LONG_CONTEXT_BUCKETS = ("input", "cached_input", "cache_write", "cache_write_1h", "output", "reasoning")
# Every ModelPrice field a spec sets: what "the same price" compares.
VALUE_FIELDS = (
    *BUCKETS,
    "cache_write_1h",
    "tier_multipliers",
    "long_context_threshold",
    *(f"long_context_{b}" for b in LONG_CONTEXT_BUCKETS),
)


def _invalid(code: str, message: str) -> ApplicationError:
    return ApplicationError(code, message)


def _usd(name: str, key: str, raw: Any, code: str) -> Decimal:
    if not isinstance(raw, str):
        raise _invalid(code, f"Model {name}: {key} must be a decimal string, not {raw!r}.")
    try:
        value = Decimal(raw)
        usd_per_mtok_to_pico(value)  # rejects more than 6 decimal places
    except (InvalidOperation, ValueError) as exc:
        raise _invalid(code, f"Model {name}: {key}={raw!r} is not a price with at most 6 decimals.") from exc
    if value < 0:
        raise _invalid(code, f"Model {name}: {key} is negative.")
    return value


def price_spec_values(name: str, spec: dict[str, Any], *, code: str = "invalid_catalog_file") -> dict[str, Any]:
    """ModelPrice field values of one price spec (key fields `channel` and `service_tier` included)."""
    values: dict[str, Any] = {}
    for key in (*BUCKETS, "cache_write_1h"):
        raw = spec.get(key)
        if raw is None and key in OPTIONAL_BUCKETS:
            values[key] = None
            continue
        values[key] = _usd(name, key, raw, code)
    channel = spec.get("channel") or "api"
    tier = spec.get("service_tier") or "standard"
    if channel not in CHANNELS:
        raise _invalid(code, f"Model {name}: channel {channel!r} is not one of {', '.join(CHANNELS)}.")
    if tier not in SERVICE_TIERS:
        raise _invalid(code, f"Model {name}: service_tier {tier!r} is not one of {', '.join(SERVICE_TIERS)}.")
    values["channel"], values["service_tier"] = channel, tier
    multipliers = spec.get("tier_multipliers") or {}
    if not isinstance(multipliers, dict) or any(t not in SERVICE_TIERS[1:] for t in multipliers):
        raise _invalid(code, f"Model {name}: tier_multipliers maps batch, flex or priority to a multiplier.")
    if multipliers and tier != "standard":
        raise _invalid(code, f"Model {name}: only a standard price gives multipliers for other tiers.")
    for t, m in multipliers.items():
        try:
            multiplier_to_permille(m)
        except (ValueError, InvalidOperation) as exc:
            raise _invalid(code, f"Model {name}: tier multiplier {t}={m!r} has more than 3 decimals.") from exc
    values["tier_multipliers"] = {t: str(m) for t, m in sorted(multipliers.items())}
    long_context = spec.get("long_context")
    values["long_context_threshold"] = None
    for b in LONG_CONTEXT_BUCKETS:
        values[f"long_context_{b}"] = None
    if long_context:
        threshold = long_context.get("threshold")
        if type(threshold) is not int or threshold <= 0:
            raise _invalid(code, f"Model {name}: long_context.threshold must be a positive number of tokens.")
        values["long_context_threshold"] = threshold
        for b in LONG_CONTEXT_BUCKETS:
            raw = long_context.get(b)
            if raw is None and b not in ("input", "output"):
                continue
            values[f"long_context_{b}"] = _usd(name, f"long_context.{b}", raw, code)
    return values


def price_key(values: dict[str, Any]) -> tuple[str, str]:
    return values.get("channel") or "api", values.get("service_tier") or "standard"


def same_price(price, values: dict[str, Any]) -> bool:
    """True when a stored ModelPrice already holds these values (Decimal compares 2.50 == 2.5)."""
    return all(getattr(price, k) == values[k] for k in VALUE_FIELDS if k in values)


def price_spec_from_row(price) -> dict[str, Any]:
    """The project format of a stored price (what `catalog_import` reads back)."""
    spec: dict[str, Any] = {
        "effective_from": price.effective_from.isoformat().replace("+00:00", "Z"),
        "channel": price.channel,
        "service_tier": price.service_tier,
    }
    for key in (*BUCKETS, "cache_write_1h"):
        value = getattr(price, key)
        spec[key] = None if value is None else f"{value.normalize():f}"
    if price.tier_multipliers:
        spec["tier_multipliers"] = dict(price.tier_multipliers)
    if price.long_context_threshold:
        spec["long_context"] = {"threshold": price.long_context_threshold} | {
            b: f"{getattr(price, f'long_context_{b}').normalize():f}"
            for b in LONG_CONTEXT_BUCKETS
            if getattr(price, f"long_context_{b}") is not None
        }
    return spec
