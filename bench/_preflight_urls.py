"""The product's URLs, unchanged, plus the ceiling that bench/preflight.py measures preflight against.

The ceiling is the preflight view with the decision taken out: the same base class, so the same
API-key authentication, scope check, throttle, tenant resolution and JSON parsing of the same body,
answering a constant. What preflight costs beyond it is the decision itself.
"""

from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response

from budgets.apis.preflight import PreflightApi
from finops.urls import urlpatterns as product_urlpatterns

CEILING_ANSWER = {"decision": "ceiling", "reasons": []}


class CeilingApi(PreflightApi):
    """Authenticated, scoped, throttled, tenant-resolved, body parsed; no decision."""

    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            return Response({"error": {"code": "invalid_body", "message": "Send a JSON object."}}, status=400)
        return Response(CEILING_ANSWER)


urlpatterns = [
    *product_urlpatterns,
    path("bench/ceiling/preflight", CeilingApi.as_view(), name="bench-ceiling-preflight"),
]
