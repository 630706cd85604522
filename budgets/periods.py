"""Calendar periods in a time zone: where a budget's day, week (Monday) or month starts and ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"Unknown time zone {name!r}; use an IANA name such as Europe/Berlin.") from None


def period_bounds(period: str, tz_name: str, at: datetime) -> tuple[datetime, datetime]:
    """The [start, end) of the period holding `at`, as UTC datetimes.

    Boundaries are local midnights, so a day across a daylight-saving change lasts 23 or 25 hours
    and consecutive periods never leave a gap or overlap.
    """
    tz = zone(tz_name)
    local = at.astimezone(tz)
    day = local.date()
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"Unknown period {period!r}.")

    def midnight(d):
        return datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC)

    return midnight(start), midnight(end)
