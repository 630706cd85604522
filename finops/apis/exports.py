from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema

from finops.exports import FocusExportParams, focus_csv, focus_rows
from finops.models import Environment
from tenants.scoping import TenantScopedAPIView


class FocusExportApi(TenantScopedAPIView):
    """Usage of one tenant as FinOps FOCUS rows, streamed as CSV."""

    def perform_content_negotiation(self, request, force=False):
        # The body is CSV whatever the client accepts ("Accept: text/csv" included); errors stay JSON.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="exports_focus",
        summary="FOCUS export of usage (CSV)",
        description=(
            "One row per usage record with FinOps FOCUS 1.x column names: the tenant is the billing account, "
            "the call the resource (ResourceId = request_id), the model the service and SKU; the charge period "
            "is the hour of the call and the billing period its calendar month (UTC). Costs are exact decimal "
            "USD with nine places and empty for records not priced yet. Tags hold the record's tags and ours "
            "(`x_environment`, `x_workflow`, `x_tokens_*`). At most 93 days per request."
        ),
        parameters=[
            OpenApiParameter("tenant", OpenApiTypes.STR, description="Tenant slug (platform keys and operators)."),
            OpenApiParameter(
                "start",
                OpenApiTypes.STR,
                description="ISO date or datetime (UTC unless an offset is given); default 30 days before end.",
            ),
            OpenApiParameter(
                "end", OpenApiTypes.STR, description="ISO date (that day included) or datetime (excluded); default now."
            ),
            OpenApiParameter("workflow", OpenApiTypes.STR, description="Workflow slug."),
            OpenApiParameter("environment", OpenApiTypes.STR, enum=Environment.values),
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="FOCUS rows as CSV"),
            400: OpenApiResponse(description="Bad dates, a range over 93 days, or no tenant named"),
            404: OpenApiResponse(description="Unknown tenant, or one the caller may not see"),
        },
    )
    def get(self, request):
        params = FocusExportParams.from_query(request.query_params)
        rows = focus_rows(
            scope=self.scope,
            start=params.start,
            end=params.end,
            workflow=params.workflow,
            environment=params.environment,
        )
        response = StreamingHttpResponse(focus_csv(rows), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{params.filename(self.one_tenant.slug)}"'
        return response
