from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from tenants.errors import ApplicationError

from .models import ApiKey, AuditEvent, Tenant
from .scope import Actor

KEY_PREFIX = "tsk"
_PREFIX_LEN = 10
VALID_SCOPES = frozenset(ApiKey.Scope.values)


def hash_secret(raw_key: str) -> str:
    # A key carries 256 random bits, so a plain SHA-256 is as strong as a slow password hash here
    # and keeps authentication to one indexed lookup plus a microsecond of hashing per request.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def audit_record(
    *,
    action: str,
    actor: Actor = Actor.system(),
    tenant: Tenant | None = None,
    tenant_id: int | None = None,
    target: Any = None,
    before: dict | None = None,
    after: dict | None = None,
    request_id: str = "",
) -> AuditEvent:
    """One append-only audit row, written by the service in the transaction of the change it records.
    `tenant_id` saves loading the tenant where only its id is at hand (bulk and hot paths)."""
    return AuditEvent.objects.create(
        action=action,
        tenant_id=tenant.pk if tenant is not None else tenant_id,
        actor_user=actor.actor_user,
        actor_key=actor.api_key,
        target_type=type(target).__name__ if target is not None else "",
        target_id=str(getattr(target, "pk", "") or ""),
        before=before,
        after=after,
        request_id=request_id,
    )


def parse_scopes(raw: str | list[str]) -> list[str]:
    scopes = [s.strip() for s in (raw.split(",") if isinstance(raw, str) else raw) if s.strip()]
    unknown = sorted(set(scopes) - VALID_SCOPES)
    if unknown or not scopes:
        raise ApplicationError(
            "invalid_scopes",
            f"Scopes must be a non-empty subset of {', '.join(sorted(VALID_SCOPES))}; "
            f"got {', '.join(unknown) or 'none'}.",
        )
    return sorted(set(scopes))


@transaction.atomic
def api_key_create(
    *,
    tenant: Tenant | None,
    name: str,
    scopes: str | list[str],
    actor: Actor = Actor.system(),
    expires_at: datetime | None = None,
    raw_key: str | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with the full secret, which is never retrievable again.

    `raw_key` exists for the demo data set only, whose key must be the same on every run.
    """
    scope_list = parse_scopes(scopes)
    if raw_key is None:
        prefix = secrets.token_hex(_PREFIX_LEN // 2)
        raw_key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    else:
        prefix = raw_key.split("_", 2)[1]
    key = ApiKey.objects.create(
        tenant=tenant,
        name=name,
        prefix=prefix,
        secret_hash=hash_secret(raw_key),
        scopes=scope_list,
        created_by=actor.actor_user,
        expires_at=expires_at,
    )
    audit_record(
        action="api_key.create",
        tenant=tenant,
        actor=actor,
        target=key,
        after={"name": name, "prefix": prefix, "scopes": scope_list, "platform": tenant is None},
    )
    return key, raw_key


@transaction.atomic
def api_key_revoke(*, key: ApiKey, actor: Actor = Actor.system()) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(action="api_key.revoke", tenant=key.tenant, actor=actor, target=key)
    return key
