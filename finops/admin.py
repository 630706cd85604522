from django.contrib import admin

from tenants.admin_audit import AuditedModelAdmin, admin_actor, audited_formset_save

from .models import (
    LlmModel,
    ModelPrice,
    ModelTier,
    RollupDirtyDay,
    UsageRecord,
    UsageRollup,
    UsageTagRollup,
    Workflow,
)
from .services.repricing import llm_model_save, model_price_save


@admin.register(ModelTier)
class ModelTierAdmin(AuditedModelAdmin):
    list_display = ["slug", "name", "rank"]


class ModelPriceInline(admin.TabularInline):
    model = ModelPrice
    extra = 0
    fields = [
        "effective_from",
        "channel",
        "service_tier",
        "input",
        "cached_input",
        "cache_write",
        "cache_write_1h",
        "output",
        "reasoning",
        "price_taken_on",
        "source",
    ]  # tier multipliers and the long-context rule: on the price's own admin page and the model page


@admin.register(LlmModel)
class LlmModelAdmin(AuditedModelAdmin):
    list_display = ["name", "provider", "tier", "encoding", "context_window", "is_active"]
    list_filter = ["provider", "tier", "is_active"]
    search_fields = ["name", "display_name"]
    inlines = [ModelPriceInline]

    def save_model(self, request, obj, form, change):
        llm_model_save(model=obj, actor=admin_actor(request))  # audits llm_model.create / update

    def save_formset(self, request, form, formset, change):
        # Prices are saved through the service, which audits each and re-prices affected usage;
        # deleted prices are audited as model_price.delete.
        actor = admin_actor(request)
        audited_formset_save(
            formset, actor=actor, service_save=lambda price: model_price_save(price=price, actor=actor)
        )


@admin.register(ModelPrice)
class ModelPriceAdmin(AuditedModelAdmin):
    list_display = [
        "model",
        "channel",
        "service_tier",
        "effective_from",
        "input",
        "cached_input",
        "cache_write",
        "output",
        "reasoning",
        "price_taken_on",
    ]
    list_filter = ["model__provider", "channel", "service_tier"]
    search_fields = ["model__name"]

    def save_model(self, request, obj, form, change):
        model_price_save(price=obj, actor=admin_actor(request))  # audits model_price.save


@admin.register(Workflow)
class WorkflowAdmin(AuditedModelAdmin):
    list_display = ["slug", "name", "owner", "priority", "default_tier", "status"]
    list_filter = ["priority", "status"]
    search_fields = ["slug", "name", "owner"]


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    """Read-only: usage is changed only by ingest and re-pricing."""

    list_display = [
        "request_id",
        "tenant",
        "workflow",
        "model_name",
        "environment",
        "cost_nanos",
        "priced",
        "occurred_at",
    ]
    list_filter = ["environment", "priced", "tenant"]
    search_fields = ["request_id", "model_name"]
    list_select_related = ["tenant", "workflow"]
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in UsageRecord._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Derived data: recomputed by jobs, so people look but do not edit."""

    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UsageRollup)
class UsageRollupAdmin(ReadOnlyAdmin):
    list_display = [
        "grain",
        "bucket_start",
        "tenant",
        "workflow",
        "model",
        "unknown_model_name",
        "environment",
        "calls",
        "cost_nanos",
        "unpriced_calls",
    ]
    list_filter = ["grain", "environment", "tenant"]
    list_select_related = ["tenant", "workflow", "model"]


@admin.register(UsageTagRollup)
class UsageTagRollupAdmin(ReadOnlyAdmin):
    list_display = ["bucket_start", "tenant", "tag_key", "tag_value", "workflow", "environment", "calls", "cost_nanos"]
    list_filter = ["tag_key", "tenant"]
    list_select_related = ["tenant", "workflow"]


@admin.register(RollupDirtyDay)
class RollupDirtyDayAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "day", "marked_at"]
