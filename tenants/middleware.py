"""One body size limit for every endpoint, answered before any view reads a byte.

DRF reads request bodies as a stream, so Django's own `DATA_UPLOAD_MAX_MEMORY_SIZE` check never runs for
API views, and each view used to check (or forget to check) on its own: one endpoint answered the
documented 413 JSON, others Django's 400 HTML page, one another error code. This middleware answers every
oversized request the same way, whatever the endpoint, the method or the authentication:

- a declared `Content-Length` over the limit: 413 at once, without reading the body;
- a chunked body (no `Content-Length`): read up to the limit; past it, 413; within it, handed to Django as
  an ordinary body of that length (Django would otherwise read a chunked body as empty).

API paths (`/api/`) answer the API's JSON error shape (`{"error": {"code": "payload_too_large", ...}}`,
tenants/errors.py); pages answer a short plain-text 413.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse

from .errors import PAYLOAD_TOO_LARGE, oversized_message

_CHUNK = 64 * 1024


def body_limit() -> int:
    """The largest body any endpoint accepts (ingest's batches are the largest legitimate bodies)."""
    return max(settings.DATA_UPLOAD_MAX_MEMORY_SIZE, settings.USAGE_MAX_BODY_BYTES)


class BodySizeLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = body_limit()
        length = request.META.get("CONTENT_LENGTH") or ""
        if length.isdigit() and int(length) > limit:
            return self._too_large(request, int(length), limit)
        chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not length and "wsgi.input" in request.META:
            received = self._buffer_chunked(request, limit)
            if received > limit:
                return self._too_large(request, None, limit)
        return self.get_response(request)

    @staticmethod
    def _buffer_chunked(request: HttpRequest, limit: int) -> int:
        """Read a chunked body up to one byte past the limit; within it, make it the request's body."""
        stream = request.META["wsgi.input"]
        parts, size = [], 0
        while size <= limit:
            part = stream.read(min(_CHUNK, limit + 1 - size))
            if not part:
                break
            parts.append(part)
            size += len(part)
        if size <= limit:
            body = b"".join(parts)
            request.META["CONTENT_LENGTH"] = str(size)
            request._stream = LimitedStream(io.BytesIO(body), size)  # type: ignore[assignment]
            request._read_started = False  # type: ignore[attr-defined]
        return size

    @staticmethod
    def _too_large(request: HttpRequest, length: int | None, limit: int) -> HttpResponse:
        message = oversized_message(length, limit)
        # The rest of the body is never read: the server closes the connection after this answer.
        if request.path.startswith("/api/"):
            body = json.dumps({"error": {"code": PAYLOAD_TOO_LARGE, "message": message, "details": {"limit": limit}}})
            response = HttpResponse(body, status=413, content_type="application/json")
        else:
            response = HttpResponse(f"{message}\n", status=413, content_type="text/plain; charset=utf-8")
        response["Content-Length"] = str(len(response.content))  # outside CommonMiddleware, which would add it
        return response
