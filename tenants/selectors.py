"""Reads of the tenants app: the audit log, as far as the scope may read it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet

from .models import ApiKey, AuditEvent
from .scope import Operation, TenantScope


@dataclass(frozen=True)
class AuditFilters:
    """What the audit page and its CSV narrow the log to; empty values filter nothing."""

    actor: str = ""  # a username, a key's prefix (`key 1a2b…` as shown), or "system"
    action: str = ""  # a prefix: "budget." finds every budget change
    target_type: str = ""
    target_id: str = ""
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def audit_events(*, scope: TenantScope, filters: AuditFilters) -> QuerySet[AuditEvent]:
    """The audit events the scope may read (`Operation.READ_AUDIT`), newest first.

    A member reads the events of the tenants they administer among those the scope covers, never a
    platform-wide event (no tenant). An operator reads every tenant's; the platform-wide events come
    with them while no tenant is picked: here a picked tenant is a filter, and catalog or demo events
    are nobody's tenant's. Fail-closed: a scope that may not read the log anywhere gets no rows.
    """
    if scope.is_platform:
        if not scope.may(Operation.READ_AUDIT):
            return AuditEvent.objects.none()
        events = scope.filter(AuditEvent.objects.all(), platform_rows=scope.tenant is None)
    else:
        readable = [pk for pk in scope.tenant_ids or () if scope.may(Operation.READ_AUDIT, pk)]
        events = scope.filter(AuditEvent.objects.filter(tenant_id__in=readable))
    events = _narrowed(events, filters)
    return events.select_related("actor_user", "actor_key", "tenant").order_by("-at", "-id")


def _narrowed(events: QuerySet[AuditEvent], filters: AuditFilters) -> QuerySet[AuditEvent]:
    if filters.actor:
        events = events.filter(_actor_condition(filters.actor))
    if filters.action:
        events = events.filter(action__startswith=filters.action)
    if filters.target_type:
        events = events.filter(target_type__iexact=filters.target_type)
    if filters.target_id:
        events = events.filter(target_id=filters.target_id)
    if filters.since is not None:
        events = events.filter(at__gte=filters.since)
    if filters.until is not None:
        events = events.filter(at__lt=filters.until)
    return events


def _actor_condition(actor: str) -> Q:
    # Ids first, then the events: no join on the users or keys of other tenants' events.
    name = actor.strip()
    condition = Q(actor_user_id__in=get_user_model().objects.filter(username__iexact=name).values("pk"))
    # A key as the page shows it (`key 1a2b3c4d`), as it starts (`tsk_1a2b…`), or 4+ characters of its prefix.
    prefix = name.removeprefix("key ").removeprefix("tsk_").split("_")[0].strip().lower()
    if len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix):
        condition |= Q(actor_key_id__in=ApiKey.objects.filter(prefix__startswith=prefix).values("pk"))
    if name.lower() == "system":
        condition |= Q(actor_user_id__isnull=True, actor_key_id__isnull=True)
    return condition
