"""The straightforward ingest path, for comparison only: DRF ModelSerializer(many=True) + bulk_create.

This is how the endpoint is usually first written, following DRF's documentation for creating
many objects: DRF's JSONParser, a ModelSerializer over UsageRecord validating each field, a
ListSerializer whose `create` is one `bulk_create`, and `serializer.data` (the stored records) as
the response, as CreateAPIView returns it. It does less than the real endpoint (no pricing, no
content hash, no duplicate/conflict outcomes, no catalog resolution: the model name is stored as
sent), so the comparison favours it. Two choices keep it out of the known per-record query traps,
which would make the comparison meaningless:

- `validators = []`: DRF's unique-together validator for (tenant, request_id) issues one SELECT per
  record (about 850 records/s; DESIGN.md section 12);
- the workflow slug is looked up once per distinct slug per request; a plain SlugRelatedField issues
  one SELECT per record.
"""

from django.utils import timezone
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from finops.models import UsageRecord, Workflow
from tenants.scope import Operation
from tenants.scoping import TenantScopedAPIView


class WorkflowSlugField(serializers.SlugRelatedField):
    """SlugRelatedField with its lookups memoised in the (shared, per-request) serializer context."""

    def to_internal_value(self, data):
        memo = self.context.setdefault("workflow_by_slug", {})
        if data not in memo:
            memo[data] = super().to_internal_value(data)
        return memo[data]


class BulkCreateListSerializer(serializers.ListSerializer):
    def create(self, validated_data):
        return UsageRecord.objects.bulk_create(UsageRecord(**attrs) for attrs in validated_data)


class BaselineUsageRecordSerializer(serializers.ModelSerializer):
    workflow = WorkflowSlugField(slug_field="slug", queryset=Workflow.objects.all(), required=False, allow_null=True)
    model = serializers.CharField(source="model_name", max_length=200)
    usage = serializers.DictField(required=False, write_only=True)

    class Meta:
        model = UsageRecord
        list_serializer_class = BulkCreateListSerializer
        fields = [
            "id",
            "request_id",
            "workflow",
            "model",
            "environment",
            "occurred_at",
            "tags",
            "input_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "output_tokens",
            "reasoning_tokens",
            "usage",
            "received_at",
        ]
        read_only_fields = ["id", "received_at"]
        validators = []  # the default unique-together validator costs one SELECT per record

    def validate(self, attrs):
        usage = attrs.pop("usage", None)
        if usage is None:
            return attrs
        try:
            if "prompt_tokens" in usage:  # OpenAI: prompt includes cached, completion includes reasoning
                cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
                reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
                attrs["input_tokens"] = int(usage["prompt_tokens"]) - int(cached)
                attrs["cached_input_tokens"] = int(cached)
                attrs["output_tokens"] = int(usage.get("completion_tokens") or 0) - int(reasoning)
                attrs["reasoning_tokens"] = int(reasoning)
            else:  # Anthropic: the buckets come separately
                attrs["input_tokens"] = int(usage.get("input_tokens") or 0)
                attrs["cached_input_tokens"] = int(usage.get("cache_read_input_tokens") or 0)
                attrs["cache_write_tokens"] = int(usage.get("cache_creation_input_tokens") or 0)
                attrs["output_tokens"] = int(usage.get("output_tokens") or 0)
        except (TypeError, ValueError):
            raise ValidationError({"usage": ["Token counts must be integers."]}) from None
        return attrs


class BaselineUsageIngestApi(TenantScopedAPIView):
    write_operation = Operation.INGEST

    def post(self, request):
        data = request.data
        records = data["records"] if isinstance(data, dict) and "records" in data else [data]
        serializer = BaselineUsageRecordSerializer(data=records, many=True)
        serializer.is_valid(raise_exception=True)
        serializer.save(tenant=self.one_tenant, api_key=self.api_key, received_at=timezone.now(), content_hash="")
        return Response(serializer.data, status=status.HTTP_201_CREATED)
