"""/metrics: Prometheus exposition, off by default, behind a token or allowed networks; counters move with traffic."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from budgets.models import Alert, Notification, NotificationChannel
from finops.models import RollupDirtyDay
from tests.finops.test_litellm import json_array, payload
from tests.finops.test_otlp import GENAI, export

TOKEN = "metrics-token-0123456789abcdef"


def scrape(client: Client | None = None) -> dict[tuple[str, tuple], float]:
    client = client or Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def token_access(settings):
    settings.METRICS_ACCESS = "token"
    settings.METRICS_TOKEN = TOKEN


def test_metrics_are_off_by_default(db):
    response = Client().get("/metrics")
    assert response.status_code == 404


def test_the_token_protects_metrics(db, token_access):
    assert Client().get("/metrics").status_code == 403
    assert Client(HTTP_AUTHORIZATION="Bearer wrong-token-0123456789").get("/metrics").status_code == 403
    assert Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}").get("/metrics").status_code == 200


def test_allowed_networks_protect_metrics(db, settings):
    settings.METRICS_ACCESS = "network"
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert Client(REMOTE_ADDR="10.20.30.40", HTTP_HOST="10.0.0.5:8000").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="192.168.1.9").get("/metrics").status_code == 403
    assert Client().get("/metrics").status_code == 403  # 127.0.0.1 is not in the list


def test_counters_move_with_the_traffic_sent(token_access, api_a, catalog):
    before = scrape()

    # POST /api/v1/usage: two accepted, one rejected; then a replay of the first: a duplicate
    records = [
        {"request_id": "m-1", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5},
        {"request_id": "m-2", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5},
        {"request_id": "m-3", "model": "gpt-4o", "output_tokens": -1},
    ]
    api_a.client.post("/api/v1/usage", {"records": records}, format="json")
    api_a.client.post("/api/v1/usage", records[0], format="json")
    # OTLP: one usage span and one skipped span; LiteLLM: one call
    spans = export([{"span_id": "00000000000000a1", "attrs": GENAI}, {"span_id": "00000000000000a2", "attrs": {}}])
    api_a.client.post("/api/v1/otlp/v1/traces", spans.SerializeToString(), content_type="application/x-protobuf")
    api_a.client.post("/api/v1/litellm/logs", json_array([payload("m-call")]).encode(), content_type="application/json")
    # preflight: no budget, so an allow with a hold-free answer
    decision = api_a.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 100}, format="json").json()

    after = scrape()
    delta = {
        key: value(after, "tokenspend_usage_records_total", source=src, outcome=out)
        - value(before, "tokenspend_usage_records_total", source=src, outcome=out)
        for key, (src, out) in {
            "api_accepted": ("api", "accepted"),
            "api_rejected": ("api", "rejected"),
            "api_duplicate": ("api", "duplicate"),
            "otlp_accepted": ("otlp", "accepted"),
            "litellm_accepted": ("litellm", "accepted"),
        }.items()
    }
    assert delta == {
        "api_accepted": 2,
        "api_rejected": 1,
        "api_duplicate": 1,
        "otlp_accepted": 1,
        "litellm_accepted": 1,
    }
    skipped = value(after, "tokenspend_usage_items_skipped_total", source="otlp") - value(
        before, "tokenspend_usage_items_skipped_total", source="otlp"
    )
    assert skipped == 1
    ingests = value(after, "tokenspend_ingest_batch_seconds_count", source="api") - value(
        before, "tokenspend_ingest_batch_seconds_count", source="api"
    )
    assert ingests == 2
    d = decision["decision"]
    assert (
        value(after, "tokenspend_preflight_decisions_total", decision=d)
        - value(before, "tokenspend_preflight_decisions_total", decision=d)
        == 1
    )
    assert value(after, "tokenspend_preflight_seconds_count") - value(before, "tokenspend_preflight_seconds_count") == 1
    # the records just stored are not rolled up yet: the rollup lag is their age
    assert RollupDirtyDay.objects.exists()
    assert value(after, "tokenspend_rollup_lag_seconds") >= 0
    assert ("tokenspend_celery_queue_depth", (("queue", "celery"),)) in after


def test_budget_state_is_read_from_the_database(token_access, tenant_a, api_a, catalog):
    from budgets.models import Budget

    Budget.objects.create(
        tenant=tenant_a, name="hard", metric="cost", period="month", time_zone="UTC", hard_limit=10**12
    )
    hold = api_a.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 100}, format="json").json()
    api_a.client.post(f"/api/v1/reservations/{hold['reservation_id']}/release")
    api_a.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 100}, format="json")
    alert = Alert.objects.create(
        kind=Alert.Kind.ANOMALY, level=0, tenant=tenant_a, subject="spike", message="x", created_at=timezone.now()
    )
    channel = NotificationChannel.objects.create(tenant=tenant_a, kind="webhook", target="https://hooks.example/")
    Notification.objects.create(
        alert=alert, channel=channel, status=Notification.Status.FAILED, next_attempt_at=timezone.now()
    )

    samples = scrape()
    assert value(samples, "tokenspend_reservations_held") == 1
    assert value(samples, "tokenspend_reservations_total", status="released") == 1
    assert value(samples, "tokenspend_reservations_total", status="expired") == 0
    assert value(samples, "tokenspend_alerts_total", kind="anomaly") == 1
    assert value(samples, "tokenspend_alerts_unacknowledged", kind="anomaly") == 1
    assert value(samples, "tokenspend_notification_delivery_failures_total", channel="webhook") == 1
    assert value(samples, "tokenspend_notification_deliveries_retrying", channel="webhook") == 0


def test_the_grafana_dashboard_reads_only_metrics_that_exist(token_access, api_a, catalog):
    import json
    import re

    from django.conf import settings

    api_a.client.post("/api/v1/usage", {"request_id": "g-1", "model": "gpt-4o", "input_tokens": 1}, format="json")
    api_a.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 100}, format="json")
    exposed = {name for name, _ in scrape()}
    dashboard = json.loads((settings.BASE_DIR / "docs" / "grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"tokenspend_\w+", target["expr"])
    }
    assert len(used) >= 10
    assert used <= exposed, f"the dashboard queries metrics /metrics does not expose: {sorted(used - exposed)}"
