"""Anomalies (list, one, feedback): what the hourly job found, with its evidence and the controls it started."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from budgets.models import Anomaly
from budgets.selectors import anomalies_scoped
from budgets.services.anomalies import anomaly_feedback
from finops.parsers import OrjsonParser
from tenants.errors import ApplicationError
from tenants.scope import Operation
from tenants.scoping import TenantScopedAPIView
from tenants.strict_input import StrictInputSerializer

LIST_LIMIT = 500


class AnomalyOutputSerializer(serializers.Serializer):
    """Documents the shape `anomaly_out` returns."""

    id = serializers.IntegerField()
    tenant = serializers.CharField()
    workflow = serializers.CharField(allow_null=True, help_text="The workflow's slug.")
    kind = serializers.ChoiceField(choices=Anomaly.Kind.choices)
    metric = serializers.CharField(help_text="calls, cost, tokens_per_call, pricier_calls, model or workflow.")
    model = serializers.CharField(allow_blank=True, help_text="The new model's name, for new_model.")
    status = serializers.ChoiceField(choices=Anomaly.Status.choices)
    opened_at = serializers.DateTimeField()
    last_hour = serializers.DateTimeField()
    cleared_at = serializers.DateTimeField(allow_null=True)
    unit = serializers.CharField()
    observed = serializers.FloatField()
    expected = serializers.FloatField(allow_null=True)
    band = serializers.ListField(child=serializers.FloatField(allow_null=True), help_text="[low, high].")
    score = serializers.FloatField(allow_null=True)
    controls = serializers.ListField(child=serializers.DictField(), help_text="id, kind, active, ends_at.")
    alert = serializers.IntegerField(allow_null=True)
    feedback = serializers.CharField(allow_blank=True, help_text="confirmed, expected, false_alarm or empty.")
    feedback_note = serializers.CharField(allow_blank=True)
    series = serializers.ListField(
        child=serializers.ListField(), help_text="Detail only: [hour, actual, expected, low, high] per hour."
    )


class _AnomalyListSerializer(serializers.Serializer):
    results = AnomalyOutputSerializer(many=True)


def anomaly_out(anomaly: Anomaly, *, with_series: bool = False) -> dict:
    out = {
        "id": anomaly.pk,
        "tenant": anomaly.tenant.slug,
        "workflow": anomaly.workflow.slug if anomaly.workflow is not None else None,
        "kind": anomaly.kind,
        "metric": anomaly.metric,
        "model": anomaly.subject_name,
        "status": anomaly.status,
        "opened_at": anomaly.opened_at,
        "last_hour": anomaly.last_hour,
        "cleared_at": anomaly.cleared_at,
        "unit": anomaly.evidence.get("unit", ""),
        "observed": anomaly.observed,
        "expected": anomaly.expected,
        "band": [anomaly.low, anomaly.high],
        "score": anomaly.score,
        "controls": [
            {"id": c.pk, "kind": c.kind, "active": c.ends_at is None, "ends_at": c.ends_at}
            for c in anomaly.controls.all()
        ],
        "alert": anomaly.alert_id,
        "feedback": anomaly.feedback,
        "feedback_note": anomaly.feedback_note,
    }
    if with_series:
        out["series"] = anomaly.evidence.get("series", [])
    return out


class _AnomaliesBase(TenantScopedAPIView):
    # Saying what an anomaly was is an approver's job, like acknowledging an alert.
    parser_classes = [OrjsonParser]
    tenant_required = False
    write_operation = Operation.ACKNOWLEDGE

    def queryset(self):
        return anomalies_scoped(scope=self.scope)


class AnomalyCollectionApi(_AnomaliesBase):
    """Anomalies, newest first: the caller's tenant's, or every tenant's for platform callers."""

    @extend_schema(
        operation_id="anomalies_list",
        parameters=[
            OpenApiParameter("tenant", str, description="Platform callers: one tenant's anomalies."),
            OpenApiParameter("status", str, enum=Anomaly.Status.values),
            OpenApiParameter("kind", str, enum=Anomaly.Kind.values),
        ],
        responses=_AnomalyListSerializer,
    )
    def get(self, request: Request) -> Response:
        anomalies = self.queryset()
        for param, choices in (("status", Anomaly.Status.values), ("kind", Anomaly.Kind.values)):
            value = request.query_params.get(param)
            if value is None:
                continue
            if value not in choices:
                raise ApplicationError(
                    "invalid", f"{param} must be one of {', '.join(choices)}.", details={param: ["Unknown value."]}
                )
            anomalies = anomalies.filter(**{param: value})
        return Response({"results": [anomaly_out(a) for a in anomalies[:LIST_LIMIT]]})


class AnomalyDetailApi(_AnomaliesBase):
    """One anomaly with its hourly evidence (actual against the expected band)."""

    lookup_kwarg = "anomaly_id"

    @extend_schema(operation_id="anomalies_retrieve", responses=AnomalyOutputSerializer)
    def get(self, request: Request, anomaly_id: int) -> Response:
        return Response(anomaly_out(self.object_in_scope(self.queryset()), with_series=True))


class AnomalyFeedbackInputSerializer(StrictInputSerializer):
    feedback = serializers.ChoiceField(choices=[c for c in Anomaly.Feedback.values if c])
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class AnomalyFeedbackApi(_AnomaliesBase):
    """Say what an anomaly was: confirmed, expected (planned) or false alarm. The last two end its controls
    and keep its hours out of later baselines. Audited."""

    lookup_kwarg = "anomaly_id"

    @extend_schema(
        operation_id="anomalies_feedback", request=AnomalyFeedbackInputSerializer, responses=AnomalyOutputSerializer
    )
    def post(self, request: Request, anomaly_id: int) -> Response:
        anomaly = self.object_in_scope(self.queryset())
        serializer = AnomalyFeedbackInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        anomaly_feedback(
            anomaly=anomaly,
            feedback=serializer.validated_data["feedback"],
            note=serializer.validated_data["note"],
            actor=self.scope.actor,
        )
        return Response(anomaly_out(self.queryset().get(pk=anomaly.pk)))
