from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from budgets.models import ApprovalRequest
from budgets.selectors import approvals_scoped
from budgets.services.approvals import approval_decide
from finops.pricing import nanos_to_usd
from tenants.errors import ApplicationError
from tenants.scope import Operation
from tenants.scoping import TenantScopedAPIView


class ApprovalDecisionSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class ApprovalOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.CharField()
    tenant = serializers.CharField()
    workflow = serializers.CharField(allow_null=True)
    model = serializers.CharField(allow_null=True)
    environment = serializers.CharField()
    estimated_cost_usd = serializers.CharField(allow_null=True)
    reasons = serializers.ListField(child=serializers.CharField())
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    decided_by = serializers.CharField(allow_null=True)
    decided_at = serializers.DateTimeField(allow_null=True)
    comment = serializers.CharField()


def approval_out(a: ApprovalRequest) -> dict:
    return {
        "id": a.pk,
        "kind": a.kind,
        "tenant": a.tenant.slug,
        "workflow": a.workflow.slug if a.workflow is not None else None,
        "model": a.model.name if a.model is not None else None,
        "environment": a.environment,
        "estimated_cost_usd": nanos_to_usd(a.estimated_cost_nanos),
        "reasons": a.reasons,
        "status": a.status,
        "created_at": a.created_at,
        "expires_at": a.expires_at,
        "decided_by": a.decided_by.get_username() if a.decided_by is not None else None,
        "decided_at": a.decided_at,
        "comment": a.comment,
    }


class _ApprovalsBase(TenantScopedAPIView):
    """Only people decide (approvers and admins of the tenant, and operators): a service's key cannot
    approve its own run."""

    parser_classes = [JSONParser]
    tenant_required = False
    write_operation = Operation.DECIDE

    def queryset(self):
        return approvals_scoped(scope=self.scope)


class ApprovalCollectionApi(_ApprovalsBase):
    """Approval requests opened by preflight (pending first)."""

    @extend_schema(
        operation_id="approvals_list",
        parameters=[
            OpenApiParameter("tenant", str, description="Platform callers: one tenant's requests."),
            OpenApiParameter("status", str, description="pending, approved, rejected, expired or consumed."),
        ],
        responses={200: ApprovalOutputSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        approvals = self.queryset()
        wanted = request.query_params.get("status")
        if wanted:
            if wanted not in ApprovalRequest.Status.values:
                raise ApplicationError("invalid", f"Unknown status '{wanted}'.")
            approvals = approvals.filter(status=wanted)
        return Response({"results": [approval_out(a) for a in approvals[:500]]})


class _OneApproval(_ApprovalsBase):
    lookup_kwarg = "approval_id"

    def approval(self, approval_id) -> ApprovalRequest:
        return self.object_in_scope(self.queryset())


class ApprovalDetailApi(_OneApproval):
    @extend_schema(operation_id="approvals_retrieve", responses={200: ApprovalOutputSerializer})
    def get(self, request: Request, approval_id) -> Response:
        return Response(approval_out(self.approval(approval_id)))


class ApprovalDecideApi(_OneApproval):
    """Approve or reject a pending request. Only people decide: a service cannot approve its own run."""

    approve = True

    @extend_schema(request=ApprovalDecisionSerializer, responses={200: ApprovalOutputSerializer})
    def post(self, request: Request, approval_id) -> Response:
        approval = self.approval(approval_id)
        serializer = ApprovalDecisionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        approval = approval_decide(
            approval=approval,
            approve=self.approve,
            actor=self.scope.actor,
            comment=serializer.validated_data.get("comment", ""),
        )
        return Response(approval_out(approval))
