from django.urls import path

from .apis import tokens, usage

urlpatterns = [
    path("usage", usage.UsageCollectionApi.as_view(), name="api-usage"),
    path("usage/<int:record_id>", usage.UsageDetailApi.as_view(), name="api-usage-detail"),
    path("tokens/count", tokens.TokenCountApi.as_view(), name="api-tokens-count"),
]
