"""spend_total and spend_series: a scope's spend over a period, whichever rollup table, grain or raw
records answer it; and the one list of measures the rollup tables hold."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import F, Sum
from django.utils import timezone

from finops.measures import MEASURES, TOKEN_FIELDS, Measures
from finops.models import (
    AllTenantsHourRollup,
    AllTenantsModelRollup,
    AllTenantsRollup,
    AllTenantsWorkflowRollup,
    RollupMeasures,
    TenantDayRollup,
    TenantWorkflowRollup,
    UsageRecord,
    UsageRollup,
    UsageTagRollup,
)
from finops.selectors.spend_totals import spend_series, spend_total
from finops.services.rollups import hourly_retention_start, rollup_mark_dirty, rollups_refresh
from tenants.scope import TenantScope

from ..factories import WorkflowFactory

pytestmark = pytest.mark.django_db
_ids = itertools.count(1)


def _record(tenant, at, *, model, cost=1_000, workflow=None, env="prod", tokens=(100, 10, 1, 50, 5)):
    n = next(_ids)
    rollup_mark_dirty(pairs={(tenant.pk, at.astimezone(UTC).date())})  # as ingest does
    return UsageRecord.objects.create(
        tenant=tenant,
        workflow=workflow,
        model=model,
        model_name=model.name,
        environment=env,
        **dict(zip(TOKEN_FIELDS, tokens, strict=True)),
        cost_nanos=cost,
        priced=True,
        occurred_at=at,
        received_at=at,
        request_id=f"totals-{n}",
        content_hash=f"{n:032d}",
    )


def _raw(tenant, start, end, metric="cost", **filters) -> int:
    rows = UsageRecord.objects.filter(tenant=tenant, occurred_at__gte=start, occurred_at__lt=end, **filters)
    if metric == "tokens":
        return sum(rows.aggregate(**{f: Sum(F(f)) for f in TOKEN_FIELDS}).values(), start=0) or 0
    return rows.aggregate(t=Sum("cost_nanos"))["t"] or 0


def test_every_rollup_table_holds_exactly_the_measures():
    assert tuple(f.name for f in RollupMeasures._meta.fields) == MEASURES
    for model in (
        UsageRollup,
        TenantWorkflowRollup,
        TenantDayRollup,
        AllTenantsRollup,
        AllTenantsWorkflowRollup,
        AllTenantsModelRollup,
        AllTenantsHourRollup,
        UsageTagRollup,
    ):
        assert set(MEASURES) <= {f.name for f in model._meta.fields}, model
    assert Measures(input_tokens=1, cached_input_tokens=2, cache_write_tokens=3, output_tokens=4).tokens == 10


@pytest.mark.parametrize("metric", ["cost", "tokens"])
def test_total_is_exact_before_and_after_refresh(tenant_a, tenant_b, catalog, metric):
    summary = WorkflowFactory(slug="totals-summary")
    now = timezone.now()
    # A period that starts and ends mid-day (a budget in another time zone), five days long.
    start = (now - timedelta(days=4)).replace(hour=22, minute=30, second=0, microsecond=0)
    end = now + timedelta(hours=1)
    for i, at in enumerate([start - timedelta(minutes=1), start, start + timedelta(hours=7), now - timedelta(days=2)]):
        _record(tenant_a, at, model=catalog["gpt-4o"], cost=1_000 + i, workflow=summary, tokens=(i, 1, 2, 3, 4))
        _record(tenant_b, at, model=catalog["gpt-4o"], cost=9_999, workflow=summary)  # another tenant
    _record(tenant_a, now - timedelta(minutes=5), model=catalog["gpt-4o"], cost=77, env="dev", workflow=summary)
    _record(tenant_a, now - timedelta(minutes=5), model=catalog["gpt-4o"], cost=88, workflow=None)
    scope = TenantScope.for_tenant(tenant_a)

    def totals():
        return (
            spend_total(scope=scope, start=start, end=end, metric=metric),
            spend_total(scope=scope, start=start, end=end, metric=metric, workflow_id=summary.pk, environment="prod"),
        )

    dirty = totals()
    rollups_refresh()
    assert UsageRollup.objects.filter(grain="hour").exists()
    clean = totals()

    expected = (
        _raw(tenant_a, start, end, metric),
        _raw(tenant_a, start, end, metric, workflow=summary, environment="prod"),
    )
    assert dirty == clean == expected
    assert expected[0] > expected[1] > 0


def test_series_reads_days_before_the_hourly_retention_and_hours_after(tenant_a, tenant_b, catalog):
    retention = hourly_retention_start()
    start = retention - timedelta(days=3, hours=5)  # mid-day, before the retention
    now = timezone.now()
    old = [start + timedelta(hours=1), retention - timedelta(hours=2)]
    recent = [retention + timedelta(hours=3, minutes=20), now - timedelta(minutes=3)]
    for i, at in enumerate(old + recent):
        _record(tenant_a, at, model=catalog["gpt-4o"], cost=10**i)
        _record(tenant_b, at, model=catalog["gpt-4o"], cost=5)
    rollups_refresh()

    series = spend_series(scope=TenantScope.for_tenant(tenant_a), start=start, end=now)

    assert [b.amount for b in series] == [1, 10, 100, 1000]
    assert [b.end - b.start for b in series] == [timedelta(days=1)] * 2 + [timedelta(hours=1)] * 2
    # The first day is whole: it starts at the UTC midnight before `start`.
    assert series[0].start == datetime.combine(start.date(), datetime.min.time(), tzinfo=UTC)
    assert series[2].start == retention + timedelta(hours=3)
    everyone = spend_series(scope=TenantScope.system(), start=start, end=now)
    assert sum(b.amount for b in everyone) == 1111 + 4 * 5


def test_a_scope_without_tenants_sees_nothing(tenant_a, catalog):
    _record(tenant_a, timezone.now() - timedelta(minutes=5), model=catalog["gpt-4o"])
    rollups_refresh()
    nobody = TenantScope(tenant=None, visible_ids=frozenset(), is_platform=False)
    start, end = timezone.now() - timedelta(days=1), timezone.now()
    assert spend_total(scope=nobody, start=start, end=end) == 0
    assert spend_series(scope=nobody, start=start, end=end) == []
    assert spend_total(scope=TenantScope.system(), start=start, end=end) == 1_000
