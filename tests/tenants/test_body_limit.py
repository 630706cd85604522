"""Every endpoint answers an oversized body the same way: 413 with the API's JSON error shape and the code
`payload_too_large`, before any view or authentication reads it. Checked on every route through the test
client, and through a real gunicorn server with declared and chunked bodies.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver

from tenants.middleware import body_limit
from tenants.services import api_key_create
from tests.net import unused_port

HUGE = 30 * 1024 * 1024


def _route_paths() -> list[str]:
    """A concrete path for every URL pattern (parameters filled with plausible values)."""
    fill = {"int": "1", "str": "x", "slug": "x", "uuid": "00000000-0000-0000-0000-000000000001", "path": "x"}
    paths: list[str] = []

    def walk(patterns, prefix: str) -> None:
        for p in patterns:
            route = str(p.pattern)
            if route.startswith("^") or route.startswith("admin/"):
                continue  # the admin's regex routes: covered by the middleware all the same
            for conv, value in fill.items():
                while f"<{conv}:" in route:
                    start = route.index(f"<{conv}:")
                    route = route[:start] + value + route[route.index(">", start) + 1 :]
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + route)
            elif isinstance(p, URLPattern):
                paths.append("/" + prefix + route)

    walk(get_resolver().url_patterns, "")
    return sorted(set(paths))


def test_every_route_answers_413_json_for_a_declared_oversized_body(client, api_a):
    paths = _route_paths()
    assert "/api/v1/usage" in paths and "/api/v1/preflight" in paths and "/api/v1/budgets" in paths
    for path in paths:
        for method in ("POST", "PUT", "PATCH"):
            response = api_a.client.generic(
                method, path, b"{}", content_type="application/json", CONTENT_LENGTH=str(HUGE)
            )
            assert response.status_code == 413, (method, path, response.status_code)
            if path.startswith("/api/"):
                error = response.json()["error"]
                assert error["code"] == "payload_too_large", (method, path)
                assert error["details"] == {"limit": body_limit()}
                assert f"{HUGE:,} bytes" in error["message"]


def test_a_body_within_the_limit_still_reaches_the_view(api_a, catalog):
    response = api_a.client.post("/api/v1/tokens/count", {"model": "gpt-4o", "text": "hello"}, format="json")
    assert response.status_code == 200, response.content


# --- through gunicorn ------------------------------------------------------------------------------------


@pytest.fixture
def gunicorn_server(transactional_db):
    """gunicorn serving this checkout against the test database (the committed rows of the test)."""
    port = unused_port()
    db = connection.settings_dict
    env = dict(os.environ)
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    if connection.vendor != "postgresql":
        pytest.skip("the gunicorn check shares the test database over the network (PostgreSQL)")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "finops.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=Path(settings.BASE_DIR),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"gunicorn did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.2)
    yield port
    proc.terminate()
    proc.wait(timeout=15)


def _exchange(port: int, head: bytes, body_parts) -> tuple[int, dict, bytes]:
    """Send a request (headers, then the body in a thread, as a client streaming an upload would) and read
    the answer; the server may answer and close before the whole body is sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)

    def send_body() -> None:
        try:
            for part in body_parts:
                sock.sendall(part)
        except OSError:
            pass  # the server answered and closed: expected for an oversized body

    sock.sendall(head)
    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data) < _wanted(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    header, _, payload = data.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, payload


def _wanted(data: bytes) -> int:
    header, _, _ = data.partition(b"\r\n\r\n")
    for line in header.decode("latin-1").split("\r\n"):
        if line.lower().startswith("content-length:"):
            return len(header) + 4 + int(line.split(":", 1)[1])
    return len(data) + 1


def _declared(path: str, size: int, key: str) -> tuple[bytes, list[bytes]]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    block = b" " * (1024 * 1024)
    return head, [block] * (size // len(block))


def _chunked(path: str, body: bytes, key: str, *, repeat: int = 1) -> tuple[bytes, list[bytes]]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n"
    return head, [chunk] * repeat + [b"0\r\n\r\n"]


POSTED = [
    "/api/v1/usage",
    "/api/v1/preflight",
    "/api/v1/budgets",
    "/api/v1/controls",
    "/api/v1/notification-channels",
    "/api/v1/tokens/count",
    "/api/v1/approvals",
    "/api/v1/no-such-endpoint",
]


def test_gunicorn_answers_413_json_on_every_endpoint_for_30_mb(gunicorn_server, tenant_a):
    _key, raw = api_key_create(tenant=tenant_a, name="big bodies", scopes="ingest,preflight,read,manage")
    for path in POSTED:
        status, headers, payload = _exchange(gunicorn_server, *_declared(path, HUGE, raw))
        assert status == 413, (path, status, payload[:200])
        assert headers["content-type"].startswith("application/json"), path
        error = json.loads(payload)["error"]
        assert error["code"] == "payload_too_large" and error["details"] == {"limit": body_limit()}, path


def test_gunicorn_413_for_a_chunked_body_past_the_limit_passes_a_small_one(gunicorn_server, tenant_a, catalog):
    _key, raw = api_key_create(tenant=tenant_a, name="chunked", scopes="ingest,read")
    block = b" " * (1024 * 1024)
    status, _headers, payload = _exchange(
        gunicorn_server, *_chunked("/api/v1/preflight", block, raw, repeat=body_limit() // len(block) + 2)
    )
    assert status == 413 and json.loads(payload)["error"]["code"] == "payload_too_large"

    small = json.dumps({"model": "gpt-4o", "text": "hello world"}).encode()
    status, _headers, payload = _exchange(gunicorn_server, *_chunked("/api/v1/tokens/count", small, raw))
    assert status == 200, payload
    assert json.loads(payload)["tokens"] == 2
