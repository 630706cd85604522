from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import models


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    external_id = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # The tenant's own day: the default for its new budgets and the day its people read spend in.
    time_zone = models.CharField(max_length=64, default="UTC")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer"
        APPROVER = "approver"
        ADMIN = "admin"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user_tenant")]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant} ({self.role})"


class ApiKey(models.Model):
    """A machine credential. The secret is shown once at creation; only its SHA-256 is stored.

    A tenant key acts for its tenant only; a platform key (tenant empty) must name the tenant in
    each record or request.
    """

    class Scope(models.TextChoices):
        INGEST = "ingest"
        PREFLIGHT = "preflight"
        READ = "read"
        MANAGE = "manage"  # budgets and controls (a tenant key: its own tenant's budgets only)

    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Rotation: the secret before the last rotation keeps working until `previous_expires_at`, so the
    # services holding it can move to the new one; after that only `secret_hash` authenticates.
    previous_secret_hash = models.CharField(max_length=64, blank=True)
    previous_expires_at = models.DateTimeField(null=True, blank=True)
    rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        owner = self.tenant.slug if self.tenant is not None else "platform"
        return f"{self.name} ({owner}, {self.prefix}…)"

    @property
    def is_platform(self) -> bool:
        return self.tenant_id is None

    # DRF treats request.user as authenticated through these.
    is_authenticated = True
    is_staff = False


class AuditEvent(models.Model):
    """Append-only record of who changed what, written in the same transaction as the change.

    The database refuses UPDATE, DELETE and TRUNCATE on this table (triggers, migration 0002). So the
    references below are historical ids, not constraints: deleting a person, a key or a tenant leaves
    its events as they were (DO_NOTHING, no FK constraint), and `actor_label` / `tenant_label` say
    when the referent is gone. On SQLite, a migration that rebuilds this table drops its triggers:
    such a migration must create them again (the tests on SQLite catch it).
    """

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    action = models.CharField(max_length=100)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=100, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.action} {self.target_type}:{self.target_id}"

    @property
    def actor_label(self) -> str:
        """Who acted: a username, `key <prefix>` or `system`; a deleted referent by its id."""
        if self.actor_key_id is not None:
            key = _referent(self, "actor_key")
            return f"key {key.prefix}" if key is not None else f"key #{self.actor_key_id} (deleted)"
        if self.actor_user_id is not None:
            user = _referent(self, "actor_user")
            return user.get_username() if user is not None else f"user #{self.actor_user_id} (deleted)"
        return "system"

    @property
    def tenant_label(self) -> str:
        """The tenant's slug, `""` for a platform-wide event, or its id once the tenant is deleted."""
        if self.tenant_id is None:
            return ""
        tenant = _referent(self, "tenant")
        return tenant.slug if tenant is not None else f"#{self.tenant_id} (deleted)"


def _referent(event: AuditEvent, name: str) -> Any:
    """The related row of an audit event, or None once it was deleted (there is no FK constraint)."""
    try:
        return getattr(event, name)
    except ObjectDoesNotExist:
        return None
