"""The demo lives: traffic that follows the seeded tenants' rhythm goes through the real ingest API and
moves the overview's "today" within a minute; the scripted runaway loop trips its tenant's daily budget
(an alert and a control); demo budgets are sized from the expected spend of their whole window; and
`manage.py serve` runs the traffic in demo mode unless DEMO_TRAFFIC=false."""

from __future__ import annotations

import io
import random
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from budgets.models import Alert, Budget, Control
from budgets.periods import period_bounds
from budgets.services.demo import HEALTHY_HARD, SPIKE_HARD, SPIKE_HARD_OVER_RELEASE, _nice
from budgets.services.ladder import budgets_evaluate
from finops.management.commands.serve import demo_traffic_on
from finops.models import UsageRecord
from finops.selectors.overview import overview_get
from finops.services import seed
from finops.services.rollups import rollups_refresh
from finops.services.seed.demo_live import LIVE_PREFIX, DemoTraffic, demo_expected_spend, demo_pairs, ticks_between
from tenants.scope import TenantScope

DAYS = 2


@pytest.fixture
def demo(db):
    seed.catalog_seed()
    seed.demo_seed(days=DAYS)


def _platform() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {seed.DEMO_PLATFORM_KEY}")
    return client


def _send(client: APIClient, records: list[dict]) -> None:
    response = client.post("/api/v1/usage", {"records": records}, format="json")
    assert response.status_code == 200, response.content[:2000]
    assert response.json()["accepted"] == len(records)


def _today(now) -> int:
    return overview_get(scope=TenantScope.system(), with_tenants=True, now=now).periods[0].cost_nanos


def test_a_minute_of_demo_traffic_moves_todays_figure_through_the_ingest_api(demo):
    start = timezone.now()
    before = _today(start)
    traffic = DemoTraffic(pairs=demo_pairs(), incident_every=0, rng=random.Random(12), started_at=start)
    client = _platform()
    sent = 0
    for tick in ticks_between(start, start + timedelta(seconds=55), traffic.interval):
        records = traffic.batch(tick)
        if records:
            _send(client, records)
            sent += len(records)
    assert sent >= 1
    live = UsageRecord.objects.filter(request_id__startswith=LIVE_PREFIX)
    assert live.count() == sent and {r.api_key.prefix for r in live} == {seed.DEMO_PLATFORM_KEY.split("_")[1]}
    assert len({r.tenant_id for r in live}) >= 1 and all(r.priced for r in live if r.model_id)
    rollups_refresh()
    assert _today(timezone.now()) > before


def test_the_scripted_runaway_loop_raises_an_alert_and_starts_a_control(demo):
    start = timezone.now()
    budget = Budget.objects.get(name="Northwind Traders daily")
    budgets_evaluate(now=start)
    before = set(Alert.objects.filter(budget=budget).values_list("pk", flat=True))
    traffic = DemoTraffic(
        pairs=demo_pairs(), first_incident_after=0, incident_seconds=120, rng=random.Random(3), started_at=start
    )
    assert traffic.incident(start) == ("runaway", 0.0)
    client = _platform()
    for tick in ticks_between(start, start + timedelta(seconds=115), traffic.interval):
        _send(client, traffic.batch(tick))
    assert traffic.incident(start + timedelta(seconds=130)) is None
    loop = UsageRecord.objects.filter(tenant__slug="northwind", tags__incident="runaway-loop")
    assert loop.count() > 20
    budgets_evaluate(now=timezone.now())
    hard = Alert.objects.filter(budget=budget, kind="hard_limit")
    assert hard.exists(), "the runaway loop did not raise the hard-limit alert of Northwind's daily budget"
    assert set(Alert.objects.filter(budget=budget).values_list("pk", flat=True)) - before, "no new alert"
    assert Control.objects.filter(budget=budget, kind="deny").exists()  # the budget's hard action
    # The next incident is the growing prompt on Initech's chat assistant.
    later = start + timedelta(seconds=traffic.incident_every + 60)
    assert traffic.incident(later)[0] == "prompt_growth"
    grown = traffic.batch(later)
    assert any(r.get("tags", {}).get("incident") == "prompt-growth" for r in grown)


def test_demo_budgets_are_sized_from_their_whole_windows_expected_spend(demo):
    now = timezone.now()
    for budget in Budget.objects.filter(name__in=["Northwind Traders daily", "Initech monthly"]):
        start, end = period_bounds(budget.period, budget.time_zone, now)
        expected = demo_expected_spend(
            start=start, end=end, metric=budget.metric, tenant_id=budget.tenant_id, workflow_id=budget.workflow_id
        )
        assert expected > 10_000_000  # more than a cent: a real day of demo traffic
        if budget.name != "Northwind Traders daily":
            assert budget.hard_limit == _nice(expected * HEALTHY_HARD), budget.name
            continue
        # The spiking tenant: room for 2.5 normal days, and never less than its whole day with the release's
        # traffic and a quarter more, so at whatever hour the demo is seeded the release alone stays under
        # the hard limit and only the runaway loop crosses it (the tests above and the approval page's).
        released = demo_expected_spend(
            start=start, end=end, metric=budget.metric, tenant_id=budget.tenant_id, with_release=True
        )
        assert released > expected
        assert budget.hard_limit == max(_nice(expected * SPIKE_HARD), _nice(released * SPIKE_HARD_OVER_RELEASE))
        assert budget.hard_limit > released


def test_serve_runs_the_traffic_in_demo_mode_unless_turned_off(demo, settings):
    assert demo_traffic_on()
    settings.DEMO_TRAFFIC = False
    assert not demo_traffic_on()


def test_the_command_posts_over_http(transactional_db, live_server):
    seed.catalog_seed()
    seed.demo_seed(days=1)
    out = io.StringIO()
    call_command("demo_traffic", url=live_server.url, ticks=1, interval=0.1, stdout=out, stderr=io.StringIO())
    assert "demo traffic: sending" in out.getvalue()
    assert UsageRecord.objects.filter(request_id__startswith=LIVE_PREFIX).exists()
