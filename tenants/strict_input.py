"""Strict API input: what the schema says is invalid answers 400 in the JSON error shape.

DRF and Django are lenient by default: a query parameter given twice takes its last value, an empty
one reads as missing, `page_size=abc` falls back to the default, and a BooleanField takes 0, 1, "yes"
or "on". A client that sends one of those has a bug it should hear about instead of a silently
different answer. `query_check` is applied to every API view by `TenantScopedAPIView`; the fields and
the serializer base, fields and paginator here replace DRF's lenient ones where a view declares them.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.http import QueryDict
from rest_framework import serializers
from rest_framework.pagination import CursorPagination

from tenants.errors import ApplicationError


def _invalid(name: str, problem: str, message: str) -> ApplicationError:
    return ApplicationError("invalid", message, details={name: [problem]})


def query_check(params: QueryDict, *, repeatable: Iterable[str] = ()) -> None:
    """400 for a query parameter given more than once (unless `repeatable`) or given empty."""
    allowed = set(repeatable)
    for name, values in params.lists():
        if len(values) > 1 and name not in allowed:
            raise _invalid(name, "Given more than once.", f"Give ?{name}= once.")
        if any(value == "" for value in values):
            raise _invalid(name, "Empty.", f"?{name}= is empty: leave it out for the default.")


def query_bool(params: QueryDict, name: str) -> bool | None:
    """`true` or `false` (None when absent); anything else is a 400."""
    value = params.get(name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise _invalid(name, "true or false.", f"{name} must be true or false.")
    return value == "true"


def _whole_number(raw: str, low: int, high: int) -> int | None:
    """`raw` as an int when it is ASCII digits from `low` to `high`, else None. ASCII only: "²".isdigit()
    is true and int("²") raises; int("١٠") is 10. The length first: int() refuses 4,301 digits or more
    (leading zeros count)."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(high)):
        return None
    value = int(raw)
    return value if low <= value <= high else None


def query_int(params: QueryDict, name: str, *, low: int, high: int) -> int | None:
    """A whole number from `low` to `high` (None when absent); anything else is a 400: a sign, a
    decimal point, an exponent, spaces, non-ASCII digits, a number out of range."""
    raw = params.get(name)
    if raw is None:
        return None
    value = _whole_number(raw, low, high)
    if value is None:
        raise _invalid(
            name, f"A whole number from {low} to {high}.", f"{name} must be a whole number from {low} to {high}."
        )
    return value


class StrictCursorPagination(CursorPagination):
    """A page size that is not a whole number from 1 to `max_page_size` is a 400, not the default."""

    page_size_query_param = "page_size"

    def get_page_size(self, request) -> int | None:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        limit = self.max_page_size or self.page_size or 1
        value = _whole_number(raw, 1, limit)
        if value is None:
            raise _invalid("page_size", f"A whole number from 1 to {limit}.", f"page_size must be 1 to {limit}.")
        return value


class StrictUUIDField(serializers.UUIDField):
    """A UUID string only (DRF also reads an integer as a UUID: 0 becomes 00000000-...)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class StrictDecimalField(serializers.DecimalField):
    """A decimal string such as "5.00", as the schema and the answers spell it (no JSON number, which
    a client's JSON library may already have rounded)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictInputSerializer(serializers.Serializer):
    """An input serializer whose text fields take JSON strings only and whose boolean fields take JSON
    true or false only: DRF would turn `0` into "0" for a slug or a tenant and into False for a flag."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            errors = {}
            for name, field in self.fields.items():
                value = data.get(field.field_name)
                if value is None or field.read_only:
                    continue
                if isinstance(field, serializers.CharField) and not isinstance(value, str):
                    errors[name] = ["Not a string."]
                elif isinstance(field, serializers.BooleanField) and not isinstance(value, bool):
                    errors[name] = ["Must be true or false."]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)
