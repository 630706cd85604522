import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command
from django.test import RequestFactory

from finops.catalog import get_catalog
from finops.models import LlmModel, ModelPrice, ModelTier, UsageRecord, Workflow
from finops.pricing import PriceRow, TokenBuckets, cost_nanos
from finops.services import seed
from finops.usage_identity import usage_content_hash
from tenants.authentication import ApiKeyAuthentication
from tenants.errors import ApplicationError
from tenants.models import ApiKey, Membership, Tenant
from tenants.services import hash_secret

NOW = datetime(2026, 3, 4, 15, 37, 12, tzinfo=UTC)  # a Wednesday afternoon

# A snapshot name no alias lists, per model with a match pattern: must reach that model and only it.
DATED_NAMES = {
    "gpt-5.4": "gpt-5.4-2026-09-01",
    "gpt-5.2": "gpt-5.2-2026-02-01",
    "gpt-5.1": "gpt-5.1-2026-02-01",
    "gpt-5": "gpt-5-2026-02-01",
    "gpt-5-mini": "gpt-5-mini-2026-02-01",
    "gpt-5-nano": "gpt-5-nano-2026-02-01",
    "gpt-4.1": "gpt-4.1-2026-02-01",
    "gpt-4.1-mini": "gpt-4.1-mini-2026-02-01",
    "gpt-4.1-nano": "gpt-4.1-nano-2026-02-01",
    "gpt-4o": "gpt-4o-2026-02-01",
    "gpt-4o-mini": "gpt-4o-mini-2026-02-01",
    "o3": "o3-2026-02-01",
    "o3-mini": "o3-mini-2026-02-01",
    "o4-mini": "o4-mini-2026-02-01",
    "gpt-4-turbo": "gpt-4-turbo-2026-02-01",
    "claude-opus-4-5": "claude-opus-4-5-20260201",
    "claude-opus-4-1": "claude-opus-4-1-20260201",
    "claude-opus-4": "claude-opus-4-20260201",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20260201",
    "claude-sonnet-4": "claude-sonnet-4-20260201",
    "claude-3-7-sonnet": "claude-3-7-sonnet-20260201",
    "claude-haiku-4-5": "claude-haiku-4-5-20260201",
    "claude-3-5-haiku": "claude-3-5-haiku-20260201",
    "gemini-2.5-pro": "gemini-2.5-pro-preview-02-01",
    "gemini-2.0-flash": "gemini-2.0-flash-002",
    "gemini-2.0-flash-lite": "gemini-2.0-flash-lite-002",
}


def _catalog_state():
    models = list(LlmModel.objects.order_by("name").values())
    prices = list(ModelPrice.objects.order_by("model_id", "effective_from").values())
    tiers = list(ModelTier.objects.order_by("rank").values())
    return tiers, models, prices


# --- catalog ---------------------------------------------------------------------------------------


def test_catalog_seed_creates_priced_models_of_three_providers(db):
    counts = seed.catalog_seed()

    assert list(ModelTier.objects.values_list("slug", "rank")) == [("economy", 1), ("standard", 2), ("premium", 3)]
    assert LlmModel.objects.count() >= 15
    assert counts["models"]["created"] == LlmModel.objects.count()
    assert {"openai", "anthropic", "google"} <= set(LlmModel.objects.values_list("provider", flat=True))
    assert not LlmModel.objects.filter(prices__isnull=True).exists()
    assert set(LlmModel.objects.values_list("tier__slug", flat=True)) == {"economy", "standard", "premium"}
    # The standard list prices most dashboards will show.
    gpt4o = ModelPrice.objects.get(model__name="gpt-4o", channel="api", service_tier="standard")
    assert (gpt4o.input, gpt4o.cached_input, gpt4o.output) == (Decimal("2.5"), Decimal("1.25"), Decimal("10"))
    sonnet = ModelPrice.objects.get(model__name="claude-sonnet-4-5", channel="api", service_tier="standard")
    assert (sonnet.input, sonnet.cached_input, sonnet.cache_write, sonnet.output) == (
        Decimal("3"), Decimal("0.3"), Decimal("3.75"), Decimal("15"),
    )  # fmt: skip
    assert ModelPrice.objects.filter(source__startswith="https://").count() == ModelPrice.objects.count()
    assert not ModelPrice.objects.filter(price_taken_on__isnull=True).exists()


def test_catalog_seed_twice_changes_nothing(db):
    seed.catalog_seed()
    before = _catalog_state()

    counts = seed.catalog_seed()

    assert all(c["created"] == 0 and c["differs"] == 0 for c in counts.values())
    assert counts["models"]["unchanged"] == LlmModel.objects.count()
    assert _catalog_state() == before


def test_catalog_seed_links_each_substitute_to_a_cheaper_tier_of_the_same_provider(db):
    seed.catalog_seed()

    linked = list(LlmModel.objects.filter(downgrade_to__isnull=False).select_related("tier", "downgrade_to__tier"))

    assert len(linked) >= 15
    for model in linked:
        assert model.downgrade_to.provider == model.provider
        assert model.downgrade_to.tier.rank < model.tier.rank, model.name
    assert LlmModel.objects.get(name="gpt-4o").downgrade_to.name == "gpt-4o-mini"


def test_catalog_seed_keeps_what_operators_edited(db):
    seed.catalog_seed()
    price = ModelPrice.objects.get(model__name="gpt-4o", channel="api", service_tier="standard")
    price.input = Decimal("2.40")
    price.save()
    model = LlmModel.objects.get(name="gpt-4o")
    model.aliases = [*model.aliases, "my-azure-gpt4o-deployment"]
    model.save()
    ModelPrice.objects.filter(model__name="gpt-5").delete()
    out = StringIO()

    counts = seed.catalog_seed(stdout=out)

    price.refresh_from_db()
    model.refresh_from_db()
    assert price.input == Decimal("2.40")
    assert "my-azure-gpt4o-deployment" in model.aliases
    assert counts["prices"]["differs"] == 1 and counts["models"]["differs"] == 1
    in_file = next(len(m["prices"]) for m in seed.seed_catalog_load()["models"] if m["name"] == "gpt-5")
    assert counts["prices"]["created"] == in_file  # the deleted prices were missing, so they are back
    assert ModelPrice.objects.filter(model__name="gpt-5").count() == in_file
    assert "price gpt-4o from 2025-01-01: kept as edited" in out.getvalue()


def test_seed_file_prices_are_decimal_strings_with_at_most_six_places():
    data = json.loads(seed.SEED_CATALOG_PATH.read_text())
    checked = 0
    for model in data["models"]:
        assert model["prices"], model["name"]
        for price in model["prices"]:
            assert price["source"].startswith("https://")
            assert datetime.fromisoformat(price["effective_from"]).tzinfo is not None
            for key in seed.PRICE_FIELDS:
                raw = price[key]
                if raw is None:
                    assert key == "reasoning"
                    continue
                assert isinstance(raw, str), (model["name"], key, raw)
                assert Decimal(raw).as_tuple().exponent >= -6, (model["name"], key, raw)
                checked += 1
    assert checked >= 4 * 15


def test_seed_file_with_seven_decimals_is_rejected(tmp_path, db):
    data = json.loads(seed.SEED_CATALOG_PATH.read_text())
    data["models"][0]["prices"][0]["input"] = "1.2500001"
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data))

    with pytest.raises(ApplicationError) as exc:
        seed.catalog_seed(path=path)

    assert exc.value.code == "invalid_seed_catalog"
    assert not LlmModel.objects.exists()


def test_every_name_alias_and_dated_name_resolves_to_its_own_model(db):
    seed.catalog_seed()
    catalog = get_catalog()
    models = list(LlmModel.objects.all())
    patterns = {m.name: re.compile(m.match_pattern) for m in models if m.match_pattern}
    assert set(DATED_NAMES) == set(patterns), "every model with a pattern needs a dated sample name here"

    exact_owner: dict[str, str] = {}
    for model in models:
        for name in [model.name, *model.aliases]:
            assert exact_owner.setdefault(name.lower(), model.name) == model.name, f"{name} is listed twice"
            assert catalog.resolve(name).name == model.name, name
            # An alias must not fall into another model's pattern either, or deleting it would reroute it.
            if name != model.name:
                claimed = {other for other, rx in patterns.items() if rx.fullmatch(name)}
                assert claimed <= {model.name}, (name, claimed)

    for owner, dated in DATED_NAMES.items():
        assert dated.lower() not in exact_owner
        assert {name for name, rx in patterns.items() if rx.fullmatch(dated)} == {owner}, dated
        assert catalog.resolve(dated).name == owner
    assert catalog.resolve("gpt-4o-2024-05-13").name == "gpt-4o-2024-05-13"  # exact name beats gpt-4o's pattern
    assert catalog.resolve("mistral-large-2411") is None


# --- demo -------------------------------------------------------------------------------------------


@pytest.fixture
def seeded_catalog(db):
    seed.catalog_seed()


def _counts():
    return {
        m.__name__: m.objects.count()
        for m in (Tenant, Workflow, UsageRecord, Membership, ApiKey, get_user_model(), LlmModel, ModelPrice)
    }


def test_demo_seed_creates_the_data_set_and_a_rerun_creates_nothing(seeded_catalog):
    summary = seed.demo_seed(days=3, now=NOW)
    first = _counts()

    again = seed.demo_seed(days=3, now=NOW)

    assert _counts() == first
    assert again.records_created == 0 and again.records_total == summary.records_total
    assert summary.records_created == first["UsageRecord"] > 1000
    assert first["Tenant"] == 6 and first["Workflow"] == 10
    assert summary.first_at >= NOW - timedelta(days=3) and summary.last_at <= NOW
    records = UsageRecord.objects.all()
    assert set(records.values_list("environment", flat=True)) == {"prod", "stage", "dev"}
    assert records.values("tenant").distinct().count() == 6
    assert {"openai", "anthropic", "google"} <= set(records.values_list("model__provider", flat=True))
    assert records.filter(reasoning_tokens__gt=0, model__name__in=["o3", "o4-mini"]).exists()
    assert records.filter(cache_write_tokens__gt=0).exists() and records.filter(cached_input_tokens__gt=0).exists()
    assert not records.exclude(request_id__regex=r"^demo-[a-z-]+-[a-z-]+-\d{10}-\d+$").exists()
    assert not Workflow.objects.filter(expected_calls_per_day__isnull=False).exclude(status="registered").exists()
    assert Workflow.objects.filter(expected_input_tokens_p50__isnull=False).count() >= 8
    assert set(Workflow.objects.values_list("priority", flat=True)) == {"low", "normal", "high", "critical"}


def test_demo_unknown_model_records_are_stored_unpriced(seeded_catalog):
    summary = seed.demo_seed(days=3, now=NOW)

    unknown = UsageRecord.objects.filter(model_name=seed.DEMO_UNKNOWN_MODEL)
    assert unknown.exists()
    assert summary.unpriced_records == unknown.count()
    assert not unknown.filter(priced=True).exists()
    assert not unknown.filter(cost_nanos__isnull=False).exists()
    assert not unknown.filter(model__isnull=False).exists()
    assert not UsageRecord.objects.filter(priced=False).exclude(model_name=seed.DEMO_UNKNOWN_MODEL).exists()


def test_demo_costs_and_hashes_match_a_recomputation(seeded_catalog):
    seed.demo_seed(days=2, now=NOW)
    catalog = get_catalog()

    priced = list(UsageRecord.objects.filter(priced=True).select_related("price", "model", "workflow"))
    assert len(priced) > 500
    for record in priced:
        assert catalog.resolve(record.model_name).id == record.model_id
        assert record.price.model_id == record.model_id and record.price.effective_from <= record.occurred_at
        tokens = TokenBuckets(
            input=record.input_tokens,
            cached_input=record.cached_input_tokens,
            cache_write=record.cache_write_tokens,
            output=record.output_tokens,
            reasoning=record.reasoning_tokens,
        )
        assert record.cost_nanos == cost_nanos(PriceRow.from_model_price(record.price), tokens) > 0
        assert record.content_hash == usage_content_hash(
            workflow=record.workflow.slug,
            model_name=record.model_name,
            environment=record.environment,
            occurred_at=record.occurred_at,
            input_tokens=record.input_tokens,
            cached_input_tokens=record.cached_input_tokens,
            cache_write_tokens=record.cache_write_tokens,
            output_tokens=record.output_tokens,
            reasoning_tokens=record.reasoning_tokens,
            tags=record.tags,
        )
        assert 0 < (record.received_at - record.occurred_at).total_seconds() < 10


def test_demo_reruns_reproduce_the_same_records(seeded_catalog):
    seed.demo_seed(days=1, now=NOW)
    first = set(UsageRecord.objects.values_list("request_id", "content_hash", "cost_nanos"))
    UsageRecord.objects.all().delete()

    seed.demo_seed(days=1, now=NOW)

    assert set(UsageRecord.objects.values_list("request_id", "content_hash", "cost_nanos")) == first


def test_demo_run_later_only_adds_the_new_hours(seeded_catalog):
    seed.demo_seed(days=1, now=NOW)
    before = {r.request_id: r.content_hash for r in UsageRecord.objects.all()}
    later = NOW + timedelta(hours=5)

    summary = seed.demo_seed(days=1, now=later)

    after = {r.request_id: (r.content_hash, r.occurred_at) for r in UsageRecord.objects.all()}
    assert summary.records_created == len(after) - len(before) > 0
    assert all(after[rid][0] == digest for rid, digest in before.items())
    new = [when for rid, (_, when) in after.items() if rid not in before]
    # New calls: those of the hour that was still running at NOW, and those of the five hours since.
    assert min(new) >= NOW.replace(minute=0, second=0, microsecond=0)
    assert max(new) <= later


def test_demo_run_days_later_fills_every_hour_since_the_last_run(seeded_catalog):
    seed.demo_seed(days=1, now=NOW)

    seed.demo_seed(days=1, now=NOW + timedelta(days=3))

    # The requested day starts two days after the last run; the days in between are filled too, so
    # the stored demo data stays one contiguous run of hours.
    gap = UsageRecord.objects.filter(occurred_at__gt=NOW + timedelta(hours=1), occurred_at__lt=NOW + timedelta(days=2))
    hours = {r.occurred_at.replace(minute=0, second=0, microsecond=0) for r in gap}
    assert len(hours) >= 40


def test_demo_people_and_keys(seeded_catalog):
    seed.demo_seed(days=1, now=NOW)

    operator = authenticate(username=seed.DEMO_USERNAME, password=seed.DEMO_PASSWORD)
    assert operator is not None and operator.is_staff and operator.is_superuser
    roles = set(Membership.objects.values_list("role", flat=True))
    assert roles == {"viewer", "approver", "admin"}
    for username, tenant_slug, role in seed.DEMO_MEMBERS:
        membership = Membership.objects.select_related("user", "tenant").get(user__username=username)
        assert (membership.tenant.slug, membership.role) == (tenant_slug, role)
        assert not membership.user.is_staff
    # Each check costs a deliberately slow password hash, so one member stands for all.
    assert authenticate(username=seed.DEMO_MEMBERS[0][0], password=seed.DEMO_PASSWORD) is not None

    for raw, tenant_slug in ((seed.DEMO_API_KEY, seed.DEMO_TENANT_SLUG), (seed.DEMO_PLATFORM_KEY, None)):
        assert re.fullmatch(r"tsk_[0-9a-f]{10}_[A-Za-z0-9_-]{43}", raw)
        key = ApiKey.objects.get(prefix=raw.split("_")[1])
        assert key.secret_hash == hash_secret(raw)
        assert (key.tenant.slug if key.tenant else None) == tenant_slug
        assert key.scopes == ["ingest", "manage", "preflight", "read"]
        request = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert ApiKeyAuthentication().authenticate(request)[1].pk == key.pk
    northwind_keys = set(UsageRecord.objects.filter(tenant__slug=seed.DEMO_TENANT_SLUG).values_list("api_key__prefix"))
    assert northwind_keys == {(seed.DEMO_API_KEY.split("_")[1],)}


def test_demo_seed_needs_the_catalog(db):
    with pytest.raises(ApplicationError) as exc:
        seed.demo_seed(days=1, now=NOW)
    assert exc.value.code == "catalog_not_seeded"


def test_seed_commands_print_a_summary_with_login_and_key(db):
    out = StringIO()
    call_command("seed_catalog", "--quiet", stdout=out)
    assert out.getvalue().startswith("catalog: tiers 3 new")

    with pytest.raises(CommandError, match="DJANGO_DEBUG off"):
        call_command("seed_demo", "--days", "1", stdout=StringIO())
    assert not UsageRecord.objects.exists()

    out = StringIO()
    call_command("seed_demo", "--days", "1", "--allow-public-credentials", stdout=out)

    text = out.getvalue()
    assert "usage: " in text and "records (100%)" in text
    assert f"{seed.DEMO_USERNAME} / {seed.DEMO_PASSWORD}" in text
    assert seed.DEMO_API_KEY in text
    assert UsageRecord.objects.exists()
