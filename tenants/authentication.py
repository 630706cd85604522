from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework import authentication, exceptions, throttling

from .models import ApiKey, Tenant
from .services import KEY_PREFIX, hash_secret

_KEY_SQL = (
    f"SELECT k.id, k.tenant_id, k.name, k.prefix, k.secret_hash, k.scopes, k.expires_at, k.revoked_at, "
    f"k.last_used_at, k.created_by_id, k.previous_secret_hash, k.previous_expires_at, t.slug, t.name, t.status "
    f"FROM {ApiKey._meta.db_table} k "
    f"LEFT JOIN {Tenant._meta.db_table} t ON t.id = k.tenant_id WHERE k.prefix = %s"
)


def _key_by_prefix(prefix: str) -> ApiKey | None:
    """The key and its tenant in one plain query: every API request pays for this, and the ORM's
    query building and model loading cost several times the SQL itself (bench/preflight.py)."""
    with connection.cursor() as cursor:
        cursor.execute(_KEY_SQL, [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    pk, tenant_id, name, prefix, secret_hash, scopes, expires_at, revoked_at, last_used_at, created_by_id = row[:10]
    previous_secret_hash, previous_expires_at = row[10:12]
    slug, t_name, status = row[12:]
    key = ApiKey(
        id=pk,
        tenant_id=tenant_id,
        name=name,
        prefix=prefix,
        secret_hash=secret_hash,
        scopes=json.loads(scopes) if isinstance(scopes, str | bytes) else scopes,
        expires_at=_aware(expires_at),
        revoked_at=_aware(revoked_at),
        last_used_at=_aware(last_used_at),
        created_by_id=created_by_id,  # the person behind the key: four eyes on approvals
        previous_secret_hash=previous_secret_hash or "",
        previous_expires_at=_aware(previous_expires_at),
    )
    key._state.adding, key._state.db = False, "default"
    if tenant_id is not None:
        key.tenant = Tenant(id=tenant_id, slug=slug, name=t_name, status=status)
        key.tenant._state.adding, key.tenant._state.db = False, "default"
    return key


def _secret_matches(key: ApiKey, digest: str, now: datetime) -> bool:
    """The current secret, or the one before the last rotation while its overlap lasts."""
    if hmac.compare_digest(key.secret_hash, digest):
        return True
    return bool(
        key.previous_secret_hash
        and key.previous_expires_at is not None
        and now < key.previous_expires_at
        and hmac.compare_digest(key.previous_secret_hash, digest)
    )


def _aware(value):
    """Raw SQLite rows carry naive UTC datetimes (or text); the ORM would make them aware."""
    if value is None or isinstance(value, datetime) and value.tzinfo is not None:
        return value
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer tsk_<prefix>_<secret>`: one indexed lookup by prefix, constant-time compare.

    Revocation and expiry are read from the row on every request, so they take effect at once.
    """

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if parts[0].lower() != self.keyword.lower():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Send the key as 'Authorization: Bearer <key>'.")
        raw_key = parts[1]
        pieces = raw_key.split("_", 2)
        if len(pieces) != 3 or pieces[0] != KEY_PREFIX:
            raise exceptions.AuthenticationFailed("The API key is malformed.")
        key = _key_by_prefix(pieces[1])
        now = timezone.now()
        if key is None or not _secret_matches(key, hash_secret(raw_key), now):
            raise exceptions.AuthenticationFailed("The API key is not valid.")
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("The API key has been revoked.")
        if key.expires_at is not None and key.expires_at <= now:
            raise exceptions.AuthenticationFailed("The API key has expired.")
        if key.tenant is not None and key.tenant.status != key.tenant.Status.ACTIVE:
            raise exceptions.AuthenticationFailed("The key's tenant is suspended.")
        resolution = timedelta(seconds=settings.API_KEY_LAST_USED_RESOLUTION_SECONDS)
        if key.last_used_at is None or now - key.last_used_at >= resolution:
            # Written at most once per resolution window so a hot key does not cost a write per request.
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
            key.last_used_at = now
        return key, key

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'


class ApiKeyRateThrottle(throttling.SimpleRateThrottle):
    """Per-key request rate (API_KEY_RATE); people signed in through sessions are throttled per user."""

    scope = "api_key"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiKey):
            ident = f"key:{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}
