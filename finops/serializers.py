from __future__ import annotations

from rest_framework import serializers

from tenants.models import Tenant

from .measures import TOKEN_FIELDS
from .models import Channel, LlmModel, UsageRecord, Workflow
from .pricing import nanos_to_usd


class UsageRecordSerializer(serializers.ModelSerializer):
    tenant: serializers.SlugRelatedField[Tenant] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    workflow: serializers.SlugRelatedField[Workflow] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    model: serializers.SlugRelatedField[LlmModel] = serializers.SlugRelatedField(
        slug_field="name", read_only=True, help_text="Catalog model, null if unknown."
    )
    model_tier = serializers.SerializerMethodField()
    cost_usd = serializers.SerializerMethodField(help_text="Exact cost in USD; null while unpriced.")

    class Meta:
        model = UsageRecord
        fields = [
            "id",
            "request_id",
            "tenant",
            "workflow",
            "model",
            "model_name",
            "model_tier",
            "environment",
            *TOKEN_FIELDS,
            "cost_usd",
            "priced",
            "tokens_counted",
            "tokens_estimated",
            "occurred_at",
            "received_at",
            "tags",
            "reservation_id",
            "prompt_version",
            "cache_write_1h_tokens",
            "service_tier",
            "channel",
            "price",
            "price_rule",
        ]
        read_only_fields = fields

    def get_cost_usd(self, obj: UsageRecord) -> str | None:
        return nanos_to_usd(obj.cost_nanos)

    def get_model_tier(self, obj: UsageRecord) -> str | None:
        return obj.model.tier.slug if obj.model is not None else None


class IngestItemSerializer(serializers.Serializer):
    """Documentation of one item of the ingest response (the view renders it directly)."""

    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["accepted", "duplicate", "conflict", "rejected"])
    request_id = serializers.CharField(allow_null=True)
    id = serializers.IntegerField(allow_null=True)
    cost_usd = serializers.CharField(allow_null=True)
    priced = serializers.BooleanField(allow_null=True)
    # The serializer metaclass moves declared fields off the class, so Serializer.errors is not shadowed.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()), allow_null=True
    )


class IngestResponseSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicate = serializers.IntegerField()
    conflict = serializers.IntegerField()
    rejected = serializers.IntegerField()
    items = IngestItemSerializer(many=True)


class UsageRecordInputSerializer(serializers.Serializer):
    """Documentation of one usage record as posted (validated by the ingest service, not by DRF)."""

    request_id = serializers.CharField(max_length=200, help_text="Idempotency key, unique per tenant.")
    tenant = serializers.CharField(required=False, help_text="Tenant slug; platform keys only.")
    workflow = serializers.CharField(required=False, help_text="Workflow slug; unknown slugs are auto-registered.")
    model = serializers.CharField(help_text="Model name, alias, snapshot or deployment name.")
    environment = serializers.ChoiceField(choices=["dev", "stage", "prod"], default="prod")
    occurred_at = serializers.DateTimeField(required=False, help_text="ISO 8601 with offset; default now.")
    tags = serializers.DictField(child=serializers.CharField(), required=False, help_text="Up to 20 string pairs.")
    input_tokens = serializers.IntegerField(required=False, min_value=0, help_text="Uncached input tokens.")
    cached_input_tokens = serializers.IntegerField(required=False, min_value=0)
    cache_write_tokens = serializers.IntegerField(required=False, min_value=0)
    output_tokens = serializers.IntegerField(
        required=False, min_value=0, help_text="Output tokens, reasoning excluded."
    )
    reasoning_tokens = serializers.IntegerField(required=False, min_value=0)
    usage = serializers.DictField(required=False, help_text="The SDK's usage object (OpenAI, Anthropic or Gemini).")
    prompt = serializers.CharField(required=False, help_text="Prompt text to count; never stored.")
    messages = serializers.ListField(child=serializers.DictField(), required=False, help_text="Chat messages to count.")
    completion = serializers.CharField(required=False, help_text="Completion text to count; never stored.")
    reservation_id = serializers.UUIDField(required=False, help_text="The preflight reservation this call settles.")
    prompt_version = serializers.CharField(
        required=False, max_length=100, help_text="The label of the workflow's prompt version the call sent."
    )
    cache_write_1h_tokens = serializers.IntegerField(
        required=False, min_value=0, help_text="The part of cache_write_tokens written to a 1-hour cache."
    )
    service_tier = serializers.ChoiceField(
        choices=["standard", "default", "batch", "flex", "priority"],
        required=False,
        help_text="The service tier that billed the call (OpenAI's `service_tier`; Anthropic's usage carries it).",
    )
    channel = serializers.ChoiceField(
        choices=Channel.choices,
        required=False,
        help_text="Where the model was called; default from the model name (vertex_ai/…, bedrock ids, azure/…).",
    )


class UsageBatchInputSerializer(serializers.Serializer):
    records = UsageRecordInputSerializer(many=True)
