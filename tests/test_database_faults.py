"""A database that is down, or accepts connections and never answers: the API answers 503 JSON with
Retry-After within a few seconds, never 500 and never a hang until gunicorn kills the worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import OperationalError, connection, transaction
from rest_framework.test import APIClient

from tenants.errors import api_exception_handler
from tests.net import unused_port

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL connection options")


def test_the_connection_has_connect_and_tcp_timeouts():
    options = settings.DATABASES["default"]["OPTIONS"]
    assert options["connect_timeout"] == settings.DB_CONNECT_TIMEOUT_SECONDS <= 5
    assert options["tcp_user_timeout"] == settings.DB_TCP_USER_TIMEOUT_MS
    assert options["keepalives"] == 1


def test_the_web_process_gets_a_statement_timeout():
    """finops/wsgi.py (what gunicorn loads) sets 10 s unless the operator says otherwise; workers keep none."""
    code = (
        "import finops.wsgi; from django.conf import settings; "
        "print(settings.DATABASES['default']['OPTIONS'].get('options', ''))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DB_STATEMENT_TIMEOUT_MS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "statement_timeout=10000" in out.stdout
    worker = subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'finops.settings');"
         "django.setup(); from django.conf import settings; print(settings.DATABASES['default']['OPTIONS'])"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "statement_timeout" not in worker.stdout


@pytest.mark.django_db
def test_a_statement_cancelled_by_its_timeout_answers_503_with_retry_after():
    with pytest.raises(OperationalError) as caught, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 50")
        cursor.execute("SELECT pg_sleep(2)")
    response = api_exception_handler(caught.value, {})
    assert response is not None and response.status_code == 503
    assert response["Retry-After"] and response.data["error"]["code"] == "database_unavailable"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_a_database_that_is_down_or_silent_answers_503_json_fast(kind, request):
    port = unused_port() if kind == "refused" else request.getfixturevalue("silent_server")
    connection.close()
    saved = dict(connection.settings_dict)
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(port), CONN_HEALTH_CHECKS=False)
    connection.settings_dict["OPTIONS"] = {**saved["OPTIONS"], "connect_timeout": 1}
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer tsk_abcdefgh_0123456789")
    try:
        for path, body in [
            ("/api/v1/usage", {"request_id": "r1", "model": "gpt-4o", "input_tokens": 1}),
            ("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 1}),
        ]:
            started = time.perf_counter()
            response = client.post(path, body, format="json")
            elapsed = time.perf_counter() - started
            assert response.status_code == 503, response.content[:300]
            assert response["Content-Type"].startswith("application/json")
            assert response.json()["error"]["code"] == "database_unavailable"
            assert int(response["Retry-After"]) > 0
            assert elapsed < 3.0, elapsed
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    connection.ensure_connection()


@contextmanager
def database_at(port: int):
    """The default connection pointed at a local port (nothing listening, or a silent server) meanwhile."""
    connection.close()
    saved = dict(connection.settings_dict)
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(port), CONN_HEALTH_CHECKS=False)
    connection.settings_dict["OPTIONS"] = {**saved["OPTIONS"], "connect_timeout": 1}
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    connection.ensure_connection()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_pages_answer_a_finished_503_page_fast_when_the_database_is_down(kind, request, viewer_a):
    """Pages, not only the API: a signed-in user gets the app's 503 page with Retry-After, not Django's 500,
    within a couple of seconds; the API's JSON shape is kept for what escapes DRF under /api/."""
    from django.test import Client

    port = unused_port() if kind == "refused" else request.getfixturevalue("silent_server")
    client = Client(raise_request_exception=False)
    client.force_login(viewer_a)
    with database_at(port):
        for path in ("/", "/usage/", "/budgets/"):
            started = time.perf_counter()
            response = client.get(path)
            elapsed = time.perf_counter() - started
            assert response.status_code == 503, (path, response.status_code, response.content[:300])
            assert response["Content-Type"].startswith("text/html")
            assert int(response["Retry-After"]) > 0
            html = response.content.decode()
            assert "Temporarily unavailable" in html and "</html>" in html and 'class="error-page"' in html
            assert "Server error" not in html and "Traceback" not in html
            assert elapsed < 3.0, (path, elapsed)
    assert client.get("/").status_code == 200  # the database is back: the same session works again


def test_other_errors_still_answer_the_500_page(rf):
    """Only a database that is down turns into 503: any other uncaught error keeps Django's 500 page."""
    from tenants.errors import api_aware_server_error

    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        page = api_aware_server_error(rf.get("/usage/"))
        api = api_aware_server_error(rf.get("/api/v1/usage"))
    assert page.status_code == 500 and "Retry-After" not in page
    assert api.status_code == 500 and b"server_error" in api.content
    try:
        try:
            raise OperationalError("connection refused")
        except OperationalError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError:
        api = api_aware_server_error(rf.get("/api/v1/usage"))
    assert api.status_code == 503 and b"database_unavailable" in api.content and api["Retry-After"] == "5"
