"""Preflight estimates that are upper bounds (issue 11): long context, cache writes, service tiers and
channels in the worst case; a safety factor on tiktoken's count of non-OpenAI prompts, learned from
settled reservations; estimate against actual on each settled reservation; the models page."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from budgets.estimates import model_family
from budgets.models import LearnedSafetyFactor, Reservation
from budgets.tasks import learn_safety_factors
from finops import tokens
from finops.models import LlmModel
from finops.pricing import NANOS_PER_USD
from tests.factories import LlmModelFactory, ModelPriceFactory, ModelTierFactory

from .factories import BudgetFactory

URL = "/api/v1/preflight"
SINCE = datetime(2024, 1, 1, tzinfo=UTC)
pytestmark = pytest.mark.django_db

# A prompt in the shape of a tool-using agent turn: prose plus a JSON tool definition.
PROMPT = (
    "You are a support agent. Summarise the customer's ticket below and decide whether to refund.\n"
    '{"name": "refund", "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}, '
    '"amount_usd": {"type": "number"}}}}\n' + "The parcel arrived damaged and the customer asks for a refund. " * 20
)


@pytest.fixture
def models(db) -> dict[str, LlmModel]:
    tier = ModelTierFactory(slug="standard", rank=2)
    sonnet = LlmModelFactory(name="claude-sonnet-4-5", provider="anthropic", tier=tier, encoding="")
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
        long_context_output=Decimal("22.50"),
        tier_multipliers={"batch": "0.5"},
    )
    gpt5 = LlmModelFactory(name="gpt-5", provider="openai", tier=tier, encoding=LlmModel.Encoding.O200K)
    ModelPriceFactory(model=gpt5, effective_from=SINCE, input=Decimal("1.25"), output=Decimal("10"))
    ModelPriceFactory(
        model=gpt5, effective_from=SINCE, service_tier="priority", input=Decimal("2.50"), output=Decimal("20")
    )
    flash = LlmModelFactory(name="gemini-2.0-flash", provider="google", tier=tier, encoding="")
    ModelPriceFactory(model=flash, effective_from=SINCE, input=Decimal("0.10"), output=Decimal("0.40"))
    ModelPriceFactory(
        model=flash, effective_from=SINCE, channel="vertex", input=Decimal("0.15"), output=Decimal("0.60")
    )
    return {"sonnet": sonnet, "gpt-5": gpt5, "flash": flash}


def _ask(api, **body):
    body.setdefault("model", "claude-sonnet-4-5")
    response = api.client.post(URL, body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


# --- the worst case ---------------------------------------------------------------------------------------


def test_long_context_premium_when_input_plus_output_can_cross_the_threshold(api_a, models):
    below = _ask(api_a, input_tokens=150_000, max_output_tokens=50_000)  # exactly 200k: not above
    assert below["estimated_cost_usd"] == "1.200000000"  # 150k x 3 + 50k x 15
    above = _ask(api_a, input_tokens=150_000, max_output_tokens=60_000)
    assert above["estimated_cost_usd"] == "2.250000000"  # 150k x 6 + 60k x 22.50: the whole request


def test_a_call_that_may_write_cache_is_held_at_the_dearest_write_price(api_a, models):
    plain = _ask(api_a, input_tokens=10_000, max_output_tokens=1)
    cached = _ask(api_a, input_tokens=10_000, max_output_tokens=1, may_write_cache=True)
    assert plain["estimated_cost_usd"] == "0.030015000"  # 10k x 3 + 1 x 15
    assert cached["estimated_cost_usd"] == "0.060015000"  # 10k x 6 (1-hour writes) + 1 x 15


def test_the_named_service_tier_and_channel_price_the_estimate(api_a, models):
    batch = _ask(api_a, input_tokens=1000, max_output_tokens=100, service_tier="batch")
    assert batch["estimated_cost_usd"] == "0.002250000"  # (3,000 + 1,500 micro) x 0.5
    priority = _ask(api_a, model="gpt-5", input_tokens=1000, max_output_tokens=100, service_tier="priority")
    assert priority["estimated_cost_usd"] == "0.004500000"  # its own row: 1k x 2.50 + 100 x 20
    vertex = _ask(api_a, model="vertex_ai/gemini-2.0-flash", input_tokens=1000, max_output_tokens=1000)
    assert vertex["estimated_cost_usd"] == "0.000750000"  # Vertex price, from the name


# --- the safety factor ------------------------------------------------------------------------------------


def test_model_family_drops_versions():
    assert model_family("anthropic", "claude-sonnet-4-5-20250929") == "anthropic/claude-sonnet"
    assert model_family("anthropic", "claude-3-5-haiku@20241022") == "anthropic/claude-haiku"
    assert model_family("google", "vertex_ai/gemini-2.5-flash-lite") == "google/gemini-flash-lite"


def _settled(tenant, model, *, estimated: int, actual: int, n: int, family="anthropic/claude-sonnet"):
    now = timezone.now()
    Reservation.objects.bulk_create(
        [
            Reservation(
                tenant=tenant,
                model=model,
                environment="prod",
                estimated_cost_nanos=1,
                actual_cost_nanos=1,
                status=Reservation.Status.SETTLED,
                created_at=now - timedelta(minutes=i),
                expires_at=now,
                input_count_estimated=True,
                estimated_input_tokens=estimated,
                actual_input_tokens=actual,
                estimate_family=family,
            )
            for i in range(n)
        ]
    )
    learn_safety_factors()  # the periodic task: preflight only reads what it stored


def test_learned_factor_moves_the_estimate_above_a_known_undercount(api_a, tenant_a, tenant_b, models):
    counted = tokens.count_text(None, "claude-sonnet-4-5", PROMPT).tokens
    # This tenant's prompts are tool-heavy: the provider bills 1.9x what tiktoken counts, above the
    # 1.70 default, so a hold at the default would leak.
    billed = int(counted * Decimal("1.9"))
    first = _ask(api_a, prompt=PROMPT, max_output_tokens=1)
    assert first["input_tokens_estimated"] is True and first["input_safety_factor"] == "1.70"
    assert first["input_tokens"] < billed

    _settled(tenant_a, models["sonnet"], estimated=1000, actual=1850, n=40)
    _settled(tenant_a, models["sonnet"], estimated=1000, actual=1900, n=20)
    learned = _ask(api_a, prompt=PROMPT, max_output_tokens=1)
    assert learned["input_safety_factor"] == "1.900" and learned["input_tokens"] >= billed
    assert any("tenant safety factor 1.900" in r for r in learned["reasons"])


def test_a_tenant_with_its_own_data_gets_its_own_factor(api_a, api_b, tenant_a, tenant_b, models):
    _settled(tenant_a, models["sonnet"], estimated=1000, actual=1900, n=60)
    _settled(tenant_b, models["sonnet"], estimated=1000, actual=1200, n=60)
    assert _ask(api_b, prompt=PROMPT, max_output_tokens=1)["input_safety_factor"] == "1.200"
    # Too few of its own: all tenants' percentile applies.
    Reservation.objects.filter(tenant=tenant_b).delete()
    _settled(tenant_b, models["sonnet"], estimated=1000, actual=1000, n=10)
    assert _ask(api_b, prompt=PROMPT, max_output_tokens=1)["input_safety_factor"] == "1.900"


def test_the_periodic_task_learns_and_stores_the_factors(tenant_a, tenant_b, models):
    _settled(tenant_a, models["sonnet"], estimated=1000, actual=1900, n=60)
    _settled(tenant_b, models["sonnet"], estimated=1000, actual=1200, n=10)  # too few of its own
    stored = {(f.tenant_id, f.family): (f.factor, f.samples) for f in LearnedSafetyFactor.objects.all()}
    assert stored == {
        (tenant_a.pk, "anthropic/claude-sonnet"): (Decimal("1.900"), 60),
        (None, "anthropic/claude-sonnet"): (Decimal("1.900"), 70),
    }
    # A run replaces the set: with tenant A's history gone, only tenant B's 10 are left, below the minimum.
    Reservation.objects.filter(tenant=tenant_a).delete()
    assert learn_safety_factors() == {"factors": 0, "tenant_factors": 0}
    assert not LearnedSafetyFactor.objects.exists()


def test_preflight_never_reads_the_reservation_history(api_a, tenant_a, models, settings):
    """Learning reads up to 50,000 settled reservations: a preflight that did it (as the in-process
    cache once did every 300 s) would stall. Preflight reads the stored factors only, even when its
    state is reloaded (fingerprint checked on every call here)."""
    settings.PREFLIGHT_STATE_TTL_SECONDS = 0
    _settled(tenant_a, models["sonnet"], estimated=1000, actual=1900, n=60)
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            assert _ask(api_a, prompt=PROMPT, max_output_tokens=1)["input_safety_factor"] == "1.900"
    sql = [q["sql"].lower() for q in queries.captured_queries]
    assert any("budgets_learnedsafetyfactor" in q for q in sql)  # the fingerprint, and the load once
    reads = [q for q in sql if "budgets_reservation" in q and "budgets_reserve(" not in q]
    assert reads == [], reads


def test_the_task_is_on_the_beat_schedule_and_a_second_copy_skips(tenant_a, models):
    from finops.celery import app
    from finops.locks import _key

    entry = app.conf.beat_schedule["learn-safety-factors"]
    assert entry["task"] == "budgets.tasks.learn_safety_factors" and entry["schedule"] <= 300
    if connection.vendor != "postgresql":
        pytest.skip("run-once locks are PostgreSQL advisory locks")
    import psycopg

    # Another process (a second beat's copy) is learning: this one skips instead of doing it again.
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [_key("learn-safety-factors")])
        assert learn_safety_factors() == {"skipped": "another run is learning"}
        other.execute("SELECT pg_advisory_unlock(%s)", [_key("learn-safety-factors")])  # a close ends it later
    assert learn_safety_factors() == {"factors": 0, "tenant_factors": 0}


def test_openai_counts_and_sent_counts_are_not_multiplied(api_a, models):
    assert _ask(api_a, model="gpt-5", prompt=PROMPT, max_output_tokens=1)["input_safety_factor"] is None
    assert _ask(api_a, input_tokens=1000, max_output_tokens=1)["input_safety_factor"] is None


def test_a_settled_reservation_records_estimate_against_actual(api_a, tenant_a, models):
    BudgetFactory(tenant=tenant_a, hard_limit=10 * NANOS_PER_USD)
    out = _ask(api_a, prompt=PROMPT, max_output_tokens=100)
    counted = tokens.count_text(None, "claude-sonnet-4-5", PROMPT).tokens
    reservation = Reservation.objects.get(pk=out["reservation_id"])
    assert (reservation.input_count_estimated, reservation.estimated_input_tokens) == (True, counted)
    assert reservation.safety_factor == Decimal("1.7") and reservation.estimate_family == "anthropic/claude-sonnet"
    usage = {
        "request_id": "r1",
        "model": "claude-sonnet-4-5",
        "reservation_id": out["reservation_id"],
        "usage": {"input_tokens": 100, "cache_read_input_tokens": 200, "output_tokens": 50},
    }
    assert api_a.client.post("/api/v1/usage", usage, format="json").status_code == 200
    reservation.refresh_from_db()
    assert reservation.status == "settled" and reservation.actual_input_tokens == 300
    assert reservation.actual_cost_nanos == 100 * 3000 + 200 * 300 + 50 * 15000  # nano-USD


# --- the models page ----------------------------------------------------------------------------------------


def test_models_page_shows_factors_and_settle_above_hold_rates_of_the_scope(viewer_a, tenant_a, tenant_b, models):
    _settled(tenant_a, models["sonnet"], estimated=1000, actual=1500, n=60)
    Reservation.objects.filter(tenant=tenant_a).update(estimated_cost_nanos=100, actual_cost_nanos=90)
    Reservation.objects.filter(pk=Reservation.objects.filter(tenant=tenant_a).first().pk).update(actual_cost_nanos=130)
    _settled(tenant_b, models["sonnet"], estimated=1000, actual=1000, n=7)
    Reservation.objects.filter(tenant=tenant_b).update(estimated_cost_nanos=100, actual_cost_nanos=200)
    client = Client()
    client.force_login(viewer_a)
    html = client.get("/models/").content.decode()
    assert "anthropic/claude-sonnet" in html and "×1.500" in html  # learned
    assert "google/gemini-flash" in html and "×1.40" in html  # default
    # Only tenant A's 60 settled calls: one above its hold, by 30%.
    assert "1.67%" in html and "+30.0%" in html and "+100.0%" not in html


def test_a_tenant_sees_the_factors_but_not_the_platforms_call_counts(viewer_a, operator, tenant_b, models):
    _settled(tenant_b, models["sonnet"], estimated=1000, actual=1300, n=4321)
    tenant_view = Client()
    tenant_view.force_login(viewer_a)
    html = tenant_view.get("/models/").content.decode()
    assert "×1.300" in html and "4,321" not in html and "Tenants with their own" not in html
    platform = Client()
    platform.force_login(operator)
    html = platform.get("/models/").content.decode()
    assert "4,321" in html and "Tenants with their own" in html
