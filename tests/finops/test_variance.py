"""Variance from baseline: this hour and today against the expected value and band, scoped, on the pages."""

from datetime import UTC, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from finops.models import UsageRollup
from finops.selectors.variance import variance_now
from tenants.models import Membership
from tenants.scope import TenantScope
from tests.factories import MembershipFactory, UserFactory, WorkflowFactory

NANOS = 1_000_000_000


def _hours(tenant, workflow, model, start, hours, cost_usd):
    UsageRollup.objects.bulk_create(
        UsageRollup(
            grain=UsageRollup.Grain.HOUR,
            bucket_start=start + timedelta(hours=i),
            tenant=tenant,
            workflow=workflow,
            model=model,
            environment="prod",
            calls=100,
            cost_nanos=int((cost_usd(i) if callable(cost_usd) else cost_usd) * NANOS),
        )
        for i in range(hours)
    )


@pytest.fixture
def world(tenant_a, tenant_b, catalog):
    wf = WorkflowFactory(slug="support-bot", name="Support bot")
    now = timezone.now().astimezone(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    start = hour - timedelta(days=10)
    _hours(tenant_a, wf, catalog["gpt-4o"], start, 240, 2.0)  # $2 every hour for ten days
    _hours(tenant_b, wf, catalog["gpt-4o"], start, 241, 50.0)  # B spends far more, and this hour too
    return wf, hour


def test_steady_spend_is_inside_the_band(tenant_a, world):
    wf, hour = world
    now = hour + timedelta(minutes=30)
    _hours(tenant_a, wf, None, hour, 1, 1.0)  # half an hour at $2/h
    v = variance_now(scope=TenantScope.for_tenant(tenant_a), tenant_id=tenant_a.pk, now=now)
    assert v.hour.expected == pytest.approx(1.0, rel=0.01) and v.hour.actual == pytest.approx(1.0)
    assert abs(v.hour.percent) < 1 and not v.hour.outside
    assert v.today.expected == pytest.approx(2.0 * now.hour + 1.0, rel=0.01)
    assert v.today.low <= v.today.actual <= v.today.high


def test_a_spike_this_hour_is_outside_and_counted_for_the_scope_only(tenant_a, world):
    wf, hour = world
    now = hour + timedelta(minutes=30)
    _hours(tenant_a, wf, None, hour, 1, 9.0)
    v = variance_now(scope=TenantScope.for_tenant(tenant_a), workflow_id=wf.pk, now=now)
    assert v.hour.actual == pytest.approx(9.0)  # tenant B's $50 hours are not in A's scope
    assert v.hour.outside and v.hour.percent == pytest.approx(800, rel=0.02)


def test_no_hourly_usage_means_no_panel(tenant_a, catalog):
    assert not variance_now(scope=TenantScope.for_tenant(tenant_a)).available


def test_the_pages_show_the_panel(tenant_a, api_a, world):
    from finops.services.rollups import rollups_refresh

    record = {
        "request_id": "var-1",
        "workflow": "support-bot",
        "model": "gpt-4o",
        "input_tokens": 10,
        "output_tokens": 5,
    }
    assert api_a.client.post("/api/v1/usage", record, format="json").status_code == 200
    rollups_refresh()  # today's daily rows: the pages' "has usage"
    user = UserFactory(username="viewer-var")
    MembershipFactory(tenant=tenant_a, role=Membership.Role.VIEWER, user=user)
    client = Client()
    client.force_login(user)
    for url in ("/", "/tenants/acme/", "/workflows/support-bot/"):
        html = client.get(url).content.decode()
        assert "Variance from baseline" in html and 'data-variance-row="today"' in html, url
        assert "$50" not in html.split("Variance from baseline")[1].split("</section>")[0]


def test_all_tenants_read_the_hourly_totals_and_agree_with_the_tenants_summed(tenant_a, tenant_b, world):
    """The platform-wide series comes from AllTenantsHourRollup (one row per hour); it must give the same
    answer as summing every tenant's hourly rows, which a scope naming the tenants still does."""
    from finops.models import AllTenantsHourRollup
    from finops.services.rollups import rollup_recompute_all_tenants_day

    wf, hour = world
    now = hour + timedelta(minutes=30)
    _hours(tenant_b, wf, None, hour, 1, 400.0)  # a spike this hour, for all tenants
    assert not variance_now(scope=TenantScope.system(), now=now).available  # not derived yet: nothing read
    day = hour - timedelta(days=10)
    while day.date() <= hour.date():
        rollup_recompute_all_tenants_day(day=day.date())
        day += timedelta(days=1)
    assert AllTenantsHourRollup.objects.count() == 241  # ten days of hours and the one under way
    everyone = variance_now(scope=TenantScope.system(), now=now)
    named = variance_now(scope=TenantScope.for_tenant_ids([tenant_a.pk, tenant_b.pk]), now=now)
    assert everyone == named and everyone.hour.outside
    assert everyone.hour.actual == pytest.approx(50.0 + 400.0)
    # The all-tenant table is never a tenant's answer: A's scope still reads only A's hours.
    own = variance_now(scope=TenantScope.for_tenant(tenant_a), now=now)
    assert own.hour.actual == pytest.approx(0.0)  # B's $450 this hour is not in it
