"""POST /api/v1/usage: shapes and exact costs, idempotency, partial batches, bad input, re-pricing."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from django.core.cache import cache
from django.test import override_settings

from finops.models import LlmModel, ModelPrice, UsageRecord, Workflow
from finops.services.repricing import llm_model_save, model_price_save
from tests.factories import ModelPriceFactory

URL = "/api/v1/usage"
pytestmark = pytest.mark.django_db


def post(client, body, **extra):
    return client.post(URL, orjson.dumps(body), content_type="application/json", **extra)


def one(client, **record):
    response = post(client, record)
    return response, response.json()["items"][0]


def recent(hours: float = 1) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).isoformat()


# --- shapes and exact costs ---------------------------------------------------------------------------


def test_canonical_fields_are_priced_exactly(api_a, catalog):
    response, item = one(
        api_a.client,
        request_id="r1",
        workflow="ticket-summary",
        model="gpt-4o",
        input_tokens=1000,
        cached_input_tokens=2000,
        output_tokens=500,
    )
    assert response.status_code == 200
    # 1000 x $2.50 + 2000 x $1.25 + 500 x $10 per 1M = 0.0025 + 0.0025 + 0.005
    assert item["status"] == "accepted" and item["cost_usd"] == "0.010000000" and item["priced"] is True
    record = UsageRecord.objects.get(pk=item["id"])
    assert record.cost_nanos == 10_000_000 and record.tenant == api_a.key.tenant
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens) == (1000, 2000, 500)


def test_openai_usage_object_is_split_into_buckets(api_a, catalog):
    usage = {
        "prompt_tokens": 1500,
        "completion_tokens": 800,
        "total_tokens": 2300,
        "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 300, "audio_tokens": 0},
    }
    _, item = one(api_a.client, request_id="r1", model="o3", usage=usage)
    record = UsageRecord.objects.get(pk=item["id"])
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens, record.reasoning_tokens) == (
        500,
        1000,
        500,
        300,
    )
    # 500 x 2 + 1000 x 0.5 + 500 x 8 + 300 x 8 (reasoning defaults to output) = 7900 micro-USD
    assert item["cost_usd"] == "0.007900000"


def test_openai_responses_usage_shape(api_a, catalog):
    usage = {
        "input_tokens": 1200,
        "input_tokens_details": {"cached_tokens": 200},
        "output_tokens": 100,
        "output_tokens_details": {"reasoning_tokens": 40},
        "total_tokens": 1300,
    }
    _, item = one(api_a.client, request_id="r1", model="gpt-4o", usage=usage)
    record = UsageRecord.objects.get(pk=item["id"])
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens, record.reasoning_tokens) == (
        1000,
        200,
        60,
        40,
    )


def test_anthropic_usage_object(api_a, catalog):
    usage = {
        "input_tokens": 100,
        "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 1000,
        "output_tokens": 300,
    }
    _, item = one(api_a.client, request_id="r1", model="claude-sonnet-4-5-20250929", usage=usage)
    # 100 x 3 + 2000 x 0.30 + 1000 x 3.75 + 300 x 15 = 9150 micro-USD; the dated name matches the pattern
    assert item["cost_usd"] == "0.009150000"
    assert UsageRecord.objects.get(pk=item["id"]).model.name == "claude-sonnet-4-5"


def test_gemini_usage_metadata(api_a, catalog):
    usage = {
        "promptTokenCount": 1000,
        "cachedContentTokenCount": 400,
        "candidatesTokenCount": 50,
        "thoughtsTokenCount": 25,
    }
    _, item = one(api_a.client, request_id="r1", model="gemini-2.5-flash-lite", usage=usage)
    record = UsageRecord.objects.get(pk=item["id"])
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens, record.reasoning_tokens) == (
        600,
        400,
        50,
        25,
    )
    # 600 x 0.10 + 400 x 0.01875 + 50 x 0.40 + 25 x 0.40 = 60 + 7.5 + 20 + 10 = 97.5 micro-USD
    assert item["cost_usd"] == "0.000097500"


def test_sub_nano_costs_round_half_to_even(api_a, catalog):
    # 1 cached token of flash-lite costs 18.75 nano-USD -> 19; 2 cost 37.5 -> 38 (even); 6 cost 112.5 -> 112
    for i, (cached, nanos) in enumerate([(1, 19), (2, 38), (6, 112)]):
        _, item = one(api_a.client, request_id=f"r{i}", model="gemini-2.5-flash-lite", cached_input_tokens=cached)
        assert UsageRecord.objects.get(pk=item["id"]).cost_nanos == nanos


def test_text_is_counted_with_tiktoken_and_not_stored(api_a, catalog):
    from finops.tokens import get_encoding

    enc = get_encoding("o200k_base")
    prompt, completion = "Summarise this support ticket, please.", "The customer wants a refund."
    _, item = one(api_a.client, request_id="r1", model="gpt-4o", prompt=prompt, completion=completion)
    record = UsageRecord.objects.get(pk=item["id"])
    assert record.input_tokens == len(enc.encode(prompt)) and record.output_tokens == len(enc.encode(completion))
    assert record.tokens_counted is True and record.tokens_estimated is False
    expected = Decimal(record.input_tokens) * Decimal("2.50") + Decimal(record.output_tokens) * Decimal("10")
    assert Decimal(item["cost_usd"]) == expected / 10**6
    assert prompt not in str(UsageRecord.objects.filter(pk=item["id"]).values().first())


def test_chat_messages_for_non_openai_model_are_estimates(api_a, catalog):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    _, item = one(api_a.client, request_id="r1", model="claude-sonnet-4-5", messages=messages, completion="Hi!")
    record = UsageRecord.objects.get(pk=item["id"])
    assert record.tokens_counted and record.tokens_estimated and record.input_tokens > 4


def test_aliases_and_patterns_resolve_the_catalog_model(api_a, catalog):
    _, by_alias = one(api_a.client, request_id="a", model="my-azure-gpt4o", input_tokens=10)
    _, by_pattern = one(api_a.client, request_id="b", model="gpt-4o-2024-08-06", input_tokens=10)
    for item, raw in ((by_alias, "my-azure-gpt4o"), (by_pattern, "gpt-4o-2024-08-06")):
        record = UsageRecord.objects.get(pk=item["id"])
        assert record.model == catalog["gpt-4o"] and record.model_name == raw and record.priced


def test_price_in_force_at_occurred_at_is_used(api_a, catalog):
    now = datetime.now(UTC)
    ModelPriceFactory(
        model=catalog["gpt-4o"],
        effective_from=now - timedelta(days=2),
        input=Decimal("4.00"),
        cached_input=Decimal("2.00"),
        output=Decimal("12.00"),
    )
    _, before = one(
        api_a.client,
        request_id="old",
        model="gpt-4o",
        input_tokens=1_000_000,
        occurred_at=(now - timedelta(days=3)).isoformat(),
    )
    _, after = one(
        api_a.client,
        request_id="new",
        model="gpt-4o",
        input_tokens=1_000_000,
        occurred_at=(now - timedelta(days=1)).isoformat(),
    )
    assert before["cost_usd"] == "2.500000000" and after["cost_usd"] == "4.000000000"


def test_unknown_workflow_is_auto_discovered(api_a, catalog):
    one(api_a.client, request_id="r1", workflow="nightly-reindex", model="gpt-4o", input_tokens=1)
    wf = Workflow.objects.get(slug="nightly-reindex")
    assert wf.status == Workflow.Status.AUTO_DISCOVERED


# --- idempotency ---------------------------------------------------------------------------------------


def test_replaying_a_batch_changes_nothing(api_a, catalog):
    batch = {
        "records": [
            {
                "request_id": f"r{i}",
                "model": "gpt-4o",
                "input_tokens": 100 + i,
                "occurred_at": recent(),
                "tags": {"a": "b"},
            }
            for i in range(5)
        ]
    }
    first = post(api_a.client, batch).json()
    second = post(api_a.client, batch)
    assert first["accepted"] == 5
    body = second.json()
    assert second.status_code == 200 and body["duplicate"] == 5 and body["accepted"] == 0
    assert [i["id"] for i in body["items"]] == [i["id"] for i in first["items"]]
    assert [i["cost_usd"] for i in body["items"]] == [i["cost_usd"] for i in first["items"]]
    assert UsageRecord.objects.count() == 5


def test_same_request_id_with_other_content_is_a_conflict(api_a, catalog):
    when = recent()
    one(api_a.client, request_id="r1", model="gpt-4o", input_tokens=100, occurred_at=when)
    response, item = one(api_a.client, request_id="r1", model="gpt-4o", input_tokens=999, occurred_at=when)
    assert response.status_code == 207
    assert item["status"] == "conflict" and "request_id" in item["errors"]
    assert UsageRecord.objects.get().input_tokens == 100


def test_offset_spelling_of_the_same_instant_is_a_duplicate(api_a, catalog):
    from datetime import timezone

    instant = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    utc_spelling = instant.strftime("%Y-%m-%dT%H:%M:%SZ")
    plus_two = instant.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert utc_spelling != plus_two
    one(api_a.client, request_id="r1", model="gpt-4o", input_tokens=1, occurred_at=utc_spelling)
    _, item = one(api_a.client, request_id="r1", model="gpt-4o", input_tokens=1, occurred_at=plus_two)
    assert item["status"] == "duplicate"


def test_repeats_inside_one_batch(api_a, catalog):
    when = recent()
    rec = {"request_id": "r1", "model": "gpt-4o", "input_tokens": 5, "occurred_at": when}
    body = post(api_a.client, {"records": [rec, rec, {**rec, "input_tokens": 6}]}).json()
    assert [i["status"] for i in body["items"]] == ["accepted", "duplicate", "conflict"]
    assert body["items"][1]["id"] == body["items"][0]["id"]
    assert UsageRecord.objects.count() == 1


def test_same_request_id_in_two_tenants_is_two_records(api_a, api_b, catalog):
    rec = {"request_id": "shared", "model": "gpt-4o", "input_tokens": 5}
    assert post(api_a.client, rec).json()["accepted"] == 1
    assert post(api_b.client, rec).json()["accepted"] == 1


# --- partial batches and bad input -------------------------------------------------------------------------


def test_valid_items_are_stored_when_others_are_rejected(api_a, catalog):
    body = {
        "records": [
            {"request_id": "ok-1", "model": "gpt-4o", "input_tokens": 1},
            {"request_id": "bad", "model": "gpt-4o", "input_tokens": -1},
            {"request_id": "ok-2", "model": "gpt-4o", "output_tokens": 1},
        ]
    }
    response = post(api_a.client, body)
    data = response.json()
    assert response.status_code == 207
    assert (data["accepted"], data["rejected"]) == (2, 1)
    assert data["items"][1] == {
        "index": 1,
        "status": "rejected",
        "request_id": "bad",
        "id": None,
        "cost_usd": None,
        "priced": None,
        "errors": {"input_tokens": ["Must not be negative."]},
    }
    assert set(UsageRecord.objects.values_list("request_id", flat=True)) == {"ok-1", "ok-2"}


def _from_now(**delta: float):
    """An occurred_at relative to when the test runs, not to when the module was collected: a long run
    (the serial suite under load took 12 minutes to reach these) must not age "10 minutes ahead" into the past."""
    return lambda: (datetime.now(UTC) + timedelta(**delta)).isoformat()


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"input_tokens": -5}, "input_tokens"),
        ({"input_tokens": 1.5}, "input_tokens"),
        ({"input_tokens": "12"}, "input_tokens"),
        ({"output_tokens": True}, "output_tokens"),
        ({"output_tokens": 10**9 + 1}, "output_tokens"),
        ({"input_tokens": 1, "occurred_at": _from_now(minutes=10)}, "occurred_at"),
        ({"input_tokens": 1, "occurred_at": _from_now(days=-40)}, "occurred_at"),
        ({"input_tokens": 1, "occurred_at": "2026-11-28T10:00:00"}, "occurred_at"),
        ({"input_tokens": 1, "occurred_at": "yesterday"}, "occurred_at"),
        ({"input_tokens": 1, "environment": "qa"}, "environment"),
        ({"input_tokens": 1, "request_id": None}, "request_id"),
        ({"input_tokens": 1, "request_id": ""}, "request_id"),
        ({"input_tokens": 1, "model": ""}, "model"),
        ({"input_tokens": 1, "workflow": "no spaces allowed"}, "workflow"),
        ({"input_tokens": 1, "tags": {f"k{i}": "v" for i in range(21)}}, "tags"),
        ({"input_tokens": 1, "tags": {"k": 5}}, "tags"),
        ({"input_tokens": 1, "reservation_id": "not-a-uuid"}, "reservation_id"),
        ({}, "non_field_errors"),
        ({"input_tokens": 1, "usage": {"prompt_tokens": 1}}, "non_field_errors"),
        ({"usage": {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 20}}}, "usage.prompt_tokens"),
        ({"usage": {"foo": 1}}, "usage"),
        ({"usage": {"prompt_tokens": -1}}, "usage.prompt_tokens"),
        ({"messages": [{"content": "no role"}]}, "messages"),
        ({"input_tokens": 1, "colour": "blue"}, "non_field_errors"),
    ],
)
def test_bad_records_are_rejected_with_the_field_named(api_a, catalog, record, field):
    base = {"request_id": "r1", "model": "gpt-4o"}
    record = {name: value() if callable(value) else value for name, value in record.items()}
    response, item = one(api_a.client, **{**base, **record})
    assert response.status_code == 207
    assert item["status"] == "rejected" and field in item["errors"], item
    assert all(isinstance(m, str) and m for m in item["errors"][field])
    assert UsageRecord.objects.count() == 0


def test_too_many_records_is_400(api_a, catalog):
    with override_settings(USAGE_MAX_RECORDS_PER_REQUEST=3):
        response = post(
            api_a.client, {"records": [{"request_id": f"r{i}", "model": "m", "input_tokens": 1} for i in range(4)]}
        )
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_many_records"


@pytest.mark.parametrize("body", [{"records": []}, {"records": "x"}, [1, 2], {"records": [], "tenant": "x"}])
def test_malformed_batches_are_400(api_a, body):
    response = post(api_a.client, body)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_body"


def test_malformed_json_is_400(api_a):
    response = api_a.client.post(URL, b'{"request_id": "r1",', content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_json"


def test_wrong_content_type_is_415(api_a):
    response = api_a.client.post(URL, "request_id=r1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"


def test_body_over_the_limit_is_413(api_a):
    with override_settings(USAGE_MAX_BODY_BYTES=100):
        response = post(api_a.client, {"records": [{"request_id": f"r{i}", "model": "gpt-4o"} for i in range(10)]})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


# --- authentication and authorisation -----------------------------------------------------------------------


def test_missing_key_is_401(client, tenant_a):
    response = client.post(URL, b"{}", content_type="application/json")
    assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")
    response = client.post(URL, b"{}", content_type="application/json", HTTP_AUTHORIZATION="Bearer tsk_nope_x")
    assert response.status_code == 401 and response.json()["error"]["code"] == "authentication_failed"


def test_revoked_key_is_refused_at_once(api_a, catalog):
    from tenants.services import api_key_revoke

    assert one(api_a.client, request_id="r1", model="gpt-4o", input_tokens=1)[0].status_code == 200
    api_key_revoke(key=api_a.key)
    response = post(api_a.client, {"request_id": "r2", "model": "gpt-4o", "input_tokens": 1})
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]


def test_expired_key_is_refused(api_a):
    api_a.key.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    api_a.key.save()
    response = post(api_a.client, {"request_id": "r2", "model": "gpt-4o", "input_tokens": 1})
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]


def test_key_without_ingest_scope_is_403(make_key, tenant_a):
    reader = make_key(tenant_a, scopes="read")
    response = post(reader.client, {"request_id": "r2", "model": "gpt-4o", "input_tokens": 1})
    assert response.status_code == 403 and "ingest" in response.json()["error"]["message"]


def test_over_the_rate_is_429_with_retry_after(api_a, catalog):
    from rest_framework.settings import api_settings

    cache.clear()
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "api_key": "2/min"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("tenants.authentication.ApiKeyRateThrottle.THROTTLE_RATES", rates)
        codes = [
            post(api_a.client, {"request_id": f"r{i}", "model": "gpt-4o", "input_tokens": 1}).status_code
            for i in range(3)
        ]
        last = post(api_a.client, {"request_id": "r9", "model": "gpt-4o", "input_tokens": 1})
    cache.clear()
    assert codes[:2] == [200, 200] and codes[2] == 429
    assert last.status_code == 429 and int(last["Retry-After"]) > 0
    assert last.json()["error"]["code"] == "throttled"


def test_last_used_at_is_recorded(api_a, catalog):
    assert api_a.key.last_used_at is None
    one(api_a.client, request_id="r1", model="gpt-4o", input_tokens=1)
    api_a.key.refresh_from_db()
    assert api_a.key.last_used_at is not None


# --- tenancy -----------------------------------------------------------------------------------------------


def test_tenant_key_cannot_write_another_tenant(api_a, tenant_b, catalog):
    body = {
        "records": [
            {"request_id": "mine", "model": "gpt-4o", "input_tokens": 1, "tenant": "acme"},
            {"request_id": "theirs", "model": "gpt-4o", "input_tokens": 1, "tenant": "globex"},
        ]
    }
    data = post(api_a.client, body).json()
    assert [i["status"] for i in data["items"]] == ["accepted", "rejected"]
    assert "tenant" in data["items"][1]["errors"]
    assert not UsageRecord.objects.filter(tenant=tenant_b).exists()


def test_platform_key_must_name_a_known_tenant(api_platform, tenant_b, catalog):
    body = {
        "records": [
            {"request_id": "a", "model": "gpt-4o", "input_tokens": 1},
            {"request_id": "b", "model": "gpt-4o", "input_tokens": 1, "tenant": "nope"},
            {"request_id": "c", "model": "gpt-4o", "input_tokens": 1, "tenant": "globex"},
        ]
    }
    data = post(api_platform.client, body).json()
    assert [i["status"] for i in data["items"]] == ["rejected", "rejected", "accepted"]
    assert "tenant" in data["items"][0]["errors"] and "tenant" in data["items"][1]["errors"]
    assert UsageRecord.objects.get().tenant == tenant_b


def test_tenant_key_cannot_read_another_tenants_record(api_a, api_b, catalog):
    _, theirs = one(api_b.client, request_id="secret-marker-b", model="gpt-4o", input_tokens=1)
    response = api_a.client.get(f"{URL}/{theirs['id']}")
    assert response.status_code == 404 and "secret-marker-b" not in response.content.decode()
    listing = api_a.client.get(URL)
    assert listing.status_code == 200 and "secret-marker-b" not in listing.content.decode()
    assert api_a.client.get(URL, {"tenant": "globex"}).status_code == 404
    own = api_b.client.get(f"{URL}/{theirs['id']}")
    assert own.status_code == 200 and own.json()["request_id"] == "secret-marker-b"


def test_platform_key_reads_name_the_tenant(api_platform, api_b, catalog):
    one(api_b.client, request_id="b-1", model="gpt-4o", input_tokens=1)
    assert api_platform.client.get(URL).json()["error"]["code"] == "tenant_required"
    listing = api_platform.client.get(URL, {"tenant": "globex"}).json()
    assert [r["request_id"] for r in listing["results"]] == ["b-1"]
    assert api_platform.client.get(URL, {"tenant": "acme"}).json()["results"] == []


def test_members_read_their_tenant_through_the_session(client, viewer_a, api_a, api_b, catalog):
    one(api_b.client, request_id="b-secret", model="gpt-4o", input_tokens=1)
    one(api_a.client, request_id="a-own", model="gpt-4o", input_tokens=1)
    client.force_login(viewer_a)
    body = client.get(URL).content.decode()
    assert "a-own" in body and "b-secret" not in body
    assert client.get(URL, {"tenant": "globex"}).status_code == 404


# --- reading ------------------------------------------------------------------------------------------------


def test_list_filters_and_cursor_pagination(api_a, catalog):
    records = [
        {
            "request_id": f"r{i}",
            "workflow": "chat" if i % 2 else "summary",
            "model": "gpt-4o" if i < 4 else "o3",
            "environment": "prod" if i < 5 else "dev",
            "input_tokens": i,
            "occurred_at": recent(hours=10 - i),
            "tags": {"region": "eu" if i < 3 else "us"},
        }
        for i in range(8)
    ]
    post(api_a.client, {"records": records})
    get = lambda **q: [r["request_id"] for r in api_a.client.get(URL, q).json()["results"]]  # noqa: E731
    assert get() == [f"r{i}" for i in reversed(range(8))]
    assert get(workflow="chat") == ["r7", "r5", "r3", "r1"]
    assert get(model="o3") == ["r7", "r6", "r5", "r4"]
    assert get(environment="dev") == ["r7", "r6", "r5"]
    assert get(tag="region:eu") == ["r2", "r1", "r0"]
    assert get(occurred_after=recent(hours=7.5), occurred_before=recent(hours=5.5)) == ["r4", "r3"]
    page = api_a.client.get(URL, {"page_size": 3}).json()
    assert [r["request_id"] for r in page["results"]] == ["r7", "r6", "r5"]
    following = api_a.client.get(page["next"]).json()
    assert [r["request_id"] for r in following["results"]] == ["r4", "r3", "r2"]
    assert api_a.client.get(URL, {"environment": "qa"}).status_code == 400


def test_detail_shows_cost_and_null_cost_when_unpriced(api_a, catalog):
    _, priced = one(api_a.client, request_id="p", model="gpt-4o", input_tokens=1000)
    _, unpriced = one(api_a.client, request_id="u", model="mystery-model-9", input_tokens=1000)
    assert api_a.client.get(f"{URL}/{priced['id']}").json()["cost_usd"] == "0.002500000"
    detail = api_a.client.get(f"{URL}/{unpriced['id']}").json()
    assert detail["cost_usd"] is None and detail["priced"] is False and detail["model"] is None


# --- unknown models and re-pricing --------------------------------------------------------------------------


def test_unknown_model_is_stored_unpriced_then_priced_when_the_catalog_learns_it(api_a, catalog):
    _, item = one(api_a.client, request_id="r1", model="mistral-large-2411", input_tokens=1000, output_tokens=100)
    assert item["status"] == "accepted" and item["priced"] is False and item["cost_usd"] is None
    record = UsageRecord.objects.get(pk=item["id"])
    assert record.cost_nanos is None and record.model is None

    # The catalog learns the model (tasks run eagerly in tests, after commit).
    with pytest.MonkeyPatch.context():
        model = llm_model_save(
            model=LlmModel(
                name="mistral-large", provider="mistral", tier=catalog["o3"].tier, match_pattern=r"mistral-large-\d{4}"
            )
        )
        model_price_save(
            price=ModelPrice(
                model=model,
                effective_from=datetime(2024, 1, 1, tzinfo=UTC),
                input=Decimal("2"),
                cached_input=Decimal("0"),
                cache_write=Decimal("0"),
                output=Decimal("6"),
            )
        )
    from finops.tasks import reprice_unpriced_usage

    reprice_unpriced_usage()
    record.refresh_from_db()
    assert record.priced and record.model == model and record.cost_nanos == 2_600_000  # 1000 x 2 + 100 x 6


def test_correcting_a_price_reprices_affected_records(api_a, catalog, django_capture_on_commit_callbacks):
    _, item = one(api_a.client, request_id="r1", model="o3", input_tokens=1_000_000)
    assert item["cost_usd"] == "2.000000000"
    price = ModelPrice.objects.get(model=catalog["o3"])
    price.input = Decimal("1.75")
    with django_capture_on_commit_callbacks(execute=True):
        model_price_save(price=price)
    assert UsageRecord.objects.get(pk=item["id"]).cost_nanos == 1_750_000_000
    assert api_a.client.get(f"{URL}/{item['id']}").json()["cost_usd"] == "1.750000000"


def test_database_outage_is_a_503_with_retry_after(api_a, catalog, monkeypatch):
    from django.db import OperationalError

    def down(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("finops.apis.usage.usage_ingest", down)
    response = post(api_a.client, {"request_id": "r1", "model": "gpt-4o", "input_tokens": 1})
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "database_unavailable"


def test_retry_of_a_record_without_occurred_at_is_a_duplicate(api_a, catalog):
    record = {"request_id": "r1", "workflow": "ticket-summary", "model": "gpt-4o", "input_tokens": 1200}
    first = post(api_a.client, record).json()["items"][0]
    response = post(api_a.client, record)
    again = response.json()["items"][0]
    assert response.status_code == 200 and again["status"] == "duplicate" and again["id"] == first["id"]
    _, changed = one(api_a.client, **{**record, "input_tokens": 1201})
    assert changed["status"] == "conflict"
