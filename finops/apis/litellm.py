"""`POST /api/v1/litellm/logs`: the endpoint a LiteLLM proxy's generic_api logging callback posts to."""

from __future__ import annotations

import time

import orjson
from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions

from finops import metrics
from finops.services.foreign_usage import foreign_usage_ingest
from finops.services.litellm import litellm_items, litellm_items_map
from tenants.scope import Operation
from tenants.scoping import TenantScopedAPIView

from .otlp import _RawBody, decoded_body


class LitellmLogsApi(TenantScopedAPIView):
    """LiteLLM StandardLoggingPayload items (json_array, ndjson or single) become usage records."""

    parser_classes = [_RawBody]
    operations = {"POST": Operation.INGEST}
    # Platform keys: each item's tenant comes from LITELLM_TENANT_FIELD (the team alias), or ?tenant=<slug>.
    tenant_required = False

    @extend_schema(
        operation_id="litellm_logs_ingest",
        summary="LiteLLM generic_api callback: logged calls become usage records",
        description=(
            "The body LiteLLM's `generic_api` callback posts: StandardLoggingPayload items as a JSON array "
            "(`log_format: json_array`, the default), one per line (`ndjson`) or one per request (`single`). "
            "200 when every item with usage is stored (now or before), 207 when some were rejected."
        ),
        request={"application/json": {"type": "array", "items": {"type": "object"}}},
        responses={200: OpenApiResponse(description="Counts"), 207: OpenApiResponse(description="Counts and errors")},
    )
    def post(self, request):
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        if content_type not in ("application/json", "application/x-ndjson", "text/plain", ""):
            raise exceptions.UnsupportedMediaType(request.content_type)
        started = time.perf_counter()
        body = decoded_body(request, settings.USAGE_MAX_BODY_BYTES)
        batch = litellm_items_map(litellm_items(body), tenant_bound=self.scope.tenant is not None)
        result = foreign_usage_ingest(batch=batch, bound_tenant=self.scope.tenant, api_key=self.api_key)
        metrics.foreign_ingest_observed("litellm", result, time.perf_counter() - started)
        answer = {
            "accepted": result.accepted,
            "duplicate": result.duplicate,
            "rejected": result.rejected,
            "skipped": result.skipped,
            "errors": result.errors[:100],
        }
        return HttpResponse(
            orjson.dumps(answer), status=207 if result.rejected else 200, content_type="application/json"
        )
