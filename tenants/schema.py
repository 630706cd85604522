from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Documents `Authorization: Bearer <key>` in the OpenAPI schema (loaded in TenantsConfig.ready)."""

    target_class = "tenants.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "tsk_<prefix>_<secret>",
            "description": "An API key from `manage.py create_api_key`; scopes ingest, preflight, read, manage.",
        }


# --- What every operation may answer, and list answers as they really are -----------------------------------

ERROR_SCHEMA = {
    "type": "object",
    "description": "The one error shape of the API: a stable machine-readable `code` and a human `message`.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "example": "invalid"},
                "message": {"type": "string"},
                "details": {"description": "Field errors or other detail; absent when there is none."},
            },
        }
    },
}
_ERRORS = {
    "400": "Bad input (malformed JSON, invalid fields, a bad query parameter).",
    "401": "No API key or session, or the key is not valid.",
    "403": "The key's scopes or the person's role do not allow this.",
    "404": "No such object (another tenant's objects answer the same).",
    "429": "Over the key's request rate; see Retry-After.",
    "503": "A dependency (the database) is not answering; retry after Retry-After.",
}
_BODY_ERRORS = {"413": "The body is too large.", "415": "The body's content type is not accepted."}
_METHODS = ("get", "put", "post", "patch", "delete")


def add_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: every API operation documents the JSON error answers it can
    give (DESIGN.md section 7), so a client generated from the schema, and Schemathesis, expect them."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("Error", ERROR_SCHEMA)
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, item in result.get("paths", {}).items():
        if not path.startswith("/api/v1/"):
            continue
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            errors = dict(_ERRORS)
            if "requestBody" in operation or method in ("post", "put", "patch"):
                errors.update(_BODY_ERRORS)
            for code, description in errors.items():
                response = responses.setdefault(code, {"description": description})
                # The OTLP receiver answers in OTLP's own shapes (protobuf or JSON Status), as its spec says.
                if "content" not in response and "/otlp/" not in path:
                    response["content"] = ref
    return result


def results_of(serializer_class, *, name: str, cursor: bool = False):
    """The schema of a list answer: `{"results": [...]}`, with `next`/`previous` cursor links when paged."""
    from drf_spectacular.utils import inline_serializer
    from rest_framework import serializers

    fields = {"results": serializer_class(many=True)}
    if cursor:
        fields["next"] = serializers.URLField(allow_null=True, help_text="The next page, or null.")
        fields["previous"] = serializers.URLField(allow_null=True, help_text="The previous page, or null.")
    return inline_serializer(name=name, fields=fields)
