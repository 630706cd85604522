from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from budgets.models import Control, ControlKind
from budgets.policy import PRIORITIES
from budgets.selectors import controls_visible
from budgets.services.controls import active_controls_q, control_end, control_start
from finops.models import Environment
from finops.parsers import OrjsonParser
from finops.selectors.catalog import model_tiers
from finops.selectors.workflows import workflows_visible
from tenants.errors import ApplicationError
from tenants.schema import results_of
from tenants.scope import Operation
from tenants.scoping import TenantScopedAPIView
from tenants.strict_input import StrictInputSerializer, query_bool

from .base import by_slug


class ControlInputSerializer(StrictInputSerializer):
    kind = serializers.ChoiceField(choices=ControlKind.choices)
    tenant = serializers.SlugField(required=False, allow_null=True, help_text="Empty = every tenant.")
    workflow = serializers.SlugField(required=False, allow_null=True)
    environment = serializers.ChoiceField(choices=Environment.choices, required=False, allow_blank=True)
    tier = serializers.SlugField(required=False, allow_null=True)
    priorities = serializers.ListField(child=serializers.ChoiceField(choices=PRIORITIES), required=False)
    params = serializers.DictField(required=False)
    reason = serializers.CharField(max_length=2000)
    ends_at = serializers.DateTimeField(required=False, allow_null=True, help_text="Empty = until ended.")


class ControlEndSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


class ControlOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    tenant = serializers.CharField(allow_null=True)
    workflow = serializers.CharField(allow_null=True)
    environment = serializers.CharField()
    tier = serializers.CharField(allow_null=True)
    scope = serializers.CharField()
    priorities = serializers.ListField(child=serializers.CharField())
    params = serializers.DictField()
    # The serializer metaclass moves declared fields off the class; Field.source is still set per instance.
    source = serializers.CharField()  # type: ignore[assignment]
    budget_id = serializers.IntegerField(allow_null=True)
    rung = serializers.CharField()
    reason = serializers.CharField()
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField(allow_null=True)
    ended_reason = serializers.CharField()
    active = serializers.BooleanField()


def control_out(control: Control, now) -> dict:
    return {
        "id": control.pk,
        "kind": control.kind,
        "tenant": control.tenant.slug if control.tenant is not None else None,
        "workflow": control.workflow.slug if control.workflow is not None else None,
        "environment": control.environment,
        "tier": control.tier.slug if control.tier is not None else None,
        "scope": control.scope_label(),
        "priorities": control.priorities,
        "params": control.params,
        "source": control.source,
        "budget_id": control.budget_id,
        "rung": control.rung,
        "reason": control.reason,
        "starts_at": control.starts_at,
        "ends_at": control.ends_at,
        "ended_reason": control.ended_reason,
        "active": control.starts_at <= now and (control.ends_at is None or control.ends_at > now),
    }


class _ControlsBase(TenantScopedAPIView):
    """Everyone with read access lists controls; only operators and platform keys start or end them
    (a manual control can stop a tenant's traffic)."""

    parser_classes = [OrjsonParser]
    tenant_required = False
    write_operation = Operation.MANAGE_CONTROLS

    def queryset(self):
        return controls_visible(scope=self.scope)


class ControlCollectionApi(_ControlsBase):
    """Controls in force (and past ones); operators add manual controls."""

    @extend_schema(
        operation_id="controls_list",
        parameters=[
            OpenApiParameter("tenant", str, description="Platform callers: one tenant's controls."),
            OpenApiParameter("active", bool, description="true: only controls in force now."),
        ],
        responses={200: results_of(ControlOutputSerializer, name="ControlList")},
    )
    def get(self, request: Request) -> Response:
        now = timezone.now()
        controls = self.queryset()
        if query_bool(request.query_params, "active"):
            controls = controls.filter(active_controls_q(now))
        return Response({"results": [control_out(c, now) for c in controls[:500]]})

    @extend_schema(
        operation_id="controls_create",
        request=ControlInputSerializer,
        responses={201: ControlOutputSerializer},
        examples=[
            OpenApiExample(
                "Cap output for one tenant",
                value={
                    "kind": "cap_output_tokens",
                    "tenant": "acme",
                    "params": {"max_output_tokens": 512},
                    "reason": "Runaway summaries, INC-1234",
                },
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = ControlInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        now = timezone.now()
        if data.get("ends_at") and data["ends_at"] <= now:
            raise ApplicationError("invalid", "ends_at must be in the future.", details={"ends_at": ["In the past."]})
        control = control_start(
            kind=data["kind"],
            tenant=by_slug(self.scope.tenants(), data.get("tenant"), "tenant"),
            workflow=by_slug(workflows_visible(scope=self.scope), data.get("workflow"), "workflow"),
            environment=data.get("environment") or "",
            tier=by_slug(model_tiers(), data.get("tier"), "tier"),
            priorities=data.get("priorities", []),
            params=data.get("params", {}),
            source=Control.Source.MANUAL,
            reason=data["reason"],
            starts_at=now,
            ends_at=data.get("ends_at"),
            actor=self.scope.actor,
        )
        return Response(control_out(control, now), status=status.HTTP_201_CREATED)


class ControlEndApi(_ControlsBase):
    """End a control now, with a reason (audited)."""

    lookup_kwarg = "control_id"

    @extend_schema(operation_id="controls_end", request=ControlEndSerializer, responses={200: ControlOutputSerializer})
    def post(self, request: Request, control_id: int) -> Response:
        control = self.object_in_scope(self.queryset(), platform_rows=True)
        serializer = ControlEndSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        now = timezone.now()
        if control.ends_at is not None and control.ends_at <= now:
            raise ApplicationError("control_ended", "This control has already ended.", status_code=409)
        control = control_end(
            control=control,
            reason=serializer.validated_data["reason"],
            actor=self.scope.actor,
            now=now,
        )
        return Response(control_out(control, now))
