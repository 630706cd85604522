from django.conf import settings
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from finops import tokens
from finops.parsers import OrjsonParser
from finops.pricing import nanos_to_usd
from tenants.authentication import ApiKeyRateThrottle
from tenants.errors import reject_oversized_body
from tenants.scoping import IsAuthenticatedCaller
from tenants.strict_input import StrictInputSerializer


class _StrictCharField(serializers.CharField):
    """A CharField that refuses numbers instead of turning them into strings."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# Documents the message shape in the schema only; finops.tokens.count_messages validates messages.
class ChatMessageSerializer(serializers.Serializer):
    """One chat message as OpenAI's chat API takes it; other fields (tool_call_id, tool_calls) count too."""

    role = serializers.CharField(help_text="system, user, assistant, tool, …")
    content = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text='A string, null, or a list of parts such as {"type": "text", "text": "…"}; '
        "non-text parts are skipped and make the count an estimate.",
    )
    name = serializers.CharField(required=False)


@extend_schema_field(ChatMessageSerializer(many=True))
class _MessagesField(serializers.ListField):
    child = serializers.DictField()


class TokenCountInputSerializer(StrictInputSerializer):
    model = _StrictCharField(
        max_length=200, trim_whitespace=False, help_text="Model name as you would send it to the provider."
    )
    text = _StrictCharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=tokens.MAX_TEXT_CHARS,
        help_text="Plain text to count. Special-token markers such as <|endoftext|> count as ordinary text.",
    )
    messages = _MessagesField(required=False, help_text="OpenAI-style chat messages.")

    def validate(self, attrs):
        if ("text" in attrs) == ("messages" in attrs):
            raise ValidationError("Send exactly one of text or messages.")
        return attrs


class TokenCountOutputSerializer(serializers.Serializer):
    model = serializers.CharField(help_text="The model name as sent.")
    resolved_model = serializers.CharField(allow_null=True, help_text="Canonical catalog name; null if unknown.")
    tokens = serializers.IntegerField()
    encoding = serializers.CharField(help_text="tiktoken encoding used (o200k_base or cl100k_base).")
    estimated = serializers.BooleanField(help_text="True unless the model tokenizes exactly like this encoding.")
    priced = serializers.BooleanField()
    input_cost_usd = serializers.CharField(allow_null=True, help_text="Cost as uncached input, 9 decimal places.")
    price_per_mtok_usd = serializers.CharField(allow_null=True, help_text="Input price in USD per 1M tokens.")


class TokenCountApi(APIView):
    """Count the tokens of text or chat messages for a model and price them as input at today's price."""

    parser_classes = [OrjsonParser]
    # Any key or signed-in person may count: nothing tenant-specific is read or written, so this route
    # is classified public (tests/tenants/test_route_walk.py) and needs no tenant scope.
    permission_classes = [IsAuthenticatedCaller]
    throttle_classes = [ApiKeyRateThrottle]

    @extend_schema(
        operation_id="tokens_count",
        request=TokenCountInputSerializer,
        responses={200: TokenCountOutputSerializer},
        examples=[
            OpenApiExample("Text", value={"model": "gpt-4o", "text": "hello world"}, request_only=True),
            OpenApiExample(
                "Messages",
                value={"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}]},
                request_only=True,
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        reject_oversized_body(request, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        serializer = TokenCountInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            estimate = tokens.input_cost_estimate(
                model_name=data["model"], text=data.get("text"), messages=data.get("messages")
            )
        except tokens.TokenInputInvalid as exc:
            raise ValidationError({exc.field: [str(exc)]}) from exc
        count = estimate.count
        price = estimate.price_per_mtok_usd
        return Response(
            {
                "model": data["model"],
                "resolved_model": estimate.resolved_model,
                "tokens": count.tokens,
                "encoding": count.encoding,
                "estimated": count.estimated,
                "priced": estimate.priced,
                "input_cost_usd": nanos_to_usd(estimate.cost_nanos),
                "price_per_mtok_usd": None if price is None else f"{price:.6f}",
            }
        )
