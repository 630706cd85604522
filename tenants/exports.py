"""The audit log as CSV: one row per event, streamed in pieces so memory stays flat."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC

from django.db.models import QuerySet

from .csv_safe import csv_writer
from .models import AuditEvent

AUDIT_COLUMNS = ("at", "actor", "tenant", "action", "target_type", "target_id", "before", "after", "request_id")
CHUNK_SIZE = 2000
_FLUSH_BYTES = 64 * 1024


def audit_csv(events: QuerySet[AuditEvent]) -> Iterator[str]:
    """The header and then one row per event of `events` (in its order), in pieces of about 64 KB."""
    buffer = io.StringIO()
    writer = csv_writer(buffer, lineterminator="\r\n")
    writer.writerow(AUDIT_COLUMNS)
    for event in events.iterator(chunk_size=CHUNK_SIZE):
        writer.writerow(_row(event))
        if buffer.tell() >= _FLUSH_BYTES:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _row(event: AuditEvent) -> tuple[str, ...]:
    return (
        event.at.astimezone(UTC).isoformat(),
        event.actor_label,
        event.tenant_label,
        event.action,
        event.target_type,
        event.target_id,
        _json(event.before),
        _json(event.after),
        event.request_id,
    )


def _json(value: object) -> str:
    return "" if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
