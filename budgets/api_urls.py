from django.urls import path

from .apis import preflight

urlpatterns = [
    path("preflight", preflight.PreflightApi.as_view(), name="api-preflight"),
]
