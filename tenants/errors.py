"""One application error type and the one JSON error shape every API answers with.

Shape: {"error": {"code": "<stable_code>", "message": "<human text>", "details": {...}}}
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_SECONDS = 5  # what a 503 for a database that is down asks clients to wait
DATABASE_UNAVAILABLE = ("database_unavailable", "The database is not answering; retry shortly.")


class ApplicationError(Exception):
    """Raised by services and selectors; `code` is stable and machine-readable."""

    status_code: int = status.HTTP_400_BAD_REQUEST

    def __init__(self, code: str, message: str, *, details: Any = None, status_code: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        if status_code is not None:
            self.status_code = status_code


_DRF_CODES = {
    exceptions.ParseError: "malformed_json",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "invalid",
}


PAYLOAD_TOO_LARGE = "payload_too_large"


def oversized_message(length: int | None, limit: int) -> str:
    size = f"{length:,} bytes" if length is not None else f"over {limit:,} bytes"
    return f"The body is {size}; the limit is {limit:,}."


def reject_oversized_body(request, limit: int, *, hint: str = "") -> None:
    """413 when the declared body is over an endpoint's own `limit`, below the one limit that
    tenants.middleware.BodySizeLimitMiddleware applies to every request (same code and shape)."""
    length = request.META.get("CONTENT_LENGTH") or "0"
    if length.isdigit() and int(length) > limit:
        message = oversized_message(int(length), limit)
        raise ApplicationError(
            PAYLOAD_TOO_LARGE,
            f"{message} {hint}".strip(),
            details={"limit": limit},
            status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )


def error_body(code: str, message: str, details: Any = None) -> dict:
    """The API's error shape: {"error": {"code", "message", "details"?}}."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


def error_response(code: str, message: str, status_code: int, details: Any = None, headers=None) -> Response:
    return Response(error_body(code, message, details), status=status_code, headers=headers)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    # Imported here: rest_framework.views imports the authentication classes, which import this module.
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, ApplicationError):
        return error_response(exc.code, exc.message, exc.status_code, exc.details)
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is down or unreachable: a known failure, so a 503 the client may retry.
        logger.error("database unavailable: %s", exc)
        return error_response(*DATABASE_UNAVAILABLE, 503, headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})
    if isinstance(exc, DataError):
        # A value the database cannot hold (NUL in text, a number out of range) that validation let through.
        logger.warning("value refused by the database: %s", exc)
        return error_response("invalid_value", "A value in the request cannot be stored.", 400)
    if isinstance(exc, RecursionError):
        # Input nested deeper than any parser or serializer should follow (HostileInputMiddleware stops
        # JSON bodies earlier; this covers whatever else recurses on input).
        return error_response("too_deeply_nested", "The input is nested too deeply.", 400)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        message, details = "The request is not valid.", exc.detail
    else:
        message, details = str(exc.detail), None
    headers = {k: v for k, v in response.items() if k in ("Retry-After", "WWW-Authenticate")}
    return error_response(code, message, response.status_code, details, headers=headers)


# Django's own 404 and 500 pages are HTML; under /api/ they answer in the JSON error shape instead (an id
# that does not match the route's converter, e.g. /api/v1/budgets/abc, never reaches a view).


def api_aware_not_found(request, exception):
    from django.http import JsonResponse
    from django.views.defaults import page_not_found

    if request.path_info.startswith("/api/"):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return page_not_found(request, exception)


def database_unavailable(exc: BaseException | None) -> bool:
    """The exception, or one it was raised from, says the database is down or unreachable."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OperationalError | InterfaceError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def api_aware_server_error(request):
    """Django's handler500, called while the uncaught exception is being handled (sys.exc_info() holds it).

    A database that is down answers 503 with Retry-After: the JSON error shape under /api/, a finished
    page (templates/503.html, rendered without a request context, so without touching the database)
    elsewhere. Any other error: the JSON shape under /api/, Django's 500 page elsewhere."""
    import sys

    from django.http import HttpResponse, JsonResponse
    from django.template import loader
    from django.views.defaults import server_error

    if database_unavailable(sys.exc_info()[1]):
        logger.error("database unavailable: %s", sys.exc_info()[1])
        retry = {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}
        if request.path_info.startswith("/api/"):
            return JsonResponse(error_body(*DATABASE_UNAVAILABLE), status=503, headers=retry)
        return HttpResponse(loader.get_template("503.html").render(), status=503, headers=retry)
    if request.path_info.startswith("/api/"):
        return JsonResponse(error_body("server_error", "An unexpected error; it has been logged."), status=500)
    return server_error(request)
