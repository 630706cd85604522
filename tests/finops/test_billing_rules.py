"""Prices as providers bill them: 1-hour cache writes, long context, service tiers and channels,
priced exactly from each SDK's usage shape, and re-priced when a price is corrected (issue 11)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from finops.catalog import channel_from_model_name
from finops.models import LlmModel, ModelPrice, UsageRecord
from finops.pricing import PriceRow, TokenBuckets, cost_nanos
from finops.services.repricing import model_price_save
from tests.factories import LlmModelFactory, ModelPriceFactory, ModelTierFactory

URL = "/api/v1/usage"
SINCE = datetime(2024, 1, 1, tzinfo=UTC)
pytestmark = pytest.mark.django_db


def one(client, **record):
    record.setdefault("occurred_at", (datetime.now(UTC) - timedelta(hours=1)).isoformat())
    response = client.post(URL, orjson.dumps(record), content_type="application/json")
    assert response.status_code == 200, response.content
    item = response.json()["items"][0]
    assert item["status"] == "accepted", item
    return item, UsageRecord.objects.get(pk=item["id"])


@pytest.fixture
def billing(db) -> dict[str, LlmModel]:
    tier = ModelTierFactory(slug="standard", rank=2)
    sonnet = LlmModelFactory(name="claude-sonnet-4-5", provider="anthropic", tier=tier, aliases=["claude-sonnet-4-5@x"])
    ModelPriceFactory(
        model=sonnet,
        effective_from=SINCE,
        input=Decimal("3"),
        cached_input=Decimal("0.30"),
        cache_write=Decimal("3.75"),
        cache_write_1h=Decimal("6"),
        output=Decimal("15"),
        long_context_threshold=200_000,
        long_context_input=Decimal("6"),
        long_context_cached_input=Decimal("0.60"),
        long_context_cache_write=Decimal("7.50"),
        long_context_cache_write_1h=Decimal("12"),
        long_context_output=Decimal("22.50"),
        tier_multipliers={"batch": "0.5"},
    )
    gpt5 = LlmModelFactory(name="gpt-5", provider="openai", tier=tier)
    ModelPriceFactory(
        model=gpt5,
        effective_from=SINCE,
        input=Decimal("1.25"),
        cached_input=Decimal("0.125"),
        output=Decimal("10"),
        tier_multipliers={"batch": "0.5", "flex": "0.5"},
    )
    ModelPriceFactory(
        model=gpt5,
        effective_from=SINCE,
        service_tier="priority",
        input=Decimal("2.50"),
        cached_input=Decimal("0.25"),
        output=Decimal("20"),
    )
    ModelPriceFactory(
        model=gpt5, effective_from=SINCE, channel="azure", input=Decimal("1.375"), cached_input=0, output=Decimal("11")
    )
    pro = LlmModelFactory(name="gemini-2.5-pro", provider="google", tier=tier)
    ModelPriceFactory(
        model=pro,
        effective_from=SINCE,
        input=Decimal("1.25"),
        cached_input=Decimal("0.125"),
        output=Decimal("10"),
        long_context_threshold=200_000,
        long_context_input=Decimal("2.50"),
        long_context_cached_input=Decimal("0.25"),
        long_context_output=Decimal("15"),
    )
    flash = LlmModelFactory(name="gemini-2.0-flash", provider="google", tier=tier)
    ModelPriceFactory(model=flash, effective_from=SINCE, input=Decimal("0.10"), cached_input=0, output=Decimal("0.40"))
    ModelPriceFactory(
        model=flash,
        effective_from=SINCE,
        channel="vertex",
        input=Decimal("0.15"),
        cached_input=0,
        output=Decimal("0.60"),
    )
    return {"sonnet": sonnet, "gpt-5": gpt5, "pro": pro, "flash": flash}


# --- 1-hour cache writes ------------------------------------------------------------------------------


def test_anthropic_one_hour_cache_writes_cost_the_one_hour_price(api_a, billing):
    usage = {
        "input_tokens": 100,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 3000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
        "output_tokens": 100,
    }
    item, record = one(api_a.client, request_id="r1", model="claude-sonnet-4-5", usage=usage)
    # 100 x 3 + 1000 x 3.75 + 2000 x 6 + 100 x 15 = 17,550 micro-USD (all at 3.75 it would be 13,050)
    assert item["cost_usd"] == "0.017550000"
    assert (record.cache_write_tokens, record.cache_write_1h_tokens) == (3000, 2000)
    assert record.price_rule == "1h-writes" and record.price == ModelPrice.objects.get(model=billing["sonnet"])


def test_cache_creation_split_without_the_total_and_canonical_field(api_a, billing):
    usage = {"input_tokens": 0, "cache_creation": {"ephemeral_1h_input_tokens": 100_000}, "output_tokens": 0}
    item, record = one(api_a.client, request_id="r1", model="claude-sonnet-4-5", usage=usage)
    assert item["cost_usd"] == "0.600000000" and record.cache_write_tokens == 100_000
    item, _ = one(
        api_a.client,
        request_id="r2",
        model="claude-sonnet-4-5",
        cache_write_tokens=100_000,
        cache_write_1h_tokens=50_000,
    )
    assert item["cost_usd"] == "0.487500000"  # half at 3.75, half at 6


def test_one_hour_writes_above_the_total_are_rejected(api_a, billing):
    body = {"request_id": "r1", "model": "claude-sonnet-4-5", "cache_write_tokens": 10, "cache_write_1h_tokens": 11}
    item = api_a.client.post(URL, orjson.dumps(body), content_type="application/json").json()["items"][0]
    assert item["status"] == "rejected" and "cache_write_1h_tokens" in item["errors"]
    usage = {"input_tokens": 1, "cache_creation_input_tokens": 5, "cache_creation": {"ephemeral_1h_input_tokens": 6}}
    body = {"request_id": "r2", "model": "claude-sonnet-4-5", "usage": usage}
    item = api_a.client.post(URL, orjson.dumps(body), content_type="application/json").json()["items"][0]
    assert item["status"] == "rejected" and "usage.cache_creation" in item["errors"]


# --- long context ----------------------------------------------------------------------------------------


def test_a_request_across_the_long_context_threshold_is_billed_whole_at_the_premium(api_a, billing):
    below = {"input_tokens": 150_000, "cache_read_input_tokens": 50_000, "output_tokens": 1000}
    item, record = one(api_a.client, request_id="below", model="claude-sonnet-4-5", usage=below)
    # exactly 200,000 prompt tokens is not above: 150k x 3 + 50k x 0.30 + 1k x 15
    assert item["cost_usd"] == "0.480000000" and record.price_rule == "standard"
    above = {**below, "cache_read_input_tokens": 60_000}
    item, record = one(api_a.client, request_id="above", model="claude-sonnet-4-5", usage=above)
    # 150k x 6 + 60k x 0.60 + 1k x 22.50, every bucket at the premium
    assert item["cost_usd"] == "0.958500000" and record.price_rule == "long>200000"


def test_gemini_long_context_counts_cached_tokens_toward_the_threshold(api_a, billing):
    usage = {
        "promptTokenCount": 250_000,
        "cachedContentTokenCount": 50_000,
        "candidatesTokenCount": 1000,
        "thoughtsTokenCount": 500,
    }
    item, record = one(api_a.client, request_id="g1", model="gemini-2.5-pro", usage=usage)
    # 200k x 2.50 + 50k x 0.25 + 1k x 15 + 500 x 15 (reasoning at the long-context output price)
    assert item["cost_usd"] == "0.535000000" and record.price_rule == "long>200000"


def test_openai_usage_shape_across_a_272k_threshold(api_a, billing):
    ModelPrice.objects.filter(model=billing["gpt-5"], service_tier="standard", channel="api").update(
        long_context_threshold=272_000, long_context_input=Decimal("2.50"), long_context_output=Decimal("15")
    )
    usage = {
        "prompt_tokens": 300_000,
        "completion_tokens": 1000,
        "prompt_tokens_details": {"cached_tokens": 100_000},
        "completion_tokens_details": {"reasoning_tokens": 400},
    }
    item, record = one(api_a.client, request_id="o-long", model="gpt-5", usage=usage)
    # 200k x 2.50 + 100k x 0.125 (no long-context cached price: the standard one) + 600 x 15 + 400 x 15
    assert item["cost_usd"] == "0.527500000" and record.price_rule == "long>272000"


def test_gemini_usage_shape_in_the_batch_tier_with_tool_use_tokens(api_a, billing):
    usage = {"promptTokenCount": 1000, "toolUsePromptTokenCount": 200, "candidatesTokenCount": 100}
    ModelPrice.objects.filter(model=billing["pro"]).update(tier_multipliers={"batch": "0.5"})
    item, record = one(api_a.client, request_id="g-batch", model="gemini-2.5-pro", usage=usage, service_tier="batch")
    # (1,200 x 1.25 + 100 x 10) / 2 micro-USD: tool-use prompt tokens are input
    assert item["cost_usd"] == "0.001250000" and record.price_rule == "batch x0.5" and record.input_tokens == 1200


def test_bedrock_name_with_its_own_price_from_the_anthropic_shape(api_a, billing):
    ModelPriceFactory(
        model=billing["sonnet"],
        effective_from=SINCE,
        channel="bedrock",
        input=Decimal("3.30"),
        cached_input=Decimal("0.33"),
        cache_write=Decimal("4.125"),
        cache_write_1h=Decimal("6.60"),
        output=Decimal("16.50"),
    )
    LlmModel.objects.filter(pk=billing["sonnet"].pk).update(aliases=["us.anthropic.claude-sonnet-4-5-20250929-v1:0"])
    usage = {"input_tokens": 1000, "cache_creation": {"ephemeral_1h_input_tokens": 1000}, "output_tokens": 100}
    item, record = one(api_a.client, request_id="br", model="us.anthropic.claude-sonnet-4-5-20250929-v1:0", usage=usage)
    # 1,000 x 3.30 + 1,000 x 6.60 (1-hour writes) + 100 x 16.50, Bedrock's own row
    assert item["cost_usd"] == "0.011550000" and record.channel == "bedrock" and record.price.channel == "bedrock"


# --- service tiers ------------------------------------------------------------------------------------------

OPENAI_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 100,
    "prompt_tokens_details": {"cached_tokens": 200},
    "completion_tokens_details": {"reasoning_tokens": 0},
}


@pytest.mark.parametrize(
    ("tier", "cost", "rule"),
    [
        ("default", "0.002025000", "standard"),  # 800 x 1.25 + 200 x 0.125 + 100 x 10
        ("flex", "0.001012500", "flex x0.5"),
        ("batch", "0.001012500", "batch x0.5"),
        ("priority", "0.004050000", "priority"),  # its own row: 800 x 2.50 + 200 x 0.25 + 100 x 20
    ],
)
def test_each_openai_service_tier_is_priced(api_a, billing, tier, cost, rule):
    item, record = one(api_a.client, request_id=f"t-{tier}", model="gpt-5", usage=OPENAI_USAGE, service_tier=tier)
    assert item["cost_usd"] == cost and record.price_rule == rule
    assert record.service_tier == ("standard" if tier == "default" else tier)


def test_anthropic_usage_names_its_service_tier(api_a, billing):
    usage = {"input_tokens": 1000, "output_tokens": 1000, "service_tier": "batch"}
    item, record = one(api_a.client, request_id="b1", model="claude-sonnet-4-5", usage=usage)
    assert item["cost_usd"] == "0.009000000" and record.service_tier == "batch"  # (3,000 + 15,000) / 2 micro


def test_a_tier_without_a_price_falls_back_to_standard_and_says_so(api_a, billing):
    usage = {"input_tokens": 1000, "output_tokens": 0, "service_tier": "priority"}
    item, record = one(api_a.client, request_id="p1", model="claude-sonnet-4-5", usage=usage)
    assert item["cost_usd"] == "0.003000000" and "no priority price: standard" in record.price_rule


def test_unknown_service_tier_is_rejected(api_a, billing):
    body = {"request_id": "r1", "model": "gpt-5", "input_tokens": 1, "service_tier": "gold"}
    item = api_a.client.post(URL, orjson.dumps(body), content_type="application/json").json()["items"][0]
    assert item["status"] == "rejected" and "service_tier" in item["errors"]


# --- channels ------------------------------------------------------------------------------------------------


def test_vertex_name_is_priced_at_the_vertex_price(api_a, billing):
    item, record = one(
        api_a.client, request_id="v1", model="vertex_ai/gemini-2.0-flash", input_tokens=1000, output_tokens=1000
    )
    assert record.model == billing["flash"] and record.channel == "vertex"
    assert item["cost_usd"] == "0.000750000" and record.price_rule == "vertex"  # 1k x 0.15 + 1k x 0.60
    item, record = one(api_a.client, request_id="v2", model="gemini-2.0-flash", input_tokens=1000, output_tokens=1000)
    assert item["cost_usd"] == "0.000500000" and record.channel == "api"


def test_azure_channel_named_by_the_client(api_a, billing):
    item, record = one(api_a.client, request_id="a1", model="gpt-5", channel="azure", input_tokens=1_000_000)
    assert item["cost_usd"] == "1.375000000" and record.price.channel == "azure"


def test_a_channel_without_its_own_price_uses_the_api_price_and_says_so(api_a, billing):
    item, record = one(api_a.client, request_id="b1", model="claude-sonnet-4-5", channel="bedrock", input_tokens=1000)
    assert item["cost_usd"] == "0.003000000"
    assert record.channel == "bedrock" and record.price_rule == "(no bedrock price: api)"


@pytest.mark.parametrize(
    ("name", "channel"),
    [
        ("vertex_ai/gemini-2.0-flash", "vertex"),
        ("bedrock/anthropic.claude-3-5-haiku-20241022-v1:0", "bedrock"),
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "bedrock"),
        ("claude-3-5-haiku@20241022", "vertex"),
        ("azure/my-gpt-5", "azure"),
        ("gpt-5", "api"),
    ],
)
def test_channel_from_model_name(name, channel):
    assert channel_from_model_name(name) == channel


# --- the record says what priced it; a correction re-prices every rule -----------------------------------


def test_usage_api_shows_the_price_version_and_rule(api_a, billing):
    item, record = one(api_a.client, request_id="r1", model="gpt-5", service_tier="flex", input_tokens=10)
    body = api_a.client.get(f"{URL}/{item['id']}").json()
    assert body["price"] == record.price_id and body["price_rule"] == "flex x0.5" and body["service_tier"] == "flex"


def test_a_price_correction_reprices_each_rule(api_a, billing, django_capture_on_commit_callbacks):
    hour, _ = one(
        api_a.client,
        request_id="hour",
        model="claude-sonnet-4-5",
        usage={"input_tokens": 0, "cache_creation": {"ephemeral_1h_input_tokens": 100_000}},
    )
    long, _ = one(
        api_a.client,
        request_id="long",
        model="claude-sonnet-4-5",
        usage={"input_tokens": 1_000_000, "output_tokens": 0},
    )
    batch, _ = one(
        api_a.client,
        request_id="batch",
        model="claude-sonnet-4-5",
        usage={"input_tokens": 1000, "output_tokens": 0, "service_tier": "batch"},
    )
    vertex, _ = one(api_a.client, request_id="vertex", model="vertex_ai/gemini-2.0-flash", input_tokens=1_000_000)
    assert [hour["cost_usd"], long["cost_usd"], batch["cost_usd"], vertex["cost_usd"]] == [
        "0.600000000",
        "6.000000000",
        "0.001500000",
        "0.150000000",
    ]
    price = ModelPrice.objects.get(model=billing["sonnet"])
    price.cache_write_1h = Decimal("6.50")
    price.long_context_input = Decimal("6.25")
    price.tier_multipliers = {"batch": "0.4"}
    with django_capture_on_commit_callbacks(execute=True):
        model_price_save(price=price)
    vertex_price = ModelPrice.objects.get(model=billing["flash"], channel="vertex")
    vertex_price.input = Decimal("0.16")
    with django_capture_on_commit_callbacks(execute=True):
        model_price_save(price=vertex_price)
    costs = {r.request_id: (r.cost_nanos, r.price_rule) for r in UsageRecord.objects.all()}
    assert costs == {
        "hour": (650_000_000, "1h-writes"),
        "long": (6_250_000_000, "long>200000"),
        "batch": (1_200_000, "batch x0.4"),
        "vertex": (160_000_000, "vertex"),
    }


def test_tier_multiplier_costs_round_once_half_to_even():
    row = PriceRow.from_usd_per_mtok(
        id=1, model_id=1, effective_from=SINCE, input="0.000001", cached_input=0, cache_write=0, output=0
    )
    half = row.derived(service_tier="batch", multiplier_permille=500)
    # 1,000 tokens at 1 pico-USD = 1,000 pico = 1 nano; half of it is 0.5 nano -> 0 (even), 3,000 -> 1.5 -> 2
    assert cost_nanos(half, TokenBuckets(input=1000)) == 0
    assert cost_nanos(half, TokenBuckets(input=3000)) == 2


def test_long_context_rule_needs_its_prices(billing):
    from django.core.exceptions import ValidationError

    price = ModelPrice(
        model=billing["gpt-5"],
        effective_from=SINCE,
        channel="azure",
        service_tier="batch",
        input=1,
        cached_input=1,
        cache_write=1,
        output=1,
        long_context_threshold=272_000,
    )
    with pytest.raises(ValidationError) as err:
        price.full_clean()
    assert "long_context_input" in err.value.message_dict
    price.long_context_threshold = None
    price.tier_multipliers = {"priority": "2"}
    with pytest.raises(ValidationError) as err:
        price.full_clean()
    assert "tier_multipliers" in err.value.message_dict


def test_usage_page_shows_tier_channel_price_version_and_rule(api_a, viewer_a, billing):
    from django.test import Client

    _, record = one(
        api_a.client,
        request_id="page",
        model="claude-sonnet-4-5",
        usage={"input_tokens": 300_000, "cache_creation": {"ephemeral_1h_input_tokens": 10}, "service_tier": "batch"},
    )
    client = Client()
    client.force_login(viewer_a)
    html = client.get(f"/usage/{record.pk}/").content.decode()
    assert "Service tier <strong>batch</strong>" in html and "Provider API" in html
    assert f"price version #{record.price_id}" in html and "batch x0.5 long&gt;200000 1h-writes" in html
    assert "… of which 1-hour writes" in html and "$6.00" in html


def test_model_page_shows_each_channel_and_tier_in_force(viewer_a, billing):
    from django.test import Client

    client = Client()
    client.force_login(viewer_a)
    html = client.get("/models/gpt-5/").content.decode()
    assert "How calls are billed" in html and "Azure" in html and "priority" in html and "batch ×0.5" in html
    html = client.get("/models/claude-sonnet-4-5/").content.decode()
    assert "above 200,000 input tokens the whole request" in html


# --- the shipped catalog ---------------------------------------------------------------------------------


def test_shipped_catalog_bills_the_rules_and_knows_the_missing_models(db):
    from finops.catalog import get_catalog
    from finops.services import seed

    seed.catalog_seed()
    catalog = get_catalog()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    for name in (
        "gpt-5.2", "gpt-5-pro", "gpt-5-codex", "gpt-5.1-codex", "o3-pro", "o1-pro", "o3-deep-research",
        "text-embedding-3-small", "text-embedding-3-large", "gemini-embedding-001", "gemini-3-flash-preview",
        "gpt-realtime", "gpt-audio", "gpt-image-1",
    ):  # fmt: skip
        entry = catalog.resolve(name)
        assert entry is not None and catalog.price_at(entry.id, now) is not None, name
    sonnet = catalog.resolve("claude-sonnet-4-5-20250929")
    price = catalog.price_at(sonnet.id, now)
    # 1-hour writes at 2x input; 300k prompt tokens cross 200k: 300k x $6 = $1.80
    assert cost_nanos(price, TokenBuckets(cache_write=1_000, cache_write_1h=1_000)) == 6_000_000
    assert cost_nanos(price, TokenBuckets(input=300_000)) == 1_800_000_000
    assert cost_nanos(catalog.price_at(sonnet.id, now, service_tier="batch"), TokenBuckets(input=1000)) == 1_500_000
    # A batch call above 200k: the batch row's long-context prices (half of $6)
    batch = catalog.price_at(sonnet.id, now, service_tier="batch")
    assert cost_nanos(batch, TokenBuckets(input=300_000)) == 900_000_000
    flash = catalog.resolve("vertex_ai/gemini-2.0-flash")
    vertex = catalog.price_at(flash.id, now, channel="vertex")
    api = catalog.price_at(flash.id, now)
    assert (vertex.channel, vertex.input, api.input) == ("vertex", 150_000, 100_000)  # pico-USD per token
    gpt54 = catalog.resolve("gpt-5.4")
    assert catalog.price_at(gpt54.id, now).long_context_threshold == 272_000
    assert catalog.resolve("anthropic.claude-sonnet-4-5-20250929-v1:0") == sonnet


def test_operator_adds_a_vertex_price_with_a_long_context_rule_on_the_model_page(
    operator, billing, django_capture_on_commit_callbacks
):
    from django.test import Client

    client = Client()
    client.force_login(operator)
    form = {
        "effective_from": "2025-06-01T00:00:00",
        "channel": "vertex",
        "service_tier": "standard",
        "input": "1.40",
        "cached_input": "0.14",
        "cache_write": "1.40",
        "cache_write_1h": "",
        "output": "11",
        "reasoning": "",
        "tier_multipliers": '{"batch": "0.5"}',
        "long_context_threshold": "200000",
        "long_context_input": "2.80",
        "long_context_output": "16.50",
        "source": "https://cloud.google.com/vertex-ai/generative-ai/pricing",
        "price_taken_on": "2026-12-06",
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/models/gemini-2.5-pro/prices/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    added = ModelPrice.objects.get(model=billing["pro"], channel="vertex")
    assert (added.long_context_threshold, added.long_context_input, added.tier_multipliers) == (
        200_000,
        Decimal("2.8"),
        {"batch": "0.5"},
    )
    bad = client.post("/models/gemini-2.5-pro/prices/add/", {**form, "long_context_output": ""})
    assert bad.status_code == 200 and "at least its input and output prices" in bad.content.decode()


def test_a_channel_price_not_yet_in_force_falls_back_to_the_api_price(api_a, billing):
    ModelPrice.objects.filter(model=billing["flash"], channel="vertex").update(
        effective_from=datetime.now(UTC) + timedelta(days=1)
    )
    item, record = one(api_a.client, request_id="v-early", model="vertex_ai/gemini-2.0-flash", input_tokens=1000)
    assert item["cost_usd"] == "0.000100000" and record.price_rule == "(no vertex price: api)"


def test_inlined_cost_matches_the_composed_rules_on_random_calls():
    import random

    from finops.pricing import PERMILLE, _round_half_even, cost_pico_per_mille

    rng = random.Random(11)
    row = PriceRow.from_usd_per_mtok(
        id=1,
        model_id=1,
        effective_from=SINCE,
        input="3",
        cached_input="0.3",
        cache_write="3.75",
        cache_write_1h="6",
        output="15",
        long_context_threshold=200_000,
        long_context={"input": "6", "cached_input": "0.6", "cache_write": "7.5", "output": "22.5"},
    )
    for multiplier in (PERMILLE, 500, 1750):
        price = row.derived(multiplier_permille=multiplier)
        for _ in range(300):
            write = rng.randint(0, 150_000)
            tokens = TokenBuckets(
                input=rng.randint(0, 150_000),
                cached_input=rng.randint(0, 50_000),
                cache_write=write,
                cache_write_1h=rng.randint(0, write),
                output=rng.randint(0, 9_999),
                reasoning=rng.randint(0, 999),
            )
            assert cost_nanos(price, tokens) == _round_half_even(cost_pico_per_mille(price, tokens), 10**6)
