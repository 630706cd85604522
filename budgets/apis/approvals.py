from __future__ import annotations

from decimal import Decimal

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from budgets.models import ApprovalRequest
from budgets.selectors import approvals_scoped
from budgets.services.approvals import approval_ask, approval_cancel, approval_decide
from finops.catalog import get_catalog
from finops.models import Environment
from finops.parsers import OrjsonParser
from finops.pricing import NANOS_PER_USD, nanos_to_usd
from finops.selectors.workflows import workflows_visible
from finops.services.usage_validation import MAX_TOKENS
from tenants.errors import ApplicationError
from tenants.schema import results_of
from tenants.scope import Operation
from tenants.scoping import TenantScopedAPIView

from .base import by_slug


class ApprovalAskSerializer(serializers.Serializer):
    workflow = serializers.SlugField(required=False, allow_null=True, help_text="Workflow slug; empty = none.")
    model = serializers.CharField(max_length=200, help_text="The model the run will call.")
    environment = serializers.ChoiceField(choices=Environment.choices, default=Environment.PROD)
    max_cost_usd = serializers.DecimalField(
        max_digits=14, decimal_places=9, required=False, min_value=Decimal("0.000000001"),
        help_text="The most the run may cost: a preflight presenting the approval must stay under it.",
    )
    max_tokens = serializers.IntegerField(required=False, min_value=1, max_value=MAX_TOKENS)
    justification = serializers.CharField(max_length=2000, help_text="Why the run is needed.")


class ApprovalDecisionSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class ApprovalOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.CharField()
    tenant = serializers.CharField()
    workflow = serializers.CharField(allow_null=True)
    model = serializers.CharField(allow_null=True)
    environment = serializers.CharField()
    estimated_cost_usd = serializers.CharField(allow_null=True, help_text="The approved amount (the binding).")
    estimated_tokens = serializers.IntegerField(allow_null=True)
    justification = serializers.CharField()
    requested_by = serializers.CharField(allow_null=True, help_text="The person behind the request.")
    requested_by_key = serializers.CharField(allow_null=True, help_text="Prefix of the requesting key.")
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
        "estimated_tokens": a.estimated_tokens,
        "justification": a.justification,
        "requested_by": a.requested_by.get_username() if a.requested_by is not None else None,
        "requested_by_key": a.requested_by_key.prefix if a.requested_by_key is not None else None,
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

    parser_classes = [OrjsonParser]
    tenant_required = False
    write_operation = Operation.DECIDE

    def queryset(self):
        return approvals_scoped(scope=self.scope)


class ApprovalCollectionApi(_ApprovalsBase):
    """Approval requests (newest first), and asking for a run ahead of time."""

    # Asking is what a service (or the tenant's admin) does before a run, like a preflight.
    operations = {"POST": Operation.PREFLIGHT}

    @extend_schema(
        operation_id="approvals_list",
        parameters=[
            OpenApiParameter("tenant", str, description="Platform callers: one tenant's requests."),
            OpenApiParameter("status", str, enum=ApprovalRequest.Status.values),
            OpenApiParameter("kind", str, enum=ApprovalRequest.Kind.values),
            OpenApiParameter("workflow", str, description="Workflow slug."),
        ],
        responses={200: results_of(ApprovalOutputSerializer, name="ApprovalList")},
    )
    def get(self, request: Request) -> Response:
        approvals = self.queryset()
        for name, choices in (("status", ApprovalRequest.Status.values), ("kind", ApprovalRequest.Kind.values)):
            wanted = request.query_params.get(name)
            if wanted:
                if wanted not in choices:
                    raise ApplicationError(
                        "invalid", f"Unknown {name} '{wanted}'.", details={name: [f"One of {', '.join(choices)}."]}
                    )
                approvals = approvals.filter(**{name: wanted})
        if request.query_params.get("workflow"):
            approvals = approvals.filter(workflow__slug=request.query_params["workflow"])
        return Response({"results": [approval_out(a) for a in approvals[:500]]})

    @extend_schema(
        operation_id="approvals_create",
        request=ApprovalAskSerializer,
        responses={201: ApprovalOutputSerializer},
        examples=[
            OpenApiExample(
                "A nightly batch asks ahead",
                value={
                    "workflow": "nightly-reindex",
                    "model": "gpt-4o",
                    "max_cost_usd": "40.00",
                    "justification": "Re-index after the schema change (TICKET-812).",
                },
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = ApprovalAskSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        model = get_catalog().resolve(data["model"])
        if model is None:
            raise ApplicationError(
                "invalid", f"No model '{data['model']}' in the catalog.", details={"model": ["Unknown model."]}
            )
        cost = data.get("max_cost_usd")
        approval = approval_ask(
            tenant=self.one_tenant,
            workflow=by_slug(workflows_visible(scope=self.scope), data.get("workflow"), "workflow"),
            model_id=model.id,
            environment=data["environment"],
            max_cost_nanos=int(cost * NANOS_PER_USD) if cost is not None else None,
            max_tokens=data.get("max_tokens"),
            justification=data["justification"],
            actor=self.scope.actor,
        )
        return Response(approval_out(self.queryset().get(pk=approval.pk)), status=status.HTTP_201_CREATED)


class _OneApproval(_ApprovalsBase):
    lookup_kwarg = "approval_id"

    def approval(self, approval_id) -> ApprovalRequest:
        return self.object_in_scope(self.queryset())


class ApprovalDetailApi(_OneApproval):
    """One request; a service polls it after `needs_approval` (any key of the tenant may)."""

    operations = {"GET": Operation.FOLLOW_APPROVAL}

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


class ApprovalCancelApi(_OneApproval):
    """Withdraw a request: only whoever asked (the same key, or the same person) may."""

    write_operation = Operation.PREFLIGHT

    @extend_schema(operation_id="approvals_cancel", request=None, responses={200: ApprovalOutputSerializer})
    def post(self, request: Request, approval_id) -> Response:
        approval = approval_cancel(approval=self.approval(approval_id), actor=self.scope.actor)
        return Response(approval_out(approval))
