from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import available_timezones

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from tenants.errors import ApplicationError

from .models import ApiKey, AuditEvent, Membership, Tenant
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


# --- self-service: keys, members, tenants -------------------------------------------------------------

MAX_ROTATION_OVERLAP = timedelta(days=30)


@transaction.atomic
def api_key_rotate(*, key: ApiKey, overlap: timedelta, actor: Actor = Actor.system()) -> tuple[ApiKey, str]:
    """A new secret for the same key (same prefix, scopes and expiry). The old secret keeps working for
    `overlap` (0: stops at once), so services can move over; a second rotation ends the first's overlap."""
    if key.revoked_at is not None:
        raise ApplicationError("key_revoked", "A revoked key cannot be rotated; create a new one.")
    if overlap < timedelta(0) or overlap > MAX_ROTATION_OVERLAP:
        raise ApplicationError("invalid_overlap", "The overlap must be between 0 and 30 days.")
    now = timezone.now()
    raw_key = f"{KEY_PREFIX}_{key.prefix}_{secrets.token_urlsafe(32)}"
    key.previous_secret_hash = key.secret_hash
    key.previous_expires_at = now + overlap
    key.secret_hash = hash_secret(raw_key)
    key.rotated_at = now
    key.save(update_fields=["previous_secret_hash", "previous_expires_at", "secret_hash", "rotated_at"])
    audit_record(
        action="api_key.rotate",
        tenant_id=key.tenant_id,
        actor=actor,
        target=key,
        after={"prefix": key.prefix, "old_secret_valid_until": key.previous_expires_at.isoformat()},
    )
    return key, raw_key


def _admins_left(tenant_id: int, *, without: Membership) -> int:
    return (
        Membership.objects.select_for_update()
        .filter(tenant_id=tenant_id, role=Membership.Role.ADMIN)
        .exclude(pk=without.pk)
        .count()
    )


def _role(role: str) -> str:
    if role not in Membership.Role.values:
        raise ApplicationError("invalid_role", f"The role must be one of {', '.join(Membership.Role.values)}.")
    return role


def set_password_link(user) -> str:
    """A one-time link to choose a password: Django's reset token, which stops working once the password
    is set (it hashes the password and the last sign-in), or after PASSWORD_RESET_TIMEOUT."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return settings.PUBLIC_BASE_URL + reverse("set_password", kwargs={"uidb64": uid, "token": token})


@transaction.atomic
def membership_add(
    *, tenant: Tenant, username: str, role: str, email: str = "", actor: Actor = Actor.system()
) -> tuple[Membership, str]:
    """Give a person a role on the tenant, creating the person when the username is new. Returns the
    membership and, for a new person, the one-time set-password link (also emailed when there is an
    address); "" for someone who already has a password."""
    username, email = username.strip(), email.strip()
    if not username:
        raise ApplicationError("invalid_username", "Give the person's username.")
    role = _role(role)
    users = get_user_model()
    user = users.objects.filter(username=username).first()
    created = user is None
    if user is None:
        user = users(username=username, email=email)
        user.full_clean(exclude=["password"])
        user.set_unusable_password()
        user.save()
    elif Membership.objects.filter(user=user, tenant=tenant).exists():
        raise ApplicationError("already_member", f"{username} is already a member of {tenant.name}.")
    membership = Membership.objects.create(user=user, tenant=tenant, role=role)
    audit_record(
        action="membership.create",
        tenant=tenant,
        actor=actor,
        target=membership,
        after={"user": username, "role": role, "new_person": created},
    )
    link = set_password_link(user) if created or not user.has_usable_password() else ""
    if link and user.email:
        send_mail(
            subject=f"You have been added to {tenant.name} on Tokenspend",
            message=f"{actor.label} added you to {tenant.name} as {role}.\n\nChoose your password here "
            f"(the link works once):\n{link}\n",
            from_email=None,
            recipient_list=[user.email],
            fail_silently=True,
        )
    return membership, link


@transaction.atomic
def membership_set_role(*, membership: Membership, role: str, actor: Actor = Actor.system()) -> Membership:
    role = _role(role)
    before = membership.role
    if before == role:
        return membership
    if before == Membership.Role.ADMIN and not _admins_left(membership.tenant_id, without=membership):
        raise ApplicationError(
            "last_admin", "The tenant's last admin cannot lose the admin role; make another admin first."
        )
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        action="membership.update",
        tenant_id=membership.tenant_id,
        actor=actor,
        target=membership,
        before={"role": before},
        after={"role": role},
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor: Actor = Actor.system()) -> None:
    if membership.role == Membership.Role.ADMIN and not _admins_left(membership.tenant_id, without=membership):
        raise ApplicationError("last_admin", "The tenant's last admin cannot be removed; make another admin first.")
    audit_record(
        action="membership.delete",
        tenant_id=membership.tenant_id,
        actor=actor,
        target=membership,
        before={"user": membership.user.get_username(), "role": membership.role},
    )
    membership.delete()


TENANT_FIELDS = ("slug", "name", "external_id", "time_zone", "status")


def _tenant_values(
    *, slug: str, name: str, external_id: str, time_zone: str, status: str, tenant: Tenant | None = None
) -> dict[str, str]:
    values = {
        "slug": slug.strip(),
        "name": name.strip(),
        "external_id": external_id.strip(),
        "time_zone": time_zone.strip() or "UTC",
        "status": status,
    }
    errors = {}
    if not re.fullmatch(r"[-a-z0-9_]{1,64}", values["slug"]):
        errors["slug"] = ["Lowercase letters, digits, '-' and '_' only (at most 64)."]
    elif Tenant.objects.filter(slug=values["slug"]).exclude(pk=tenant.pk if tenant is not None else 0).exists():
        errors["slug"] = ["This slug is taken."]
    if not values["name"]:
        errors["name"] = ["Give the tenant a name."]
    if values["time_zone"] not in available_timezones():
        errors["time_zone"] = [f"Unknown time zone '{values['time_zone']}'; e.g. UTC or Europe/Berlin."]
    if status not in Tenant.Status.values:
        errors["status"] = [f"The status must be one of {', '.join(Tenant.Status.values)}."]
    if errors:
        raise ApplicationError("invalid", "The tenant is not valid.", details=errors)
    return values


@transaction.atomic
def tenant_create(
    *,
    slug: str,
    name: str,
    external_id: str = "",
    time_zone: str = "UTC",
    status: str = Tenant.Status.ACTIVE,
    actor: Actor = Actor.system(),
) -> Tenant:
    values = _tenant_values(slug=slug, name=name, external_id=external_id, time_zone=time_zone, status=status)
    tenant = Tenant.objects.create(**values)
    audit_record(action="tenant.create", tenant=tenant, actor=actor, target=tenant, after=values)
    return tenant


@transaction.atomic
def tenant_update(
    *,
    tenant: Tenant,
    slug: str,
    name: str,
    external_id: str,
    time_zone: str,
    status: str,
    actor: Actor = Actor.system(),
) -> Tenant:
    """Edit a tenant. Suspending one stops its keys on their next request (authentication reads the
    status every time); its data, budgets and members stay, and reactivating brings the keys back."""
    values = _tenant_values(
        slug=slug, name=name, external_id=external_id, time_zone=time_zone, status=status, tenant=tenant
    )
    before = {f: getattr(tenant, f) for f in TENANT_FIELDS}
    changed = {f: v for f, v in values.items() if before[f] != v}
    if not changed:
        return tenant
    for field_name, value in changed.items():
        setattr(tenant, field_name, value)
    tenant.save(update_fields=list(changed))
    action = "tenant.update"
    if changed.get("status") == Tenant.Status.SUSPENDED:
        action = "tenant.suspend"
    elif changed.get("status") == Tenant.Status.ACTIVE:
        action = "tenant.reactivate"
    audit_record(
        action=action,
        tenant=tenant,
        actor=actor,
        target=tenant,
        before={f: before[f] for f in changed},
        after=changed,
    )
    return tenant
