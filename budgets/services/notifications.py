"""Alert notifications: email and signed webhooks, one attempt at a time, retried with backoff.

Delivery runs in Celery tasks only (budgets.tasks), never inside a request, so a slow or failing
endpoint cannot hold up ingest or preflight. Each attempt is recorded (`NotificationAttempt`). A
failed attempt schedules the next one after BACKOFF_SECONDS[attempts - 1] (30 s, 2 min, 10 min,
30 min, 2 h, then 2 h) until WEBHOOK_MAX_ATTEMPTS, when the notification is marked failed.

Webhooks are POSTed as JSON with two headers:

    X-Tokenspend-Timestamp: <unix seconds>
    X-Tokenspend-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>

Receivers check them with `webhook_signature_verify` (standard library only, meant to be copied).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import EmailValidator, URLValidator
from django.db import transaction
from django.utils import timezone

from budgets.models import Alert, Metric, Notification, NotificationAttempt, NotificationChannel
from budgets.webhook_targets import TargetRefused, guarded_opener, webhook_target_check
from finops.pricing import nanos_to_usd
from tenants.errors import ApplicationError
from tenants.models import Tenant
from tenants.scope import Actor
from tenants.services import audit_record

logger = logging.getLogger(__name__)

BACKOFF_SECONDS = (30, 120, 600, 1800, 7200)
SIGNATURE_TOLERANCE_SECONDS = 300
USER_AGENT = "Tokenspend-Webhook/1"


def backoff_after(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed attempt."""
    return timedelta(seconds=BACKOFF_SECONDS[min(max(attempts, 1), len(BACKOFF_SECONDS)) - 1])


def webhook_sign(secret: str, timestamp: str, body: bytes | str) -> str:
    text = body.decode() if isinstance(body, bytes) else body
    digest = hmac.new(secret.encode(), f"{timestamp}.{text}".encode(), hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_signature_verify(
    secret: str,
    timestamp: str,
    body: bytes | str,
    header: str,
    *,
    tolerance_seconds: int | None = SIGNATURE_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Check a Tokenspend webhook on the receiving side.

    `timestamp` is the X-Tokenspend-Timestamp header, `body` the raw request body exactly as received
    (not re-serialised JSON), `header` the X-Tokenspend-Signature header. The signature is
    HMAC-SHA256 over "<timestamp>.<body>" with the channel's secret, compared in constant time. A
    timestamp more than `tolerance_seconds` away from now is refused so a captured request cannot be
    replayed later (pass None to skip that check). Copy this function into a receiver as it is.
    """
    if not (secret and timestamp and header):
        return False
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if tolerance_seconds is not None and abs((time.time() if now is None else now) - sent_at) > tolerance_seconds:
        return False
    return hmac.compare_digest(webhook_sign(secret, timestamp, body), header.strip())


def webhook_payload(alert: Alert) -> dict:
    budget, window = alert.budget, alert.window
    money = budget is None or budget.metric == Metric.COST

    def amount(value):
        if value is None:
            return None
        return nanos_to_usd(value) if money else value

    return {
        "alert": {"id": alert.pk, "kind": alert.kind, "level": alert.level},
        "subject": alert.subject,
        "message": alert.message,
        "budget": {"id": budget.pk, "name": budget.name, "metric": budget.metric} if budget else None,
        "window": {
            "start": window.starts_at.isoformat(),
            "end": window.ends_at.isoformat(),
            "spent": amount(window.spent),
            "soft_limit": amount(window.soft_limit),
            "hard_limit": amount(window.hard_limit),
        }
        if window
        else None,
        "tenant": alert.tenant.slug if alert.tenant is not None else None,
        "created_at": alert.created_at.isoformat(),
    }


def _claim(notification: Notification, now: datetime) -> bool:
    """Take the notification for one attempt: a conditional UPDATE, so two workers (the on-commit task
    and the sweeper) never send the same attempt twice. The lease outlasts the attempt's timeout."""
    lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + 60)
    return bool(
        Notification.objects.filter(
            pk=notification.pk, status=Notification.Status.PENDING, next_attempt_at__lte=now
        ).update(next_attempt_at=lease)
    )


def notification_deliver(notification: Notification, *, now: datetime | None = None) -> NotificationAttempt | None:
    """Make one delivery attempt if the notification is pending and due; returns the attempt, or None
    when there was nothing to do (already sent, failed for good, not due, or taken by another worker)."""
    now = now or timezone.now()
    if not _claim(notification, now):
        return None
    notification = Notification.objects.select_related(
        "channel", "alert", "alert__budget", "alert__window", "alert__tenant"
    ).get(pk=notification.pk)
    channel = notification.channel
    started = time.monotonic()
    status_code, error = None, ""
    try:
        if channel.kind == NotificationChannel.Kind.EMAIL:
            send_mail(
                notification.alert.subject,
                notification.alert.message,
                settings.DEFAULT_FROM_EMAIL,
                [channel.target],
                fail_silently=False,
            )
        else:
            status_code = _webhook_post(channel, notification.alert)
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
    except urllib.error.HTTPError as exc:
        status_code, error = exc.code, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        # URLError, timeouts, refused connections and SMTP errors are all OSErrors; a bad URL a ValueError.
        error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    duration_ms = int((time.monotonic() - started) * 1000)
    ok = not error
    attempts = notification.attempts + 1
    with transaction.atomic():
        attempt = NotificationAttempt.objects.create(
            notification=notification,
            at=now,
            ok=ok,
            status_code=status_code,
            error=error[:2000],
            duration_ms=duration_ms,
        )
        if ok:
            fields = {"status": Notification.Status.SENT, "delivered_at": now, "last_error": ""}
        elif attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            fields = {"status": Notification.Status.FAILED, "last_error": error[:2000]}
        else:
            fields = {"next_attempt_at": now + backoff_after(attempts), "last_error": error[:2000]}
        Notification.objects.filter(pk=notification.pk).update(attempts=attempts, **fields)
    if not ok:
        logger.warning("notification %s to %s failed (attempt %s): %s", notification.pk, channel, attempts, error)
    return attempt


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect is answered as a failed attempt (HTTP 3xx): following it would let an https target
    # bounce the server to an address a channel could not name itself.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


# Connects only to public addresses, checked at connection time (budgets/webhook_targets.py).
_opener = guarded_opener(_NoRedirect)


def _webhook_post(channel: NotificationChannel, alert: Alert) -> int:
    body = json.dumps(webhook_payload(alert), separators=(",", ":"), sort_keys=True)
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "X-Tokenspend-Timestamp": timestamp}
    if channel.secret:
        headers["X-Tokenspend-Signature"] = webhook_sign(channel.secret, timestamp, body)
    if not channel.target.startswith(("https://", "http://")):
        raise ValueError(f"not an http(s) URL: {channel.target}")
    request = urllib.request.Request(channel.target, data=body.encode(), headers=headers, method="POST")
    with _opener.open(request, timeout=settings.WEBHOOK_TIMEOUT_SECONDS) as response:
        return response.status


def notifications_due(*, now: datetime | None = None, limit: int = 200) -> list[int]:
    """Ids of pending notifications whose next attempt is due, oldest first."""
    now = now or timezone.now()
    return list(
        Notification.objects.filter(status=Notification.Status.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "id")
        .values_list("pk", flat=True)[:limit]
    )


# Channels: where alerts go. Managed by operators and platform keys (any tenant, or all) and by
# tenant admins (their tenant only); the view resolves which tenant the caller acts for.


def channel_create(
    *,
    tenant: Tenant | None,
    kind: str,
    target: str,
    secret: str = "",
    require_https: bool = True,
    actor: Actor = Actor.system(),
) -> NotificationChannel:
    """Add a channel; a webhook without a secret gets a generated one (returned once, in the answer).

    `require_https` is off only for operators and platform keys: tenant admins must not be able to
    point the server at plain-HTTP (typically internal) addresses.
    """
    target = target.strip()
    try:
        if kind == NotificationChannel.Kind.EMAIL:
            EmailValidator()(target)
        elif kind == NotificationChannel.Kind.WEBHOOK:
            URLValidator(schemes=["https"] if require_https else ["http", "https"])(target)
        else:
            raise ApplicationError("invalid", "kind must be email or webhook.", details={"kind": ["Invalid."]})
    except ValidationError:
        what = "an email address" if kind == "email" else ("an https:// URL" if require_https else "an http(s) URL")
        raise ApplicationError("invalid", f"target must be {what}.", details={"target": [f"Not {what}."]}) from None
    if kind == NotificationChannel.Kind.WEBHOOK:
        try:
            webhook_target_check(target)
        except TargetRefused as exc:
            raise ApplicationError("invalid", str(exc), details={"target": [str(exc)]}) from None
    if kind == NotificationChannel.Kind.WEBHOOK and not secret:
        secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        channel = NotificationChannel.objects.create(tenant=tenant, kind=kind, target=target, secret=secret)
        audit_record(
            action="notification_channel.create",
            tenant=tenant,
            actor=actor,
            target=channel,
            after={"kind": kind, "target": target, "tenant": tenant.slug if tenant else None},
        )
    return channel


def channel_delete(*, channel: NotificationChannel, actor: Actor = Actor.system()) -> None:
    with transaction.atomic():
        audit_record(
            action="notification_channel.delete",
            tenant=channel.tenant,
            actor=actor,
            target=channel,
            before={"kind": channel.kind, "target": channel.target},
        )
        channel.delete()
