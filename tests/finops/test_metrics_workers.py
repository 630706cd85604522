"""/metrics is right across gunicorn workers: a real gunicorn with two workers, whichever one answers.

Each worker counts in its own process; gunicorn.conf.py puts them in prometheus_client's multiprocess
mode, so a scrape answered by either worker sums both. Without it, scrapes would disagree with each
other and with the traffic sent.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from django.conf import settings
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from tests.net import unused_port

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "metrics-token-0123456789abcdef"
GUNICORN = Path(sys.executable).with_name("gunicorn")


def _request(url: str, *, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _accepted(body: bytes) -> float:
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "tokenspend_usage_records_total" and sample.labels == {
                "source": "api",
                "outcome": "accepted",
            }:
                return sample.value
    return 0.0


def test_scrapes_of_any_worker_count_every_workers_traffic(api_a, catalog, tmp_path):
    db = connection.settings_dict
    metrics_dir = tmp_path / "prometheus"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DJANGO_SECRET_KEY": "test-only-secret-key-not-for-production",
        "DJANGO_DEBUG": "false",
        "FINOPS_VAR_DIR": str(tmp_path / "var"),
        "METRICS_ACCESS": "token",
        "METRICS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "LOG_FORMAT": "json",
    }
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "gunicorn.log"  # a file, not a pipe: a full pipe would stall the server
    server = subprocess.Popen(
        [str(GUNICORN), "finops.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _request(f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "gunicorn did not start"
            time.sleep(0.2)

        def workers_that_counted() -> set[str]:
            return {m.group(1) for f in os.listdir(metrics_dir) if (m := re.match(r"counter_(\d+)\.db", f))}

        # A new connection each: the workers race to accept them. Send until both have served some
        # (the second may still be loading when the first answers), then 20 more.
        auth = {"Authorization": f"Bearer {api_a.raw}", "Content-Type": "application/json"}
        sent, extra = 0, 20
        while extra:
            record = {"request_id": f"w-{sent}", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 1}
            status, body = _request(f"{base}/api/v1/usage", data=orjson.dumps(record), headers=auth)
            assert status == 200, body
            sent += 1
            if len(workers_that_counted()) == 2:
                extra -= 1
            assert sent < 500, "one worker served everything"
        scrapes = []
        for _ in range(10):
            status, body = _request(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert status == 200
            scrapes.append(_accepted(body))
        assert scrapes == [float(sent)] * 10
    finally:
        server.terminate()
        server.wait(timeout=30)
    # LOG_FORMAT=json: gunicorn's own lines and the app's request lines are all JSON objects.
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    parsed = [orjson.loads(line) for line in lines]
    assert any(p["logger"] == "gunicorn.error" and "Booting worker" in p["message"] for p in parsed)
    requests = [p for p in parsed if p["logger"] == "finops.requests" and p["path"] == "/api/v1/usage"]
    assert len(requests) == sent and {p["tenant"] for p in requests} == {"acme"}
