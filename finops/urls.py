from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from finops.views import operations

urlpatterns = [
    path("admin/", admin.site.urls),
    # Sign-in pages only: password reset needs outgoing mail, which operators configure later.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password_change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/", include("finops.api_urls")),
    path("api/v1/", include("budgets.api_urls")),
    path("api/v1/", include("budgets.api_urls_alerts")),
    path("", include("budgets.page_urls")),
    path("", include("finops.page_urls")),
    path("", include("tenants.page_urls")),
    # Normally answered by finops.middleware.OperationsEndpointsMiddleware before routing; named here too.
    path("healthz", operations.healthz, name="healthz"),
    path("readyz", operations.readyz, name="readyz"),
    path("metrics", operations.metrics, name="metrics"),
]

# Under /api/, a route that does not match and an unexpected error answer JSON, not Django's HTML pages.
handler404 = "tenants.errors.api_aware_not_found"
handler500 = "tenants.errors.api_aware_server_error"
