"""What OTLP spans and LiteLLM logging payloads have in common on their way to `usage_ingest`.

Both sources describe calls in their own vocabulary; each is mapped to a plain usage record (the
shape `POST /api/v1/usage` takes) and then stored by the one ingest service, so validation,
pricing, idempotency, budget windows and reservations are the same whatever the source. An item
that cannot be mapped is rejected with a message, like an invalid record; an item that carries no
usage at all (a span of an HTTP call, a failed LiteLLM call) is skipped and only counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings

from tenants.models import ApiKey, Tenant

from .ingest import ACCEPTED, CONFLICT, DUPLICATE, REJECTED, usage_ingest

_NOT_SLUG = re.compile(r"[^a-z0-9_.-]+")
# Common spellings of the three environments; anything else is rejected rather than guessed.
_ENVIRONMENTS = {
    "prod": "prod",
    "production": "prod",
    "prd": "prod",
    "live": "prod",
    "stage": "stage",
    "staging": "stage",
    "stg": "stage",
    "preprod": "stage",
    "pre-prod": "stage",
    "uat": "stage",
    "dev": "dev",
    "development": "dev",
    "develop": "dev",
    "local": "dev",
    "test": "dev",
}
TAG_VALUE_MAX = 256


class MappingError(Exception):
    """An item that carries usage but cannot become a usage record; `field` names the culprit."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message


def workflow_slug(value: Any) -> str | None:
    """A workflow slug from a free-form name (`service.name`, an agent name, a key alias)."""
    if not isinstance(value, str):
        return None
    slug = _NOT_SLUG.sub("-", value.strip().lower()).strip("-_.")[:100].rstrip("-_.")
    return slug or None


def environment_name(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    env = _ENVIRONMENTS.get(str(value).strip().lower())
    if env is None:
        raise MappingError(where, f"Unknown environment '{str(value)[:40]}': use prod, stage or dev.")
    return env


def tag_value(value: Any) -> str | None:
    if value is None or isinstance(value, dict):
        return None
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = str(value)
    return text[:TAG_VALUE_MAX] if text else None


def iso(when: datetime) -> str:
    return when.isoformat()


@dataclass
class MappedBatch:
    """Records mapped from a foreign payload, with what could not be mapped or carried no usage."""

    records: list[dict] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # how each record is named in messages (span, call id)
    rejected: list[str] = field(default_factory=list)  # "<label>: <field>: <message>"
    skipped: int = 0

    def add(self, record: dict, label: str) -> None:
        self.records.append(record)
        self.labels.append(label)

    def reject(self, label: str, error: MappingError) -> None:
        self.rejected.append(f"{label}: {error.field}: {error.message}")


@dataclass
class ForeignIngestResult:
    """Totals of one foreign payload: stored now, already stored, refused (with the first messages)."""

    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    record_ids: list[int] = field(default_factory=list)

    @property
    def message(self) -> str:
        shown = "; ".join(self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        return f"{self.rejected} rejected: {shown}{more}" if self.rejected else ""


def foreign_usage_ingest(
    *, batch: MappedBatch, bound_tenant: Tenant | None, api_key: ApiKey | None
) -> ForeignIngestResult:
    """Store mapped records through `usage_ingest`, in chunks of the API's batch limit.

    A duplicate (an exporter's or LiteLLM's retry of the same call) is stored already and counts as
    success; a conflict (same id, other content) and a rejected record count as rejected.
    """
    result = ForeignIngestResult(rejected=len(batch.rejected), skipped=batch.skipped, errors=list(batch.rejected))
    limit = settings.USAGE_MAX_RECORDS_PER_REQUEST
    for start in range(0, len(batch.records), limit):
        chunk = batch.records[start : start + limit]
        outcome = usage_ingest(records=chunk, bound_tenant=bound_tenant, api_key=api_key)
        for item in outcome.items:
            label = batch.labels[start + item.index]
            if item.status == ACCEPTED:
                result.accepted += 1
            elif item.status == DUPLICATE:
                result.duplicate += 1
            elif item.status in (REJECTED, CONFLICT):
                result.rejected += 1
                for name, messages in (item.errors or {}).items():
                    result.errors.append(f"{label}: {name}: {' '.join(messages)}")
            if item.status in (ACCEPTED, DUPLICATE) and item.id is not None:
                result.record_ids.append(item.id)
    return result
