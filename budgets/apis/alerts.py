"""Alerts (list, acknowledge) and the notification channels they are delivered to."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from budgets.models import Alert, NotificationChannel
from budgets.selectors import alerts_scoped, channels_visible
from budgets.services.alerts import alert_acknowledge
from budgets.services.notifications import channel_create, channel_delete
from finops.parsers import OrjsonParser
from tenants.errors import ApplicationError
from tenants.schema import results_of
from tenants.scope import Operation
from tenants.scoping import TenantScopedAPIView
from tenants.strict_input import StrictCursorPagination, StrictInputSerializer, query_bool


class AlertCursorPagination(StrictCursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 500


class _AlertBudgetSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class _AlertWindowSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class AlertOutputSerializer(serializers.Serializer):
    """Documents the shape `alert_out` returns."""

    id = serializers.IntegerField()
    kind = serializers.CharField(help_text="soft_limit, hard_limit, forecast or anomaly.")
    level = serializers.IntegerField(help_text="Percent of the limit crossed.")
    tenant = serializers.CharField(allow_null=True)
    budget = _AlertBudgetSerializer(allow_null=True)
    window = _AlertWindowSerializer(allow_null=True)
    subject = serializers.CharField()
    message = serializers.CharField()
    created_at = serializers.DateTimeField()
    acknowledged = serializers.BooleanField()
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    acknowledged_by = serializers.CharField(allow_null=True)


def alert_out(alert: Alert) -> dict:
    return {
        "id": alert.pk,
        "kind": alert.kind,
        "level": alert.level,
        "tenant": alert.tenant.slug if alert.tenant is not None else None,
        "budget": {"id": alert.budget_id, "name": alert.budget.name} if alert.budget is not None else None,
        "window": {"start": alert.window.starts_at, "end": alert.window.ends_at} if alert.window is not None else None,
        "subject": alert.subject,
        "message": alert.message,
        "created_at": alert.created_at,
        "acknowledged": alert.acknowledged_at is not None,
        "acknowledged_at": alert.acknowledged_at,
        "acknowledged_by": alert.acknowledged_by.get_username() if alert.acknowledged_by is not None else None,
    }


class _AlertsBase(TenantScopedAPIView):
    # Acknowledging is an approver's job for people; keys need the manage scope.
    parser_classes = [OrjsonParser]
    tenant_required = False
    write_operation = Operation.ACKNOWLEDGE

    def queryset(self):
        return alerts_scoped(scope=self.scope)


class AlertCollectionApi(_AlertsBase):
    """Budget alerts, newest first: the caller's tenant's, or every tenant's for platform callers."""

    @extend_schema(
        operation_id="alerts_list",
        parameters=[
            OpenApiParameter("tenant", str, description="Platform callers: one tenant's alerts."),
            OpenApiParameter("acknowledged", bool, description="true or false."),
            OpenApiParameter("kind", str, enum=Alert.Kind.values),
            OpenApiParameter("page_size", int, description="Up to 500; default 100."),
        ],
        responses=results_of(AlertOutputSerializer, name="AlertList", cursor=True),
    )
    def get(self, request: Request) -> Response:
        alerts = self.queryset()
        acknowledged = query_bool(request.query_params, "acknowledged")
        if acknowledged is not None:
            alerts = alerts.filter(acknowledged_at__isnull=not acknowledged)
        kind = request.query_params.get("kind")
        if kind is not None:
            if kind not in Alert.Kind.values:
                raise ApplicationError(
                    "invalid",
                    f"kind must be one of {', '.join(Alert.Kind.values)}.",
                    details={"kind": ["Unknown kind."]},
                )
            alerts = alerts.filter(kind=kind)
        paginator = AlertCursorPagination()
        page: list[Alert] = paginator.paginate_queryset(alerts, request, view=self) or []  # None: no page size
        return paginator.get_paginated_response([alert_out(a) for a in page])


class AlertAcknowledgeApi(_AlertsBase):
    """Mark an alert as seen (who and when are recorded and audited); acknowledging twice changes nothing."""

    lookup_kwarg = "alert_id"

    @extend_schema(operation_id="alerts_acknowledge", request=None, responses=AlertOutputSerializer)
    def post(self, request: Request, alert_id: int) -> Response:
        alert = self.object_in_scope(self.queryset(), platform_rows=True)
        alert = alert_acknowledge(alert=alert, actor=self.scope.actor)
        return Response(alert_out(alert))


class ChannelInputSerializer(StrictInputSerializer):
    kind = serializers.ChoiceField(choices=NotificationChannel.Kind.choices)
    target = serializers.CharField(max_length=500, help_text="Email address, or the webhook's https:// URL.")
    secret = serializers.CharField(
        max_length=200, required=False, allow_blank=True, help_text="Webhook signing secret; generated when empty."
    )


class ChannelOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    tenant = serializers.CharField(allow_null=True, help_text="Empty: the channel receives every tenant's alerts.")
    kind = serializers.CharField(help_text="email or webhook.")
    target = serializers.CharField()
    is_active = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    secret = serializers.CharField(required=False, help_text="Webhooks, in the creation answer only.")


class _ChannelListSerializer(serializers.Serializer):
    results = ChannelOutputSerializer(many=True)


def channel_out(channel: NotificationChannel, *, with_secret: bool = False) -> dict:
    out = {
        "id": channel.pk,
        "tenant": channel.tenant.slug if channel.tenant is not None else None,
        "kind": channel.kind,
        "target": channel.target,
        "is_active": channel.is_active,
        "created_at": channel.created_at,
    }
    if with_secret and channel.kind == NotificationChannel.Kind.WEBHOOK:
        # Shown once, when the channel is created; receivers verify signatures with it.
        out["secret"] = channel.secret
    return out


class _ChannelsBase(TenantScopedAPIView):
    """Operators and platform keys manage every channel (`?tenant=` narrows to one tenant, and a channel
    created without it receives every tenant's alerts); tenant admins manage their tenant's. Tenant
    API keys cannot: a service's key should not be able to redirect its tenant's alerts."""

    parser_classes = [OrjsonParser]
    tenant_required = False
    read_operation = Operation.READ_CHANNELS
    write_operation = Operation.MANAGE_CHANNELS

    def queryset(self):
        return channels_visible(scope=self.scope)


class NotificationChannelCollectionApi(_ChannelsBase):
    @extend_schema(
        operation_id="notification_channels_list",
        parameters=[OpenApiParameter("tenant", str, description="Platform callers: one tenant's channels.")],
        responses=_ChannelListSerializer,
    )
    def get(self, request: Request) -> Response:
        return Response({"results": [channel_out(c) for c in self.queryset()[:500]]})

    @extend_schema(
        operation_id="notification_channels_create",
        request=ChannelInputSerializer,
        responses={201: ChannelOutputSerializer},
        parameters=[
            OpenApiParameter(
                "tenant", str, description="The tenant whose alerts it receives; platform callers may leave it out."
            )
        ],
        examples=[
            OpenApiExample(
                "Signed webhook", value={"kind": "webhook", "target": "https://hooks.example.com/t"}, request_only=True
            ),
            OpenApiExample("Email", value={"kind": "email", "target": "finops@example.com"}, request_only=True),
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = ChannelInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        channel = channel_create(
            # Never from the body: the tenant a caller acts for is resolved from its key or ?tenant=.
            tenant=self.scope.tenant,
            kind=data["kind"],
            target=data["target"],
            secret=data.get("secret", ""),
            require_https=not self.scope.is_platform,
            actor=self.scope.actor,
        )
        return Response(channel_out(channel, with_secret=True), status=status.HTTP_201_CREATED)


class NotificationChannelDetailApi(_ChannelsBase):
    lookup_kwarg = "channel_id"

    @extend_schema(operation_id="notification_channels_delete", responses={204: None})
    def delete(self, request: Request, channel_id: int) -> Response:
        channel = self.object_in_scope(self.queryset(), platform_rows=True)
        channel_delete(channel=channel, actor=self.scope.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)
