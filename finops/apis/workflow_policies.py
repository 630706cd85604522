"""A tenant's own rules for a workflow: read them, and set or clear its approval threshold."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from finops.models import TenantWorkflowPolicy, Workflow
from finops.parsers import OrjsonParser
from finops.selectors.workflows import workflow_required
from finops.services.workflow_policies import threshold_parse, workflow_threshold_set
from tenants.errors import ApplicationError, reject_oversized_body
from tenants.scope import Operation
from tenants.scoping import TenantScopedAPIView
from tenants.strict_input import StrictInputSerializer


class WorkflowPolicyInputSerializer(StrictInputSerializer):
    approval_threshold_usd = serializers.CharField(
        allow_null=True,
        allow_blank=True,
        help_text="USD as a string; null clears it. Only lower than the workflow's own threshold.",
    )


class WorkflowPolicyOutputSerializer(serializers.Serializer):
    workflow = serializers.CharField()
    tenant = serializers.CharField()
    workflow_threshold_usd = serializers.CharField(allow_null=True, help_text="The platform's, for every tenant.")
    tenant_threshold_usd = serializers.CharField(allow_null=True, help_text="This tenant's own, stricter one.")
    effective_threshold_usd = serializers.CharField(
        allow_null=True, help_text="Preflight holds a run estimated above this for a person's approval."
    )


def policy_out(workflow: Workflow, tenant_slug: str, policy: TenantWorkflowPolicy | None) -> dict:
    platform = workflow.approval_threshold_usd
    own = policy.approval_threshold_usd if policy is not None else None
    effective = min((t for t in (platform, own) if t is not None), default=None)
    return {
        "workflow": workflow.slug,
        "tenant": tenant_slug,
        "workflow_threshold_usd": str(platform) if platform is not None else None,
        "tenant_threshold_usd": str(own) if own is not None else None,
        "effective_threshold_usd": str(effective) if effective is not None else None,
    }


class WorkflowPolicyApi(TenantScopedAPIView):
    """GET: the thresholds that hold this tenant's runs of the workflow. PUT: set or clear the tenant's
    own (tenant admins, keys with the `manage` scope, operators and platform keys naming the tenant)."""

    parser_classes = [OrjsonParser]
    read_operation = Operation.READ
    write_operation = Operation.MANAGE

    @extend_schema(
        operation_id="workflow_policy_get",
        parameters=[OpenApiParameter("tenant", str, description="Platform callers: the tenant.")],
        responses={200: WorkflowPolicyOutputSerializer},
    )
    def get(self, request: Request, slug: str) -> Response:
        workflow, tenant = workflow_required(scope=self.scope, slug=slug), self.one_tenant
        policy = TenantWorkflowPolicy.objects.filter(tenant=tenant, workflow=workflow).first()
        return Response(policy_out(workflow, tenant.slug, policy))

    @extend_schema(
        operation_id="workflow_policy_set",
        request=WorkflowPolicyInputSerializer,
        responses={200: WorkflowPolicyOutputSerializer},
        examples=[OpenApiExample("Hold runs above 25 cents", value={"approval_threshold_usd": "0.25"})],
    )
    def put(self, request: Request, slug: str) -> Response:
        reject_oversized_body(request, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        workflow, tenant = workflow_required(scope=self.scope, slug=slug), self.one_tenant
        if not isinstance(request.data, dict) or "approval_threshold_usd" not in request.data:
            raise ApplicationError(
                "invalid",
                'Send {"approval_threshold_usd": "0.25"}, or null to clear it.',
                details={"approval_threshold_usd": ["This field is required."]},
            )
        threshold = threshold_parse(request.data["approval_threshold_usd"])
        policy = workflow_threshold_set(tenant=tenant, workflow=workflow, threshold=threshold, actor=self.scope.actor)
        return Response(policy_out(workflow, tenant.slug, policy))
