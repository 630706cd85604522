"""The current request's id, for every log line written while it runs.

Kept free of Django imports: the logging configuration loads `RequestContextFilter` before the apps.
"""

from __future__ import annotations

import contextvars
import logging

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestContextFilter(logging.Filter):
    """Puts the current request's id on every log record (`-` outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get()
        return True
