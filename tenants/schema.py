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
