"""Operations middleware: probe and scrape endpoints ahead of everything, and one log line per request.

`OperationsEndpointsMiddleware` comes right after the request log in MIDDLEWARE: `/healthz`,
`/readyz` and `/metrics` are answered before host validation, sessions and CSRF, because probes and
Prometheus call a container by its address, not by the public host name in DJANGO_ALLOWED_HOSTS.

`RequestLogMiddleware` writes one line per request (logger `finops.requests`): method, path (never
the query string), status, duration, a request id (the caller's `X-Request-ID` when it is a sane
token, else a new one, echoed in the response), the tenant and the API key's prefix. Never the key,
a cookie or a body. Every other log line written while the request runs carries the same request id
(`finops.request_context.RequestContextFilter`), so a request's lines can be found together.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.utils.functional import empty

from finops.request_context import current_request_id as _request_id
from finops.views import operations

request_log = logging.getLogger("finops.requests")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_OPERATIONS = {"/healthz": operations.healthz, "/readyz": operations.readyz, "/metrics": operations.metrics}


class OperationsEndpointsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = _OPERATIONS.get(request.path_info)
        if view is not None and request.method in ("GET", "HEAD"):
            return view(request)
        return self.get_response(request)


class RequestLogMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
        token = _request_id.set(request_id)
        request.request_id = request_id  # type: ignore[attr-defined]
        started = time.perf_counter()
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(token)
        response["X-Request-ID"] = request_id
        self._log(request, response, request_id, (time.perf_counter() - started) * 1000)
        return response

    @staticmethod
    def _log(request: HttpRequest, response: HttpResponse, request_id: str, ms: float) -> None:
        tenant = getattr(request, "_log_tenant", None)
        scope = getattr(request, "scope", None)  # pages: set by tenant_page
        if tenant is None and scope is not None and getattr(scope, "tenant", None) is not None:
            tenant = scope.tenant.slug
        user = getattr(request, "user", None)
        if getattr(user, "_wrapped", None) is empty:
            # Not looked up by the request (AuthenticationMiddleware's lazy user): the log line does not look
            # it up either. That would cost a session and a user query, and with the database down, another
            # connection attempt (a few seconds when it is silent) after the page had already failed.
            user = None
        fields = {
            "request_id": request_id,
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round(ms, 1),
            "tenant": tenant,
            "key_prefix": getattr(request, "_log_key_prefix", None),
            "user_id": user.pk if user is not None and getattr(user, "is_authenticated", False) else None,
        }
        level = logging.DEBUG if request.path in _OPERATIONS else logging.INFO
        request_log.log(
            level,
            "%s %s %s %.1fms tenant=%s key=%s",
            request.method,
            request.path,
            response.status_code,
            ms,
            tenant or "-",
            fields["key_prefix"] or "-",
            extra=fields,
        )


class HostileInputMiddleware:
    """No NUL byte in the path or the query string (percent-encoded as %00): PostgreSQL text cannot hold
    one, so a slug or filter carrying it failed as a 500 in whichever query used it first. API paths
    answer in the API's JSON error shape, pages with a plain 400. (Hostile JSON bodies are the parser's
    to refuse: finops.parsers.OrjsonParser, every API view's parser.)"""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path_info or "%00" in request.META.get("QUERY_STRING", ""):
            message = "The URL must not contain NUL (%00) characters."
            if request.path_info.startswith("/api/"):
                return _api_error("invalid_url", message)
            return HttpResponseBadRequest(message, content_type="text/plain")
        return self.get_response(request)


def _api_error(code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=400)
