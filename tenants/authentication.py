from __future__ import annotations

import hmac
import json
import logging
import math
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.utils import timezone
from rest_framework import authentication, exceptions, throttling
from rest_framework.settings import api_settings

from .db import prepared_cursor
from .models import ApiKey, Tenant
from .services import KEY_PREFIX, hash_secret

throttle_log = logging.getLogger("tenants.throttle")

_KEY_SQL = (
    f"SELECT k.id, k.tenant_id, k.name, k.prefix, k.secret_hash, k.scopes, k.expires_at, k.revoked_at, "
    f"k.last_used_at, k.created_by_id, k.previous_secret_hash, k.previous_expires_at, t.slug, t.name, t.status "
    f"FROM {ApiKey._meta.db_table} k "
    f"LEFT JOIN {Tenant._meta.db_table} t ON t.id = k.tenant_id WHERE k.prefix = %s"
)


def _key_by_prefix(prefix: str) -> ApiKey | None:
    """The key and its tenant in one plain query: every API request pays for this, and the ORM's
    query building and model loading cost several times the SQL itself (bench/preflight.py)."""
    with prepared_cursor() as cursor:  # prepared on PostgreSQL: every API request runs it
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


class ApiKeyRateThrottle(throttling.BaseThrottle):
    """Per-key request rate (API_KEY_RATE); people signed in through sessions are throttled per user.

    A fixed-window counter in the cache: one atomic INCR per request (Redis INCR and EXPIRE in one
    pipelined round trip, or the local cache's own lock), so concurrent requests cannot lose each
    other's counts the way DRF's read-modify-write history throttle does, and the cost does not grow
    with the traffic already in the window. The
    window is the rate's period aligned to the clock; over the limit answers 429 with Retry-After
    (the seconds left in the window). A cache that cannot be reached lets the request through and logs
    it: hard limits live in PostgreSQL, and the rate limit is not worth an outage.
    """

    scope = "api_key"
    THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES

    def __init__(self) -> None:
        self.limit, self.period = _rate(self.THROTTLE_RATES.get(self.scope))  # type: ignore[arg-type]
        self.wait_seconds: int | None = None

    def ident(self, request) -> str:
        if isinstance(request.auth, ApiKey):
            return f"key:{request.auth.pk}"
        if request.user and request.user.is_authenticated:
            return f"user:{request.user.pk}"
        return f"ip:{self.get_ident(request)}"

    def allow_request(self, request, view) -> bool:
        if self.limit is None:
            return True
        now = time.time()
        if now < _breaker.open_until:
            return True  # the cache failed a moment ago: do not make every request wait for its timeout
        window = int(now // self.period)
        key = f"throttle:{self.scope}:{self.ident(request)}:{window}"
        try:
            count = _incr(key, self.period)
        except Exception as exc:  # noqa: BLE001 - any cache failure (refused, timeout, protocol) fails open
            _breaker.open_until = time.time() + CACHE_RETRY_SECONDS
            throttle_log.warning(
                "rate limit not enforced for %s s: the cache did not answer (%s: %s)",
                CACHE_RETRY_SECONDS,
                type(exc).__name__,
                exc,
            )
            return True
        if count <= self.limit:
            return True
        self.wait_seconds = max(1, math.ceil((window + 1) * self.period - now))
        return False

    def wait(self) -> float | None:
        return self.wait_seconds


# After a cache failure, this process lets requests through unthrottled for this long before trying again.
CACHE_RETRY_SECONDS = 5.0


class _Breaker:
    open_until = 0.0


_breaker = _Breaker()

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _rate(rate: str | None) -> tuple[int | None, int]:
    """'6000/min' -> (6000, 60); None (no limit) -> (None, 1)."""
    if not rate:
        return None, 1
    count, period = rate.split("/")
    return int(count), _PERIODS[period[0]]


def _incr(key: str, period: int) -> int:
    """Count one request in the window `key`; the first one creates it with an expiry past the window."""
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        # One round trip: INCR creates the counter at 1 or counts on; EXPIRE in the same pipeline keeps
        # it from outliving its window (it runs on every request, so no SET NX is needed, and works on
        # any Redis version, unlike EXPIRE NX). Django stores integers unpickled, so cache.get reads it.
        cache_key = backend.make_and_validate_key(key)
        pipe = backend._cache.get_client(cache_key, write=True).pipeline(transaction=False)
        pipe.incr(cache_key)
        pipe.expire(cache_key, period + 1)
        count, _ = pipe.execute()
        return int(count)
    # Other caches (the per-process memory of the embedded default): add() is SET NX, incr() is atomic.
    if backend.add(key, 1, timeout=period + 1):
        return 1
    try:
        return backend.incr(key)
    except ValueError:  # expired between add() and incr(): start the window again
        backend.add(key, 1, timeout=period + 1)
        return 1
