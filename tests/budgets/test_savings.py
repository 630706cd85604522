"""The savings page (issue 11): cache hit rate and dollars saved, dollars controls saved, a what-if on
another model with the difference per 30 days, and ranked recommendations; figures against raw sums."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.test import Client
from django.utils import timezone

from budgets.models import Control, ControlKind, Reservation
from budgets.savings import savings_recommendations, savings_summary, whatif_reprice
from finops.catalog import get_catalog
from finops.models import UsageRecord, Workflow
from finops.pricing import PriceRow, TokenBuckets, cost_nanos
from tenants.scope import TenantScope
from tests.factories import LlmModelFactory, ModelPriceFactory, ModelTierFactory

pytestmark = pytest.mark.django_db
SINCE = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def models(db):
    economy = ModelTierFactory(slug="economy", rank=1)
    premium = ModelTierFactory(slug="premium", rank=3)
    small = LlmModelFactory(name="small-model", provider="acme-ai", tier=economy, encoding="o200k_base")
    ModelPriceFactory(
        model=small, effective_from=SINCE, input=Decimal("1"), cached_input=Decimal("0.1"), output=Decimal("4")
    )
    big = LlmModelFactory(name="big-model", provider="acme-ai", tier=premium, encoding="o200k_base", downgrade_to=small)
    ModelPriceFactory(
        model=big,
        effective_from=SINCE,
        input=Decimal("10"),
        cached_input=Decimal("1"),
        output=Decimal("40"),
        long_context_threshold=100_000,
        long_context_input=Decimal("20"),
        long_context_cached_input=Decimal("2"),
        long_context_output=Decimal("60"),
        tier_multipliers={"batch": "0.5"},
    )
    return {"small": small, "big": big}


def _post(api, records):
    response = api.client.post("/api/v1/usage", {"records": records}, format="json")
    assert response.status_code == 200, response.content


def _at(hours=1):
    return (timezone.now() - timedelta(hours=hours)).isoformat()


@pytest.fixture
def usage(api_a, api_b, models):
    # support: long prompts, mostly cached, on the premium model; one batch call; one above 100k tokens.
    support = [
        {"request_id": f"s{i}", "workflow": "support", "model": "big-model", "input_tokens": 1000,
         "cached_input_tokens": 9000, "output_tokens": 200, "occurred_at": _at()}
        for i in range(3)
    ]  # fmt: skip
    support.append(
        {"request_id": "s-batch", "workflow": "support", "model": "big-model", "service_tier": "batch",
         "input_tokens": 500, "cached_input_tokens": 5000, "output_tokens": 100, "occurred_at": _at()}
    )  # fmt: skip
    support.append(
        {"request_id": "s-long", "workflow": "support", "model": "big-model", "input_tokens": 60_000,
         "cached_input_tokens": 50_000, "output_tokens": 300, "occurred_at": _at()}
    )  # fmt: skip
    # digest: long prompts, nothing cached, on the small model.
    digest = [
        {"request_id": f"d{i}", "workflow": "digest", "model": "small-model", "input_tokens": 8000,
         "output_tokens": 300, "occurred_at": _at()}
        for i in range(4)
    ]  # fmt: skip
    _post(api_a, support + digest)
    # Another tenant's calls of the same workflow never count.
    _post(api_b, [{"request_id": "b1", "workflow": "support", "model": "big-model", "input_tokens": 1,
                   "cached_input_tokens": 999_999, "output_tokens": 1, "occurred_at": _at()}])  # fmt: skip


def _window():
    until = timezone.now()
    return until - timedelta(days=30), until


def _raw_cache_saved(tenant) -> int:
    """Per record: the cost with cached tokens billed as input, minus its cost (exact, from raw rows)."""
    catalog = get_catalog()
    total = 0
    for r in UsageRecord.objects.filter(tenant=tenant, priced=True):
        price = catalog.price_at(r.model_id, r.occurred_at, service_tier=r.service_tier)
        actual = TokenBuckets(input=r.input_tokens, cached_input=r.cached_input_tokens, output=r.output_tokens)
        uncached = TokenBuckets(input=r.input_tokens + r.cached_input_tokens, output=r.output_tokens)
        total += cost_nanos(price, uncached) - cost_nanos(price, actual)
    return total


def test_cache_hit_rate_and_dollars_saved_match_raw_sums(tenant_a, usage):
    since, until = _window()
    summary = savings_summary(scope=TenantScope.for_tenant(tenant_a), since=since, until=until)
    support = next(w for w in summary.workflows if w.workflow == "support")
    raw = UsageRecord.objects.filter(tenant=tenant_a, workflow__slug="support").aggregate(
        inp=Sum("input_tokens"), cached=Sum("cached_input_tokens")
    )
    assert support.cached_tokens == raw["cached"] == 3 * 9000 + 5000 + 50_000
    assert support.hit_rate == Decimal(raw["cached"]) / (raw["inp"] + raw["cached"])
    # 27,000 x $9 + 5,000 x $9 x 0.5 (batch) + 50,000 x $18 (long context, whole request): per 1M
    assert support.cache_saved_nanos == 243_000_000 + 22_500_000 + 900_000_000
    assert summary.cache_saved_nanos == _raw_cache_saved(tenant_a)
    assert summary.cost_nanos == UsageRecord.objects.filter(tenant=tenant_a).aggregate(s=Sum("cost_nanos"))["s"]
    digest = next(w for w in summary.workflows if w.workflow == "digest")
    assert (digest.hit_rate, digest.cache_saved_nanos) == (Decimal(0), 0)


def test_what_if_reprices_the_period_on_another_model_with_the_monthly_difference(tenant_a, usage, models):
    since, until = _window()
    workflow = Workflow.objects.get(slug="digest")
    result = whatif_reprice(
        scope=TenantScope.for_tenant(tenant_a), workflow=workflow, target=models["big"], since=since, until=until
    )
    records = UsageRecord.objects.filter(tenant=tenant_a, workflow=workflow)
    big = PriceRow.from_model_price(models["big"].prices.get())
    expected = sum(
        cost_nanos(big, TokenBuckets(input=r.input_tokens, cached_input=r.cached_input_tokens, output=r.output_tokens))
        for r in records
    )
    assert result.calls == 4 and result.actual_nanos == records.aggregate(s=Sum("cost_nanos"))["s"]
    assert result.whatif_nanos == expected == 4 * (8000 * 10_000 + 300 * 40_000)  # nano-USD
    assert result.monthly_difference_nanos == expected - result.actual_nanos  # a 30-day period


def test_what_if_applies_the_long_context_rule_per_call(tenant_a, usage, models):
    since, until = _window()
    support = Workflow.objects.get(slug="support")
    result = whatif_reprice(
        scope=TenantScope.for_tenant(tenant_a), workflow=support, target=models["big"], since=since, until=until
    )
    big = PriceRow.from_model_price(models["big"].prices.get())
    expected = sum(
        cost_nanos(big, TokenBuckets(input=r.input_tokens, cached_input=r.cached_input_tokens, output=r.output_tokens))
        for r in UsageRecord.objects.filter(tenant=tenant_a, workflow=support)
    )
    assert result.whatif_nanos == expected  # at standard tier: the batch call costs full price here


def test_controls_saved_is_the_estimate_as_asked_against_the_settled_cost(api_a, tenant_a, models):
    Control.objects.create(
        tenant=tenant_a,
        kind=ControlKind.CAP_OUTPUT_TOKENS,
        params={"max_output_tokens": 100},
        source=Control.Source.MANUAL,
        reason="test cap",
        starts_at=timezone.now() - timedelta(minutes=1),
    )
    body = {"model": "big-model", "workflow": "support", "input_tokens": 1000, "max_output_tokens": 4000}
    out = api_a.client.post("/api/v1/preflight", body, format="json").json()
    assert out["max_output_tokens"] == 100
    reservation = Reservation.objects.get(pk=out["reservation_id"])
    assert reservation.requested_cost_nanos == 1000 * 10_000 + 4000 * 40_000  # as asked
    _post(api_a, [{"request_id": "c1", "workflow": "support", "model": "big-model", "input_tokens": 1000,
                   "output_tokens": 90, "reservation_id": out["reservation_id"]}])  # fmt: skip
    since, until = _window()
    summary = savings_summary(scope=TenantScope.for_tenant(tenant_a), since=since, until=until)
    support = next(w for w in summary.workflows if w.workflow == "support")
    assert support.controlled_calls == 1
    assert support.controls_saved_nanos == 170_000_000 - (1000 * 10_000 + 90 * 40_000)


def test_recommendations_rank_the_largest_opportunities(tenant_a, usage):
    since, until = _window()
    recs = savings_recommendations(scope=TenantScope.for_tenant(tenant_a), since=since, until=until)
    titles = [r.title for r in recs]
    assert titles[0] == "Move support from big-model to small-model"
    assert "Cache the repeated prefix of digest on small-model" in titles
    assert [r.monthly_nanos for r in recs] == sorted((r.monthly_nanos for r in recs), reverse=True)
    # digest: 32,000 prompt tokens, none cached; at 50% cached, 16,000 tokens x ($1 - $0.10) per 1M
    digest = next(r for r in recs if r.workflow == "digest")
    assert digest.monthly_nanos == 16_000 * 900


def test_savings_page_shows_the_scopes_figures_and_the_what_if(viewer_a, viewer_b, tenant_a, usage):
    client = Client()
    client.force_login(viewer_a)
    since, until = _window()
    summary = savings_summary(scope=TenantScope.for_tenant(tenant_a), since=since, until=until)
    html = client.get("/savings/?days=30&workflow=digest&model=big-model").content.decode()
    assert "Saved by prompt caching" in html and 'data-testid="whatif-result"' in html
    assert "Move support from big-model to small-model" in html
    html_all = client.get("/savings/").content.decode()
    assert "$1.17" in html_all  # 1,165,500,000 nano-USD saved by caching, tenant A only
    assert summary.cache_saved_nanos == 1_165_500_000
    other = Client()
    other.force_login(viewer_b)
    html_b = other.get("/savings/").content.decode()
    assert "$1.17" not in html_b and "digest" not in html_b
