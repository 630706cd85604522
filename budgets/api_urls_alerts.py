from django.urls import path

from .apis import alerts, anomalies

urlpatterns = [
    path("alerts", alerts.AlertCollectionApi.as_view(), name="api-alerts"),
    path("alerts/<int:alert_id>/acknowledge", alerts.AlertAcknowledgeApi.as_view(), name="api-alert-acknowledge"),
    path(
        "notification-channels",
        alerts.NotificationChannelCollectionApi.as_view(),
        name="api-notification-channels",
    ),
    path(
        "notification-channels/<int:channel_id>",
        alerts.NotificationChannelDetailApi.as_view(),
        name="api-notification-channel-detail",
    ),
    path("anomalies", anomalies.AnomalyCollectionApi.as_view(), name="api-anomalies"),
    path("anomalies/<int:anomaly_id>", anomalies.AnomalyDetailApi.as_view(), name="api-anomaly-detail"),
    path("anomalies/<int:anomaly_id>/feedback", anomalies.AnomalyFeedbackApi.as_view(), name="api-anomaly-feedback"),
]
