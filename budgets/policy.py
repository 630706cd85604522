"""Control policies: which rung of the ladder applies at which level of a budget (DESIGN.md section 8).

A policy is a list of rungs. Each rung names a level — a percentage of the soft limit, of the hard
limit, or of the hard limit by the period-end forecast — and what happens there: an alert only, or a
control of some kind, optionally for workflows of some priorities only, with parameters.

    {"at": "soft", "percent": 100, "kind": "cap_output_tokens",
     "priorities": ["low", "normal"], "params": {"max_output_tokens": 1024}}

`kind: "hard_action"` stands for the budget's own hard action (deny, require approval, downgrade).
"""

from __future__ import annotations

import logging
from copy import deepcopy
from decimal import Decimal, InvalidOperation

from budgets.models import ControlKind, HardAction

logger = logging.getLogger(__name__)

LEVEL_BASES = ("soft", "hard", "forecast")
RUNG_KINDS = ("alert", "hard_action", *ControlKind.values)
PRIORITIES = ("low", "normal", "high", "critical")

DEFAULT_POLICY: list[dict] = [
    {"at": "soft", "percent": 85, "kind": "alert"},
    {
        "at": "soft",
        "percent": 100,
        "kind": "cap_output_tokens",
        "priorities": ["low", "normal"],
        "params": {"max_output_tokens": 1024},
    },
    {"at": "forecast", "percent": 100, "kind": "downgrade_tier", "priorities": ["low"], "params": {"steps": 1}},
    {"at": "hard", "percent": 95, "kind": "compress_context", "params": {"ratio": "0.5"}},
    {"at": "hard", "percent": 95, "kind": "require_approval", "params": {}},
    {"at": "hard", "percent": 100, "kind": "hard_action"},
]

HARD_ACTION_CONTROL: dict[str, str] = {
    HardAction.DENY: ControlKind.DENY,
    HardAction.REQUIRE_APPROVAL: ControlKind.REQUIRE_APPROVAL,
    HardAction.DOWNGRADE: ControlKind.DOWNGRADE_TIER,
}


def policy_effective(policy: list[dict] | None) -> list[dict]:
    """The budget's own rungs, or the default policy when it has none."""
    return deepcopy(policy) if policy else deepcopy(DEFAULT_POLICY)


def rung_key(rung: dict) -> str:
    """A stable name for a rung, e.g. 'soft-100-cap_output_tokens' (stored on the controls it starts)."""
    return f"{rung['at']}-{rung['percent']}-{rung['kind']}"


# What preflight reads from a control's params (budgets.services.preflight._apply_controls). Other keys
# are kept and ignored, as before.
WHOLE_NUMBER_PARAMS = ("max_output_tokens", "target_input_tokens", "steps")


def _decimal(value) -> Decimal | None:
    """A JSON number or decimal string as a finite Decimal; None for anything else (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def control_params_validate(params, *, where: str = "params") -> dict:
    """Check a control's params as preflight will read them; returns them or raises ValueError saying what
    is wrong. `where` names the params in the message (e.g. "policy[2].params")."""
    if params in (None, ""):
        return {}
    if not isinstance(params, dict):
        raise ValueError(f"{where} must be an object.")
    for key in WHOLE_NUMBER_PARAMS:
        if key in params and (type(params[key]) is not int or params[key] < 1):
            raise ValueError(f"{where}.{key} must be a whole number of at least 1, not {params[key]!r}.")
    if "ratio" in params:
        ratio = _decimal(params["ratio"])
        if ratio is None or not 0 < ratio <= 1:
            raise ValueError(f"{where}.ratio must be a number greater than 0 and at most 1, not {params['ratio']!r}.")
    if "above_usd" in params and params["above_usd"] is not None:
        above = _decimal(params["above_usd"])
        if above is None or above < 0:
            raise ValueError(
                f'{where}.above_usd must be an amount in USD of at least 0, e.g. "5.00", not {params["above_usd"]!r}.'
            )
    return params


def control_params_usable(params, *, control_id: int | None = None) -> dict:
    """A stored control's params as preflight may read them: each parameter that would not pass
    `control_params_validate` is dropped (its default applies) and logged. Writes validate; this guards
    rows written before they did, or by hand, so that one bad row cannot make a tenant's preflight fail."""
    if not isinstance(params, dict):
        if params not in (None, ""):
            logger.warning("control %s: params %r are not an object; ignored", control_id, params)
        return {}
    usable = {}
    for key, value in params.items():
        try:
            control_params_validate({key: value})
        except ValueError as exc:
            logger.warning("control %s: parameter ignored: %s", control_id, exc)
            continue
        usable[key] = value
    return usable


def policy_validate(policy) -> list[dict]:
    """Check a policy's shape; returns it normalised or raises ValueError saying what is wrong."""
    if policy in (None, ""):
        return []
    if not isinstance(policy, list):
        raise ValueError("policy must be a list of rungs.")
    out = []
    for i, rung in enumerate(policy):
        where = f"policy[{i}]"
        if not isinstance(rung, dict):
            raise ValueError(f"{where} must be an object.")
        unknown = set(rung) - {"at", "percent", "kind", "priorities", "params"}
        if unknown:
            raise ValueError(f"{where} has unknown keys: {', '.join(sorted(unknown))}.")
        if rung.get("at") not in LEVEL_BASES:
            raise ValueError(f"{where}.at must be one of {', '.join(LEVEL_BASES)}.")
        percent = rung.get("percent")
        if type(percent) is not int or not 1 <= percent <= 1000:
            raise ValueError(f"{where}.percent must be a whole number from 1 to 1000.")
        if rung.get("kind") not in RUNG_KINDS:
            raise ValueError(f"{where}.kind must be one of {', '.join(RUNG_KINDS)}.")
        priorities = rung.get("priorities", [])
        if not isinstance(priorities, list) or any(p not in PRIORITIES for p in priorities):
            raise ValueError(f"{where}.priorities must be a list of {', '.join(PRIORITIES)}.")
        params = rung.get("params", {})
        if not isinstance(params, dict):
            raise ValueError(f"{where}.params must be an object.")
        control_params_validate(params, where=f"{where}.params")
        out.append(
            {"at": rung["at"], "percent": percent, "kind": rung["kind"], "priorities": priorities, "params": params}
        )
    return out
