from django.urls import path

from . import views
from .views import anomalies as anomaly_views
from .views import approvals as approval_views
from .views import savings as savings_views

urlpatterns = [
    path("budgets/", views.budgets_list, name="budgets_list"),
    path("budgets/add/", views.budget_add, name="budget_add"),
    path("budgets/<int:budget_id>/", views.budget_detail, name="budget_detail"),
    path("budgets/<int:budget_id>/edit/", views.budget_edit, name="budget_edit"),
    path("budgets/<int:budget_id>/increase/", views.budget_increase, name="budget_increase"),
    path("controls/", views.controls_list, name="controls_list"),
    path("controls/add/", views.control_add, name="control_add"),
    path("controls/<int:control_id>/end/", views.control_end, name="control_end"),
    path("alerts/", views.alerts_list, name="alerts_list"),
    path("alerts/<int:alert_id>/acknowledge/", views.alert_acknowledge, name="alert_acknowledge"),
    path("approvals/", views.approvals_list, name="approvals_list"),
    path("approvals/<uuid:approval_id>/", approval_views.approval_detail, name="approval_detail"),
    path("approvals/<uuid:approval_id>/cancel/", approval_views.approval_cancel, name="approval_cancel"),
    path("approvals/<uuid:approval_id>/approve/", views.approval_approve, name="approval_approve"),
    path("approvals/<uuid:approval_id>/reject/", views.approval_reject, name="approval_reject"),
    path("savings/", savings_views.savings, name="savings"),
    path("anomalies/", anomaly_views.anomalies_list, name="anomalies_list"),
    path("anomalies/<int:anomaly_id>/", anomaly_views.anomaly_detail, name="anomaly_detail"),
    path("anomalies/<int:anomaly_id>/feedback/", anomaly_views.anomaly_feedback, name="anomaly_feedback"),
]
