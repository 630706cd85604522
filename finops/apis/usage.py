import time

import orjson
from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.response import Response

from finops import metrics
from finops.parsers import OrjsonParser
from finops.pricing import nanos_to_usd
from finops.selectors.usage import UsageFilter, usage_list
from finops.serializers import (
    IngestResponseSerializer,
    UsageBatchInputSerializer,
    UsageRecordSerializer,
)
from finops.services.ingest import ACCEPTED, CONFLICT, DUPLICATE, REJECTED, usage_ingest
from tenants.errors import ApplicationError, reject_oversized_body
from tenants.schema import results_of
from tenants.scope import Operation
from tenants.scoping import TenantScopedAPIView
from tenants.strict_input import StrictCursorPagination


class UsageCursorPagination(StrictCursorPagination):
    ordering = ("-occurred_at", "-id")
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class UsageCollectionApi(TenantScopedAPIView):
    """POST reports LLM calls (ingest scope); GET lists them (read scope)."""

    parser_classes = [OrjsonParser]
    operations = {"POST": Operation.INGEST}
    # Platform keys and operators ingest without naming a tenant: each record names its own.
    tenant_required = False

    @extend_schema(
        operation_id="usage_ingest",
        summary="Report LLM usage",
        description=(
            'One record, or `{"records": [...]}` with up to USAGE_MAX_RECORDS_PER_REQUEST records. Each item '
            "answers accepted, duplicate (same request_id and content: nothing changes), conflict (same "
            "request_id, other content: nothing changes) or rejected with field errors. Valid items are stored "
            "even when others are rejected. 200 when every item is stored, 207 otherwise."
        ),
        request=UsageBatchInputSerializer,
        responses={
            200: IngestResponseSerializer,
            207: IngestResponseSerializer,
            400: OpenApiResponse(description="Malformed body or too many records"),
            413: OpenApiResponse(description="Body too large"),
            415: OpenApiResponse(description="Not application/json"),
        },
    )
    def post(self, request):
        reject_oversized_body(request, settings.USAGE_MAX_BODY_BYTES, hint="Send smaller batches.")
        if not (request.content_type or "").startswith("application/json"):
            raise exceptions.UnsupportedMediaType(request.content_type or "(none)")
        records = _records_from_body(request.data)
        started = time.perf_counter()
        result = usage_ingest(records=records, bound_tenant=self.scope.tenant, api_key=self.api_key)
        metrics.ingest_observed("api", result, time.perf_counter() - started)
        body = {
            ACCEPTED: result.count(ACCEPTED),
            DUPLICATE: result.count(DUPLICATE),
            CONFLICT: result.count(CONFLICT),
            REJECTED: result.count(REJECTED),
            "items": [
                {
                    "index": item.index,
                    "status": item.status,
                    "request_id": item.request_id,
                    "id": item.id,
                    "cost_usd": nanos_to_usd(item.cost_nanos),
                    "priced": item.priced,
                    "errors": item.errors,
                }
                for item in result.items
            ],
        }
        # The response is built straight from plain values; DRF's renderer would re-walk 1,000 dicts.
        return HttpResponse(
            orjson.dumps(body), status=200 if result.all_stored else 207, content_type="application/json"
        )

    @extend_schema(
        operation_id="usage_list",
        summary="List usage records",
        parameters=[
            OpenApiParameter("tenant", OpenApiTypes.STR, description="Tenant slug (platform keys and operators)."),
            OpenApiParameter("page_size", OpenApiTypes.INT, description="Up to 1000; default 100."),
        ],
        responses=results_of(UsageRecordSerializer, name="UsageRecordList", cursor=True),
    )
    def get(self, request):
        if self.scope.tenant is None:
            raise ApplicationError("tenant_required", "Name the tenant with ?tenant=<slug>.")
        filterset = UsageFilter(request.query_params, queryset=usage_list(scope=self.scope))
        if not filterset.is_valid():
            raise exceptions.ValidationError(filterset.errors)
        paginator = UsageCursorPagination()
        page = paginator.paginate_queryset(filterset.qs, request, view=self)
        return paginator.get_paginated_response(UsageRecordSerializer(page, many=True).data)

    # Documented filters for the GET (drf-spectacular reads them from here).
    filterset_class = UsageFilter


def _records_from_body(data) -> list:
    if isinstance(data, dict) and "records" in data:
        extra = set(data) - {"records"}
        if extra:
            raise ApplicationError(
                "invalid_body", f"A batch holds only 'records'; move {', '.join(sorted(extra))} into each record."
            )
        records = data["records"]
        if not isinstance(records, list):
            raise ApplicationError("invalid_body", "'records' must be a list of usage records.")
    elif isinstance(data, dict):
        records = [data]
    else:
        raise ApplicationError("invalid_body", 'Send one usage record object, or {"records": [...]}.')
    if not records:
        raise ApplicationError("invalid_body", "'records' is empty: send at least one usage record.")
    limit = settings.USAGE_MAX_RECORDS_PER_REQUEST
    if len(records) > limit:
        raise ApplicationError(
            "too_many_records", f"{len(records):,} records in one request; the limit is {limit:,}. Split the batch."
        )
    return records


class UsageDetailApi(TenantScopedAPIView):
    lookup_kwarg = "record_id"

    @extend_schema(operation_id="usage_retrieve", summary="One usage record", responses=UsageRecordSerializer)
    def get(self, request, record_id: int):
        record = self.object_in_scope(usage_list(scope=self.scope))
        return Response(UsageRecordSerializer(record).data)
