"""The product's URLs, unchanged, plus the straightforward DRF ingest view that bench/ingest.py compares against."""

from django.urls import path

from bench._baseline import BaselineUsageIngestApi
from finops.urls import urlpatterns as product_urlpatterns

urlpatterns = [
    *product_urlpatterns,
    path("bench/baseline/usage", BaselineUsageIngestApi.as_view(), name="bench-baseline-usage"),
]
