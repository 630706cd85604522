from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("usage/", views.usage_list, name="usage_list"),
    path("usage/<int:record_id>/", views.usage_detail, name="usage_detail"),
    path("explore/", views.explorer, name="explore"),
    path("explore/export.csv", views.explorer_export, name="explore_export"),
    path("tenants/<str:slug>/", views.tenant_detail, name="tenant_detail"),
    path("workflows/", views.workflows_list, name="workflows_list"),
    path("workflows/new/", views.workflow_add, name="workflow_add"),  # before the slug route it would match
    path("workflows/<str:slug>/edit/", views.workflow_edit, name="workflow_edit"),
    path("workflows/<str:slug>/", views.workflow_detail, name="workflow_detail"),
    path("workflows/<str:slug>/threshold/", views.workflow_threshold, name="workflow_threshold"),
    path("workflows/<str:slug>/envelope/", views.workflow_envelope, name="workflow_envelope"),
    path("workflows/<str:slug>/prompt-versions/", views.prompt_version_add, name="prompt_version_add"),
    path(
        "workflows/<str:slug>/prompt-versions/<str:label>/", views.prompt_version_detail, name="prompt_version_detail"
    ),
    path("models/", views.models_list, name="models"),
    # Names may hold slashes (path converter), so the routes under a model come before its page.
    path("models/<path:name>/prices/add/", views.model_price_add, name="model_price_add"),
    path("models/<path:name>/prices/<int:price_id>/edit/", views.model_price_edit, name="model_price_edit"),
    path("models/<path:name>/", views.model_detail, name="model_detail"),
    path("exports/focus.csv", views.focus_export, name="focus_export"),
]
