"""What a spend query asks (`SpendQuery`, and which ones are accepted) and what it answers (`SpendResult`).

Imported through `finops.selectors.spend`, which runs the queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from finops.measures import Measures
from finops.services.rollups import hourly_retention_start
from tenants.errors import ApplicationError

GRANULARITIES = ("hour", "day", "month")
DIMENSIONS = ("tenant", "workflow", "model", "tier", "environment")
TAG_PREFIX = "tag:"
MAX_GROUP_BY = 2
UNKNOWN = "(none)"

# What tag spend is kept by, beside the tag (`UsageTagRollup`).
TAG_DIMENSIONS = frozenset({"tenant", "workflow", "environment"})


@dataclass(frozen=True)
class SpendQuery:
    start: datetime
    end: datetime
    granularity: str = "day"
    group_by: tuple[str, ...] = ()
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dimension -> values; "tag" -> key=value

    def tag_key(self) -> str | None:
        for dim in self.group_by:
            if dim.startswith(TAG_PREFIX):
                return dim[len(TAG_PREFIX) :]
        if self.filters.get("tag"):
            return self.filters["tag"][0].partition("=")[0]
        return None


@dataclass(kw_only=True)
class SpendGroup(Measures):
    """The measures of one group (`key`: its label per grouped dimension; () for the totals)."""

    key: tuple[str, ...]
    share: Decimal = Decimal(0)


class SpendPoint(NamedTuple):
    """One bucket of one group. A named tuple: a query returns up to ~20,000 of them, and a tuple is
    several times cheaper to build than a dataclass instance."""

    bucket: datetime
    key: tuple[str, ...]
    cost_nanos: int
    calls: int
    tokens: int


@dataclass
class SpendResult:
    query: SpendQuery
    totals: SpendGroup
    groups: list[SpendGroup]
    series: list[SpendPoint]
    source: str


def validate_query(query: SpendQuery) -> None:
    if query.granularity not in GRANULARITIES:
        raise ApplicationError("invalid_granularity", f"granularity must be one of {', '.join(GRANULARITIES)}.")
    if query.end <= query.start:
        raise ApplicationError("invalid_range", "The end of the range must be after its start.")
    if len(query.group_by) > MAX_GROUP_BY or len(set(query.group_by)) != len(query.group_by):
        raise ApplicationError("invalid_group_by", f"Group by up to {MAX_GROUP_BY} different dimensions.")
    tag_dims = [d for d in query.group_by if d.startswith(TAG_PREFIX)]
    for dim in query.group_by:
        if dim not in DIMENSIONS and not (dim.startswith(TAG_PREFIX) and len(dim) > len(TAG_PREFIX)):
            raise ApplicationError(
                "invalid_group_by", f"Unknown dimension '{dim}': use {', '.join(DIMENSIONS)} or tag:<key>."
            )
    for dim in query.filters:
        if dim not in DIMENSIONS and dim != "tag":
            raise ApplicationError("invalid_filter", f"Unknown filter '{dim}'.")
    if query.filters.get("tag"):
        if len(query.filters["tag"]) != 1 or "=" not in query.filters["tag"][0]:
            raise ApplicationError("invalid_filter", "Filter one tag as key=value.")
    if query.tag_key() is not None:
        if len(tag_dims) > 1 or (
            tag_dims and query.filters.get("tag") and query.filters["tag"][0].partition("=")[0] != query.tag_key()
        ):
            raise ApplicationError("invalid_group_by", "Use one tag key at a time (group by it or filter on it).")
        other = {d for d in query.group_by if not d.startswith(TAG_PREFIX)} | (set(query.filters) - {"tag"})
        if not other <= TAG_DIMENSIONS:
            raise ApplicationError(
                "invalid_group_by", "Tags combine with tenant, workflow and environment (not model or tier)."
            )
        if query.granularity == "hour":
            raise ApplicationError("invalid_granularity", "Tag spend is kept per day: use day or month.")
    if query.granularity == "hour" and query.start < hourly_retention_start():
        raise ApplicationError(
            "invalid_range",
            f"Hourly spend is kept for recent days only (from {hourly_retention_start():%Y-%m-%d}); "
            "use day granularity for older ranges.",
        )
