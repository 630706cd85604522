"""A workflow's prompt versions: a CI pipeline registers each one it deploys, and lists them."""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from finops import hooks, tokens
from finops.apis.tokens import _MessagesField, _StrictCharField
from finops.models import PromptVersion
from finops.parsers import OrjsonParser
from finops.pricing import nanos_to_usd
from finops.selectors.prompts import PromptProjection, prompt_versions_of
from finops.selectors.workflows import workflow_required
from finops.services.prompts import PromptRegistration, prompt_version_register
from tenants.errors import reject_oversized_body
from tenants.schema import results_of
from tenants.scope import Operation
from tenants.scoping import TenantScopedAPIView
from tenants.strict_input import StrictInputSerializer

LIST_MAX = 500


class PromptVersionInputSerializer(StrictInputSerializer):
    # The serializer metaclass moves declared fields off the class, so Field.label is not shadowed.
    label = _StrictCharField(  # type: ignore[assignment]
        max_length=100, help_text="What usage records and preflights name, e.g. v7 or a date."
    )
    text = _StrictCharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=tokens.MAX_TEXT_CHARS,
        help_text="The prompt text (or send messages).",
    )
    messages = _MessagesField(required=False, help_text="The prompt as OpenAI-style chat messages.")
    model = _StrictCharField(
        required=False,
        max_length=200,
        help_text="The model to count and price for; default the model of the tenant's active version.",
    )
    git_commit = _StrictCharField(required=False, allow_blank=True, max_length=64)

    def validate(self, attrs):
        if ("text" in attrs) == ("messages" in attrs):
            raise ValidationError("Send exactly one of text or messages.")
        return attrs


class PromptVersionOutputSerializer(serializers.Serializer):
    label = serializers.CharField()  # type: ignore[assignment]
    workflow = serializers.CharField()
    tenant = serializers.CharField()
    status = serializers.ChoiceField(choices=PromptVersion.Status.choices)
    model = serializers.CharField()
    encoding = serializers.CharField()
    input_tokens = serializers.IntegerField()
    tokens_estimated = serializers.BooleanField()
    estimated_cost_per_call_usd = serializers.CharField(
        allow_null=True, help_text="Input at today's price plus the workflow's expected output tokens (p50)."
    )
    git_commit = serializers.CharField()
    created_by = serializers.CharField(allow_null=True)
    created_by_key = serializers.CharField(allow_null=True, help_text="Prefix of the registering key.")
    created_at = serializers.DateTimeField()
    approval_id = serializers.CharField(allow_null=True, help_text="The prompt_change request it waits or waited on.")
    approval_status = serializers.CharField(allow_null=True)
    review_url = serializers.CharField(help_text="The page with the diff and the projection.")


class PromptRegistrationOutputSerializer(PromptVersionOutputSerializer):
    created = serializers.BooleanField(help_text="False: this label was registered before with the same prompt.")
    baseline = serializers.CharField(allow_null=True, help_text="The active version it was compared with.")
    input_tokens_change = serializers.IntegerField(allow_null=True)
    input_tokens_change_pct = serializers.CharField(allow_null=True)
    projected_monthly_cost_change_usd = serializers.CharField(allow_null=True)
    calls_per_month = serializers.IntegerField(help_text="The call volume the projection uses.")
    reasons = serializers.ListField(child=serializers.CharField(), help_text="Why it waits for a review.")


def version_out(v: PromptVersion, review: hooks.PromptReview | None) -> dict:
    url = reverse("prompt_version_detail", kwargs={"slug": v.workflow.slug, "label": v.label})
    return {
        "label": v.label,
        "workflow": v.workflow.slug,
        "tenant": v.tenant.slug,
        "status": v.status,
        "model": v.model_name,
        "encoding": v.encoding,
        "input_tokens": v.input_tokens,
        "tokens_estimated": v.tokens_estimated,
        "estimated_cost_per_call_usd": nanos_to_usd(v.estimated_cost_per_call_nanos),
        "git_commit": v.git_commit,
        "created_by": v.created_by.get_username() if v.created_by is not None else None,
        "created_by_key": v.created_by_key.prefix if v.created_by_key is not None else None,
        "created_at": v.created_at,
        "approval_id": review.id if review is not None else None,
        "approval_status": review.status if review is not None else None,
        "review_url": f"{url}?tenant={v.tenant.slug}",
    }


def registration_out(r: PromptRegistration) -> dict:
    p: PromptProjection = r.projection
    fraction = p.token_change_fraction
    return {
        **version_out(r.version, r.review),
        "created": r.created,
        "baseline": r.baseline.label if r.baseline is not None else None,
        "input_tokens_change": p.token_change,
        "input_tokens_change_pct": f"{fraction * 100:.1f}" if fraction is not None else None,
        "projected_monthly_cost_change_usd": nanos_to_usd(p.monthly_cost_change_nanos),
        "calls_per_month": p.calls_per_month,
        "reasons": r.reasons,
    }


class PromptVersionCollectionApi(TenantScopedAPIView):
    """A workflow's prompt versions of the tenant (GET), and registering a new one (POST: tenant keys with
    the `manage` scope, tenant admins, operators and platform keys naming the tenant)."""

    parser_classes = [OrjsonParser]
    read_operation = Operation.READ
    write_operation = Operation.MANAGE

    @extend_schema(
        operation_id="prompt_versions_list",
        parameters=[OpenApiParameter("tenant", str, description="Platform callers: the tenant.")],
        responses={200: results_of(PromptVersionOutputSerializer, name="PromptVersionList")},
    )
    def get(self, request: Request, slug: str) -> Response:
        workflow = workflow_required(scope=self.scope, slug=slug)
        versions = list(prompt_versions_of(scope=self.scope, workflow=workflow)[:LIST_MAX])
        reviewer = hooks.prompt_reviewer
        reviews = reviewer.latest(version_ids=[v.pk for v in versions]) if reviewer is not None and versions else {}
        return Response({"results": [version_out(v, reviews.get(v.pk)) for v in versions]})

    @extend_schema(
        operation_id="prompt_versions_create",
        request=PromptVersionInputSerializer,
        responses={201: PromptRegistrationOutputSerializer, 200: PromptRegistrationOutputSerializer},
        examples=[
            OpenApiExample(
                "A CI pipeline registers the prompt it deploys",
                value={
                    "label": "v8",
                    "messages": [{"role": "system", "content": "Summarise the ticket in three lines."}],
                    "model": "gpt-4o",
                    "git_commit": "9f2c1ab",
                },
                request_only=True,
            )
        ],
    )
    def post(self, request: Request, slug: str) -> Response:
        reject_oversized_body(request, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        workflow = workflow_required(scope=self.scope, slug=slug)
        serializer = PromptVersionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        registration = prompt_version_register(
            tenant=self.one_tenant,
            workflow=workflow,
            label=data["label"],
            text=data.get("text"),
            messages=data.get("messages"),
            model_name=data.get("model", ""),
            git_commit=data.get("git_commit", ""),
            actor=self.scope.actor,
        )
        code = status.HTTP_201_CREATED if registration.created else status.HTTP_200_OK
        return Response(registration_out(registration), status=code)
