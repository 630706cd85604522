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

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

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
    """Two rules for every request, kept in one place rather than in each view.

    1. No NUL byte in the path or the query string (percent-encoded as %00): PostgreSQL text cannot hold
       one, so a slug or filter carrying it failed as a 500 in whichever query used it first.
    2. A JSON body for an API view that parses with DRF's JSONParser (the standard library) must be JSON a
       strict parser accepts. JSONParser recurses once per nesting level (10,000 levels: RecursionError, a
       500 on every endpoint), accepts lone UTF-16 surrogates (which cannot be encoded when the answer or
       the row is written: another 500), and numbers too large for a float. Checking the body once with
       orjson (depth at most 1024, UTF-8 only, no lone surrogates, no NaN or Infinity, no infinite numbers)
       answers all of these 400 before the view runs. Views that parse their own bodies (usage ingest with
       orjson already, the OTLP and LiteLLM receivers) are left alone, as is a method the view does not
       have (it answers 405) and an over-large body (the view's 413).

    API paths answer in the API's JSON error shape, pages with a plain 400.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path_info or "%00" in request.META.get("QUERY_STRING", ""):
            message = "The URL must not contain NUL (%00) characters."
            if request.path_info.startswith("/api/"):
                return _api_error("invalid_url", message)
            return HttpResponseBadRequest(message, content_type="text/plain")
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> HttpResponse | None:
        if request.method not in ("POST", "PUT", "PATCH") or not _parses_with_stdlib_json(view_func, request.method):
            return None
        if not self._json_body(request):
            return None
        try:
            orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            return _api_error("malformed_json", f"Malformed JSON: {exc}")
        return None

    @staticmethod
    def _json_body(request: HttpRequest) -> bool:
        if request.META.get("HTTP_CONTENT_ENCODING"):
            return False
        media_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            return False
        length = request.META.get("CONTENT_LENGTH") or "0"
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return length.isdigit() and 0 < int(length) and (limit is None or int(length) <= limit)


def _parses_with_stdlib_json(view_func, method: str) -> bool:
    from rest_framework.parsers import JSONParser
    from rest_framework.views import APIView

    view_class = getattr(view_func, "cls", None)
    if view_class is None or not issubclass(view_class, APIView) or not hasattr(view_class, method.lower()):
        return False
    return any(issubclass(parser, JSONParser) for parser in view_class.parser_classes)


def _api_error(code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=400)
