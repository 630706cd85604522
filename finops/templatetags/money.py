"""Display filters for money (integer nano-USD) and token counts. Formatting only: no arithmetic
on floats, amounts stay Decimal from the stored integer to the string."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django import template

from finops.pricing import nanos_to_decimal

register = template.Library()

EMPTY = "—"
_CENT = Decimal("0.01")
_SMALL = Decimal("0.0001")
_TOKEN_UNITS = ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K"))


def _as_int(value) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@register.filter
def usd(nanos) -> str:
    """Nano-USD -> "$1,234.56"; below one dollar four decimals ("$0.0042"), and below a hundredth of
    a cent two significant digits ("$0.000012") so a cheap call never reads as free. None -> "—"."""
    value = _as_int(nanos)
    if value is None:
        return EMPTY
    amount = nanos_to_decimal(value)
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount == 0:
        return "$0.00"
    if amount >= _SMALL:
        four_places = amount.quantize(_SMALL, rounding=ROUND_HALF_UP)
        if four_places < 1:
            return f"{sign}${four_places}"
        return f"{sign}${amount.quantize(_CENT, rounding=ROUND_HALF_UP):,}"
    # Two significant digits: the exponent of the leading digit decides the number of places.
    places = -amount.adjusted() + 1
    return f"{sign}${amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):f}"


@register.filter
def usd_sentence(nanos) -> str:
    """Nano-USD for a sentence: whole cents as "$0.10" or "$1,234.56", but an amount with sub-cent
    digits below a dollar keeps them ("$0.0008", "$0.000012"), so a tiny limit never reads "$0.00"."""
    value = _as_int(nanos)
    if value is None:
        return EMPTY
    amount = nanos_to_decimal(value)
    if abs(amount) >= 1 or amount == amount.quantize(_CENT):
        sign = "-" if amount < 0 else ""
        return f"{sign}${abs(amount).quantize(_CENT, rounding=ROUND_HALF_UP):,}"
    return usd(value)


@register.filter
def usd_exact(nanos) -> str:
    """Nano-USD -> the exact stored amount, "$0.000001234" (nine places), for detail views."""
    value = _as_int(nanos)
    if value is None:
        return EMPTY
    sign = "-" if value < 0 else ""
    return f"{sign}${nanos_to_decimal(abs(value)):,.9f}"


@register.filter
def tokens(count) -> str:
    """Humanized count: 999 -> "999", 1234 -> "1.2K", 1234567 -> "1.2M". None -> "—"."""
    value = _as_int(count)
    if value is None:
        return EMPTY
    sign = "-" if value < 0 else ""
    value = abs(value)
    for i, (size, suffix) in enumerate(_TOKEN_UNITS):
        if value >= size:
            try:
                scaled = (Decimal(value) / size).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
            except InvalidOperation:  # pragma: no cover - only for absurd magnitudes
                return f"{sign}{value:,}"
            # 999,960 rounds to 1000.0K: say 1M instead.
            if scaled >= 1000 and i > 0:
                size, suffix = _TOKEN_UNITS[i - 1]
                scaled = (Decimal(value) / size).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
            text = f"{scaled:,}".removesuffix(".0")
            return f"{sign}{text}{suffix}"
    return f"{sign}{value}"


@register.filter
def usd_rate(price) -> str:
    """A Decimal list price ("USD per 1M tokens") -> "$2.50", "$0.01875": at least cents, no trailing zeros."""
    if price is None or price == "":
        return EMPTY
    try:
        value = Decimal(str(price))
    except InvalidOperation:
        return EMPTY
    if value == value.quantize(_CENT):
        return f"${value.quantize(_CENT):,}"
    return f"${value.normalize():,f}"


def _fraction(value) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


@register.filter
def percent(fraction) -> str:
    """A share as a fraction -> "12.3%"; a share too small to show a digit -> "<0.1%". None -> "—"."""
    value = _fraction(fraction)
    if value is None:
        return EMPTY
    pct = (value * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    if pct == 0 and value > 0:
        return "<0.1%"
    return f"{pct}%"


@register.filter
def signed_percent(fraction) -> str:
    """A change as a fraction -> "+12.3%" / "−4.0%" (a real minus sign), whole percent from 100% up."""
    value = _fraction(fraction)
    if value is None:
        return EMPTY
    pct = value * 100
    places = Decimal("1") if abs(pct) >= 100 else Decimal("0.1")
    pct = pct.quantize(places, rounding=ROUND_HALF_UP)
    if pct == 0:
        return "±0%"
    return f"{'+' if pct > 0 else '−'}{abs(pct):,}%"
