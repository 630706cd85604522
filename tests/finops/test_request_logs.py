"""Structured logs: one line per request with its id, tenant and key prefix, never a secret."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.test import Client
from django.utils.module_loading import import_string

from finops.request_context import RequestContextFilter


@pytest.fixture
def json_log():
    """The root logger writing through the configured JSON formatter into a buffer."""
    config = dict(settings.LOGGING["formatters"]["json"])
    formatter = import_string(config.pop("()"))(**config)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RequestContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    finally:
        root.removeHandler(handler)


def test_one_json_line_per_request_names_tenant_and_key_prefix_never_the_key(json_log, api_a, catalog):
    response = api_a.client.post(
        "/api/v1/usage?tenant=acme",
        {"request_id": "log-1", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 2},
        format="json",
        HTTP_X_REQUEST_ID="trace-abc.123",
    )
    assert response.status_code == 200
    assert response["X-Request-ID"] == "trace-abc.123"
    lines = [line for line in json_log() if line["logger"] == "finops.requests"]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "trace-abc.123"
    assert (line["method"], line["path"], line["status"]) == ("POST", "/api/v1/usage", 200)
    assert line["tenant"] == "acme" and line["key_prefix"] == api_a.key.prefix
    assert line["level"] == "INFO" and "time" in line and line["duration_ms"] >= 0
    everything = json.dumps(json_log())
    secret = api_a.raw.split("_", 2)[2]
    assert secret not in everything and "Bearer" not in everything and "?tenant" not in everything


def test_other_lines_of_a_request_carry_its_id_and_a_bad_incoming_id_is_replaced(json_log, api_a):
    response = api_a.client.get("/api/v1/usage/999999", HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert response.status_code == 404
    request_id = response["X-Request-ID"]
    assert len(request_id) == 32 and "\n" not in request_id
    lines = json_log()
    warnings = [line for line in lines if line["logger"] == "django.request"]
    assert warnings and all(line["request_id"] == request_id for line in warnings)
    assert all("request" not in line for line in lines)  # the request object (and its query string) stays out
    assert [line["request_id"] for line in lines if line["logger"] == "finops.requests"] == [request_id]


def test_pages_name_the_tenant_of_their_scope(json_log, client, viewer_a):
    client.force_login(viewer_a)
    client.get("/usage/?tenant=acme")
    line = next(line for line in json_log() if line["logger"] == "finops.requests")
    assert line["tenant"] == "acme" and line["user_id"] == viewer_a.pk and line["key_prefix"] is None


@pytest.mark.parametrize(("value", "formatter"), [(None, "plain"), ("text", "plain"), ("json", "json")])
def test_log_format_setting_picks_the_formatter(value, formatter):
    env = {k: v for k, v in os.environ.items() if k != "LOG_FORMAT"}
    env["DJANGO_DEBUG"] = "true"
    if value:
        env["LOG_FORMAT"] = value
    code = "from django.conf import settings; print(settings.LOGGING['handlers']['console']['formatter'])"
    out = subprocess.run(
        [sys.executable, "-c", f"import django, os; os.environ['DJANGO_SETTINGS_MODULE']='finops.settings'; {code}"],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == formatter


def test_probes_are_logged_at_debug_only(json_log, caplog):
    import logging as _logging

    with caplog.at_level(_logging.DEBUG, logger="finops.requests"):
        response = Client(HTTP_HOST="10.1.2.3").get("/healthz")
    assert response.status_code == 200 and response["X-Request-ID"]
    probe_lines = [r for r in caplog.records if r.name == "finops.requests"]
    assert [r.levelno for r in probe_lines] == [_logging.DEBUG]
