"""The usage record list and detail: raw `UsageRecord` rows, single records, keyset-paginated."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from finops.models import LlmModel, UsageRecord, Workflow
from tenants.scope import TenantScope


def _records(scope: TenantScope) -> QuerySet[UsageRecord]:
    return scope.filter(UsageRecord.objects.all())


@dataclass(frozen=True, slots=True)
class UsageFilters:
    """Filters of the usage list; empty values do not filter."""

    workflow: str = ""
    model: str = ""
    environment: str = ""
    priced: bool | None = None


@dataclass(frozen=True, slots=True)
class UsageCursor:
    """A position in the newest-first order (occurred_at desc, id desc).

    `direction` "older" asks for the records after this position in that order; "newer" for the
    ones before it (shown newest first as well).
    """

    occurred_at: datetime
    id: int
    direction: str = "older"


@dataclass(frozen=True, slots=True)
class UsagePage:
    records: list[UsageRecord]
    has_newer: bool
    has_older: bool

    @property
    def newer_cursor(self) -> UsageCursor | None:
        if not self.has_newer or not self.records:
            return None
        first = self.records[0]
        return UsageCursor(occurred_at=first.occurred_at, id=first.pk, direction="newer")

    @property
    def older_cursor(self) -> UsageCursor | None:
        if not self.has_older or not self.records:
            return None
        last = self.records[-1]
        return UsageCursor(occurred_at=last.occurred_at, id=last.pk, direction="older")


# A page is first looked for among the records of one day next to the cursor: with the PostgreSQL
# BRIN (or the SQLite B-tree) on occurred_at that reads only recent blocks instead of sorting every
# row of the scope. Only when that day holds too few records is the query repeated without bound.
_LIST_WINDOWS = (timedelta(days=1), None)


def usage_record_list(
    *, scope: TenantScope, filters: UsageFilters, cursor: UsageCursor | None = None, page_size: int = 50
) -> UsagePage:
    """Newest first, keyset-paginated on (occurred_at, id): no COUNT and no OFFSET, so a page costs the
    same on the millionth record as on the first."""
    qs = _records(scope).select_related("tenant", "workflow", "model")
    if filters.workflow:
        qs = qs.filter(workflow__slug=filters.workflow)
    if filters.model:
        qs = qs.filter(Q(model_name=filters.model) | Q(model__name=filters.model))
    if filters.environment:
        qs = qs.filter(environment=filters.environment)
    if filters.priced is not None:
        qs = qs.filter(priced=filters.priced)

    newer = cursor is not None and cursor.direction == "newer"
    if cursor is None:
        anchor = timezone.now()
    elif newer:
        anchor = cursor.occurred_at
        qs = qs.filter(Q(occurred_at__gt=cursor.occurred_at) | Q(occurred_at=cursor.occurred_at, id__gt=cursor.id))
    else:
        anchor = cursor.occurred_at
        qs = qs.filter(Q(occurred_at__lt=cursor.occurred_at) | Q(occurred_at=cursor.occurred_at, id__lt=cursor.id))
    ordered = qs.order_by("occurred_at", "id") if newer else qs.order_by("-occurred_at", "-id")

    for window in _LIST_WINDOWS:
        candidates = ordered
        if window is not None:
            # Every record outside the window lies beyond every record inside it in this order, so a
            # full page found inside the window is exactly the page the unbounded query would return.
            bound = {"occurred_at__lte": anchor + window} if newer else {"occurred_at__gte": anchor - window}
            candidates = ordered.filter(**bound)
        rows = list(candidates[: page_size + 1])
        if len(rows) > page_size:
            break

    if newer:
        page = rows[:page_size]
        page.reverse()
        return UsagePage(records=page, has_newer=len(rows) > page_size, has_older=True)
    return UsagePage(records=rows[:page_size], has_newer=cursor is not None, has_older=len(rows) > page_size)


def usage_record_get(*, scope: TenantScope, record_id: int) -> UsageRecord | None:
    """One record inside the scope; another tenant's record answers like a missing one (None)."""
    return (
        _records(scope)
        .select_related("tenant", "workflow", "model", "model__tier", "price", "api_key")
        .filter(pk=record_id)
        .first()
    )


def usage_filter_suggestions() -> dict[str, list[str]]:
    """Values offered (not enforced) by the usage filters: registered workflows and active catalog
    models are shared product data. Auto-discovered workflows are left out: their names come from
    some tenant's services and could tell one tenant about another."""
    return {
        "workflows": list(Workflow.objects.filter(status=Workflow.Status.REGISTERED).values_list("slug", flat=True)),
        "models": list(LlmModel.objects.filter(is_active=True).order_by("name").values_list("name", flat=True)),
    }
