import time

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from budgets.services.preflight import PreflightInput, PreflightInputError, preflight_decide
from finops import metrics, tokens
from finops.apis.tokens import _MessagesField, _StrictCharField
from finops.models import Channel, Environment
from finops.parsers import OrjsonParser
from finops.renderers import OrjsonRenderer
from finops.services.usage_validation import MAX_TOKENS
from tenants.errors import reject_oversized_body
from tenants.scope import Operation
from tenants.scoping import TenantScopedAPIView
from tenants.strict_input import StrictInputSerializer, StrictUUIDField


class PreflightInputSerializer(StrictInputSerializer):
    tenant = _StrictCharField(
        required=False,
        max_length=64,
        help_text="Tenant slug; platform keys must send it, tenant keys may leave it out.",
    )
    workflow = _StrictCharField(required=False, max_length=100, help_text="Workflow slug.")
    model = _StrictCharField(max_length=200, help_text="The model the service intends to call.")
    environment = serializers.ChoiceField(choices=Environment.choices, default=Environment.PROD)
    input_tokens = serializers.IntegerField(required=False, min_value=0, max_value=MAX_TOKENS)
    prompt = _StrictCharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=tokens.MAX_TEXT_CHARS,
        help_text="Prompt text, counted with tiktoken and never stored.",
    )
    messages = _MessagesField(required=False, help_text="OpenAI-style chat messages, counted with tiktoken.")
    max_output_tokens = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_TOKENS,
        help_text="When missing: the model's output limit, capped by PREFLIGHT_DEFAULT_MAX_OUTPUT_TOKENS.",
    )
    approval_id = StrictUUIDField(required=False, help_text="An approved request from an earlier answer.")
    prompt_version = _StrictCharField(
        required=False,
        max_length=100,
        help_text="The label of the workflow's prompt version the call sends: under review answers "
        "needs_approval, rejected answers deny.",
    )

    service_tier = serializers.ChoiceField(
        choices=["standard", "default", "batch", "flex", "priority"],
        default="standard",
        help_text="The service tier the call will use; the estimate is priced for it (default = standard).",
    )
    channel = serializers.ChoiceField(
        choices=Channel.choices,
        required=False,
        help_text="Where the model is called; default from the model name.",
    )
    may_write_cache = serializers.BooleanField(
        default=False,
        help_text="The call may write prompt cache: input is estimated at the dearest cache-write price.",
    )

    def validate(self, attrs):
        given = [k for k in ("input_tokens", "prompt", "messages") if k in attrs]
        if len(given) != 1:
            raise ValidationError("Send exactly one of input_tokens, prompt or messages.")
        if attrs.get("prompt_version") and not attrs.get("workflow"):
            raise ValidationError({"prompt_version": ["A prompt version belongs to a workflow: send workflow too."]})
        return attrs


_MISSING = object()
_TEXT_LIMITS = {"tenant": 64, "workflow": 100, "model": 200, "prompt_version": 100}
_ENVIRONMENTS = frozenset(Environment.values)
_SERVICE_TIERS = frozenset(PreflightInputSerializer._declared_fields["service_tier"].choices)  # type: ignore[attr-defined]
_CHANNELS = frozenset(Channel.values)
_SERIALIZER_ONLY = ("prompt", "messages", "approval_id")  # text to count, an approval: rarer, checked in full


def preflight_input_fast(data) -> dict | None:
    """The common body (a counted call: slugs, model, input_tokens, limits) checked in plain Python, with
    the result PreflightInputSerializer would give; None for anything else, which the serializer then
    checks and answers with its own errors. So the contract (what is accepted, every error and its
    message) stays the serializer's, and the usual request skips DRF's field machinery (about a fifth
    of a ceiling request's CPU, bench/preflight.py --profile). tests/budgets/test_preflight_input.py
    checks against the serializer that whatever this accepts, the serializer accepts the same way."""
    if type(data) is not dict or any(name in data for name in _SERIALIZER_ONLY):
        return None
    out: dict = {}
    for name, limit in _TEXT_LIMITS.items():
        value = data.get(name, _MISSING)
        if value is _MISSING:
            continue
        # Printable ASCII without surrounding spaces: what the trimming CharField keeps as it is.
        if not (
            type(value) is str
            and 0 < len(value) <= limit
            and value.isascii()
            and value.isprintable()
            and value[0] != " "
            and value[-1] != " "
        ):
            return None
        out[name] = value
    tokens_in, tokens_out = data.get("input_tokens"), data.get("max_output_tokens", _MISSING)
    if "model" not in out or type(tokens_in) is not int or not 0 <= tokens_in <= MAX_TOKENS:
        return None
    out["input_tokens"] = tokens_in
    if tokens_out is not _MISSING:
        if type(tokens_out) is not int or not 1 <= tokens_out <= MAX_TOKENS:
            return None
        out["max_output_tokens"] = tokens_out
    environment = data.get("environment", Environment.PROD.value)
    tier = data.get("service_tier", "standard")
    channel = data.get("channel", _MISSING)
    may_write_cache = data.get("may_write_cache", False)
    if (
        type(environment) is not str
        or environment not in _ENVIRONMENTS
        or type(tier) is not str
        or tier not in _SERVICE_TIERS
        or type(may_write_cache) is not bool
        or (channel is not _MISSING and (type(channel) is not str or channel not in _CHANNELS))
        or ("prompt_version" in out and "workflow" not in out)
    ):
        return None
    out.update(environment=environment, service_tier=tier, may_write_cache=may_write_cache)
    if channel is not _MISSING:
        out["channel"] = channel
    return out


class BudgetHeadroomSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    metric = serializers.CharField(help_text="cost (amounts are USD strings) or tokens (integers).")
    period = serializers.CharField()
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField()
    platform_wide = serializers.BooleanField(help_text="A budget over every tenant (its totals are the operators').")
    spent = serializers.CharField(allow_null=True, help_text="Null for a platform-wide budget seen by a tenant.")
    reserved = serializers.CharField(allow_null=True, help_text="Held by preflights, this one included.")
    soft_limit = serializers.CharField(allow_null=True)
    hard_limit = serializers.CharField(allow_null=True)
    remaining = serializers.CharField(allow_null=True, help_text="Headroom under the hard limit.")
    hard_action = serializers.CharField()


class PreflightOutputSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["allow", "needs_approval", "deny"])
    requested_model = serializers.CharField()
    model = serializers.CharField(help_text="The model to call: the requested one or a cheaper substitute.")
    input_tokens = serializers.IntegerField()
    input_tokens_estimated = serializers.BooleanField()
    max_output_tokens = serializers.IntegerField(help_text="Send this as the call's output limit.")
    compress_context = serializers.BooleanField()
    target_input_tokens = serializers.IntegerField(allow_null=True, help_text="Shrink the input to this size.")
    estimated_cost_usd = serializers.CharField(allow_null=True)
    reservation_id = serializers.UUIDField(allow_null=True, help_text="Send it with the call's usage record.")
    reservation_expires_at = serializers.DateTimeField(allow_null=True)
    approval_id = serializers.UUIDField(allow_null=True)
    approval_status = serializers.CharField(allow_null=True)
    budgets = BudgetHeadroomSerializer(many=True)
    controls = serializers.ListField(child=serializers.DictField())
    reasons = serializers.ListField(child=serializers.CharField())
    input_safety_factor = serializers.CharField(
        allow_null=True, help_text="The factor a tiktoken estimate of a non-OpenAI model's input was multiplied by."
    )


class PreflightApi(TenantScopedAPIView):
    """Ask before an LLM call: allow (with a reservation), needs_approval, or deny, and on what terms."""

    parser_classes = [OrjsonParser]
    renderer_classes = [OrjsonRenderer, BrowsableAPIRenderer]
    write_operation = Operation.PREFLIGHT
    # Platform keys name the tenant in the body; a tenant key naming another tenant answers 404.
    tenant_from_body = True

    @extend_schema(
        operation_id="preflight",
        request=PreflightInputSerializer,
        responses={200: PreflightOutputSerializer},
        examples=[
            OpenApiExample(
                "Counted input",
                value={
                    "workflow": "ticket-summary",
                    "model": "gpt-4o",
                    "environment": "prod",
                    "input_tokens": 1200,
                    "max_output_tokens": 400,
                },
                request_only=True,
            ),
            OpenApiExample(
                "Messages",
                value={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarise this ticket"}]},
                request_only=True,
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        reject_oversized_body(request, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        data = preflight_input_fast(request.data)
        if data is None:
            serializer = PreflightInputSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
        started = time.perf_counter()
        try:
            decision = preflight_decide(
                PreflightInput(
                    tenant=self.one_tenant,
                    workflow=data.get("workflow"),
                    model=data["model"],
                    environment=data["environment"],
                    input_tokens=data.get("input_tokens"),
                    prompt=data.get("prompt"),
                    messages=data.get("messages"),
                    max_output_tokens=data.get("max_output_tokens"),
                    approval_id=str(data["approval_id"]) if data.get("approval_id") else None,
                    prompt_version=data.get("prompt_version") or None,
                    api_key=self.api_key,
                    platform_caller=self.scope.is_platform,
                    requested_by=self.scope.actor.actor_user,
                    service_tier="standard" if data["service_tier"] == "default" else data["service_tier"],
                    channel=data.get("channel"),
                    may_write_cache=data["may_write_cache"],
                )
            )
        except PreflightInputError as exc:
            raise ValidationError({exc.field: [str(exc)]}) from exc
        metrics.preflight_observed(decision.decision, time.perf_counter() - started)
        # The output serializer documents the shape; the dict is rendered as is (token amounts stay integers).
        return Response(decision.as_dict())
