"""The usage record list (keyset-paginated, filtered) and one record's page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.http import Http404
from django.shortcuts import render
from django.urls import reverse

from finops.measures import TOKEN_FIELDS
from finops.models import Environment, UsageRecord
from finops.selectors.records import (
    UsageCursor,
    UsageFilters,
    usage_filter_suggestions,
    usage_record_get,
    usage_record_list,
)
from tenants.csv_safe import csv_download, wants_csv
from tenants.scoping import tenant_page

from .csv_tables import USAGE_COLUMNS, usage_rows
from .layout import layout_context

USAGE_PAGE_SIZE = 50
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _encode_cursor(cursor: UsageCursor | None) -> str | None:
    if cursor is None:
        return None
    micros = (cursor.occurred_at - _EPOCH) // timedelta(microseconds=1)
    return f"{'n' if cursor.direction == 'newer' else 'o'}{micros}-{cursor.id}"


def _decode_cursor(raw: str) -> UsageCursor | None:
    """Cursors look like `o1735689600123456-42` (older than) or `n...` (newer than); junk means page one."""
    if len(raw) < 4 or raw[0] not in "on":
        return None
    micros, _, record_id = raw[1:].partition("-")
    if not (micros.isdigit() and record_id.isdigit()):
        return None
    try:
        occurred_at = _EPOCH + timedelta(microseconds=int(micros))
    except OverflowError:
        return None
    return UsageCursor(occurred_at=occurred_at, id=int(record_id), direction="newer" if raw[0] == "n" else "older")


def _usage_filters(params) -> UsageFilters:
    environment = params.get("environment", "")
    priced = {"true": True, "false": False}.get(params.get("priced", "").lower())
    return UsageFilters(
        workflow=params.get("workflow", "").strip(),
        model=params.get("model", "").strip(),
        environment=environment if environment in Environment.values else "",
        priced=priced,
    )


@tenant_page
def usage_list(request):
    scope = request.scope
    filters = _usage_filters(request.GET)
    cursor = _decode_cursor(request.GET.get("cursor", ""))
    page = usage_record_list(scope=scope, filters=filters, cursor=cursor, page_size=USAGE_PAGE_SIZE)
    if wants_csv(request):
        return csv_download(name="usage", scope=scope, header=USAGE_COLUMNS, rows=usage_rows(page.records))
    context = layout_context(request, scope)
    context.update(
        page=page,
        filters=filters,
        is_filtered=filters != UsageFilters(),
        newer_cursor=_encode_cursor(page.newer_cursor),
        older_cursor=_encode_cursor(page.older_cursor),
        environments=Environment.choices,
        suggestions=usage_filter_suggestions(),
    )
    return render(request, "finops/usage_list.html", context)


@tenant_page
def usage_detail(request, record_id: int):
    scope = request.scope
    record: UsageRecord | None = usage_record_get(scope=scope, record_id=record_id)
    if record is None:
        raise Http404("No such usage record.")
    context = layout_context(request, scope, switcher_action=reverse("usage_list"))
    context.update(record=record, total_tokens=_total_tokens(record))
    return render(request, "finops/usage_detail.html", context)


def _total_tokens(record: UsageRecord) -> int:
    return sum(getattr(record, name) for name in TOKEN_FIELDS)
