from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import ValidationError

from .admin_audit import AuditedModelAdmin, admin_actor
from .models import ApiKey, AuditEvent, Membership, Tenant
from .services import VALID_SCOPES, api_key_revoke


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(AuditedModelAdmin):
    list_display = ["slug", "name", "status", "external_id", "created_at"]
    list_filter = ["status"]
    search_fields = ["slug", "name", "external_id"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(AuditedModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role", "tenant"]
    search_fields = ["user__username", "tenant__slug"]
    autocomplete_fields = ["user", "tenant"]

    def get_readonly_fields(self, request, obj=None):
        # A membership never moves to another tenant (that tenant's audit log would not show it leaving).
        return [*super().get_readonly_fields(request, obj), *(("tenant", "user") if obj is not None else ())]


class ApiKeyAdminForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["name", "tenant", "scopes", "expires_at", "revoked_at"]

    def clean_scopes(self):
        scopes = self.cleaned_data.get("scopes")
        if not isinstance(scopes, list) or not scopes or set(scopes) - VALID_SCOPES:
            raise ValidationError(f"A non-empty list of {', '.join(sorted(VALID_SCOPES))}.")
        return scopes


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedModelAdmin):
    """Keys are created with `manage.py create_api_key` (the secret is printed once); here they are
    listed, renamed and revoked. The hash is never shown."""

    form = ApiKeyAdminForm

    list_display = ["name", "prefix", "tenant", "scopes", "created_at", "expires_at", "revoked_at", "last_used_at"]
    list_filter = ["tenant"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created_by", "created_at", "last_used_at"]
    exclude = ["secret_hash"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: usage keeps pointing at the key that reported it

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            # A key never moves to another tenant, and a revoked key stays revoked.
            fields.append("tenant")
            if obj.revoked_at is not None:
                fields.append("revoked_at")
        return fields

    def save_model(self, request, obj, form, change):
        # Setting `revoked_at` revokes the key through the service (`api_key.revoke`, stamped with the
        # time of this save); any other edit (name, scopes, expiry) is recorded as `api_key.update`.
        revoking = change and obj.revoked_at is not None and "revoked_at" in form.changed_data
        if revoking:
            obj.revoked_at = None
        super().save_model(request, obj, form, change)
        if revoking:
            api_key_revoke(key=obj, actor=admin_actor(request))


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "action", "tenant", "actor_user", "actor_key", "target_type", "target_id"]
    list_filter = ["action", "tenant"]
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# People: operator rights (`is_staff`, `is_superuser`) and deactivation are control-plane changes too.
User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class AuditedUserAdmin(AuditedModelAdmin, UserAdmin):
    pass
