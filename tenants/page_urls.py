from django.urls import path

from . import views, views_access

urlpatterns = [
    path("audit/", views.audit_list, name="audit_list"),
    path("audit/export.csv", views.audit_export, name="audit_export"),
    path("access/keys/", views_access.api_keys, name="api_keys"),
    path("access/keys/<int:key_id>/rotate", views_access.api_key_rotate_view, name="api_key_rotate"),
    path("access/keys/<int:key_id>/revoke", views_access.api_key_revoke_view, name="api_key_revoke"),
    path("access/members/", views_access.members, name="members"),
    path("access/members/<int:membership_id>/role", views_access.member_role, name="member_role"),
    path("access/members/<int:membership_id>/remove", views_access.member_remove, name="member_remove"),
    path("access/tenants/", views_access.tenants_manage, name="tenants_manage"),
    path("access/tenants/new", views_access.tenant_add, name="tenant_add"),
    path("access/tenants/<int:tenant_id>/edit", views_access.tenant_edit, name="tenant_edit"),
    path(
        "accounts/set-password/<uidb64>/<token>/",
        views_access.SetPasswordView.as_view(),
        name="set_password",
    ),
]
