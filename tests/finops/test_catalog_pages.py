"""The models and prices pages: catalog, price history, operators' price forms, unknown models in usage."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from django.test import Client
from django.utils import timezone

from finops.models import ModelPrice, UsageRecord
from tenants.models import AuditEvent
from tests.factories import ModelPriceFactory

pytestmark = pytest.mark.django_db

ADD_O3 = "/models/o3/prices/add/"


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def _row(html: str, model_name: str) -> str:
    """The catalog table row of one model."""
    match = re.search(rf'<tr[^>]*>\s*<th scope="row"[^>]*>\s*<a[^>]*>{re.escape(model_name)}</a>.*?</tr>', html, re.S)
    assert match, f"no row for {model_name}"
    return match.group(0)


def _ingest(api, **record) -> UsageRecord:
    response = api.client.post("/api/v1/usage", orjson.dumps(record), content_type="application/json")
    item = response.json()["items"][0]
    assert item["status"] == "accepted", item
    return UsageRecord.objects.get(pk=item["id"])


def _unpriced(tenant, model_name: str, n: int = 1) -> None:
    now = timezone.now()
    for i in range(n):
        UsageRecord.objects.create(
            tenant=tenant,
            model_name=model_name,
            input_tokens=100,
            occurred_at=now - timedelta(hours=i),
            received_at=now,
            request_id=f"{model_name}-{i}",
            content_hash="0" * 32,
        )


def _price_form(**overrides) -> dict:
    data = {
        "effective_from": (timezone.localtime() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S"),
        "input": "1.50",
        "cached_input": "0.375",
        "cache_write": "0",
        "output": "6.00",
        "reasoning": "",
        "source": "https://openai.com/api/pricing/",
        "price_taken_on": timezone.localdate().isoformat(),
    }
    data.update(overrides)
    return data


# --- Models page ------------------------------------------------------------------------------------


def test_models_page_lists_the_catalog_by_provider_with_current_prices(viewer_a, catalog):
    html = _html(_client_for(viewer_a).get("/models/"))

    assert "Models and prices" in html
    assert "4 models from 3 providers" in html
    for provider in ("OpenAI", "Anthropic", "Google"):
        assert f">{provider}</h2>" in html
    gpt4o = _row(html, "gpt-4o")
    # The price in force now (since 2024), not the 2023 one; "1 past" counts the older row.
    assert re.findall(r"\$[\d.,]+", gpt4o) == ["$2.50", "$1.25", "$0.00", "$10.00", "$10.00"]
    assert "$5.00" not in gpt4o and "1 past" in gpt4o
    assert "my-azure-gpt4o" in gpt4o and r"gpt-4o-\d{4}-\d{2}-\d{2}" in gpt4o
    assert "o200k_base" in gpt4o and "Standard" in gpt4o
    assert "Reasoning tokens cost the output price" in gpt4o  # reasoning empty: shown as the output price
    sonnet = _row(html, "claude-sonnet-4-5")
    assert re.findall(r"\$[\d.,]+", sonnet)[:4] == ["$3.00", "$0.30", "$3.75", "$15.00"]
    assert "estimated" in sonnet  # no native encoding
    assert "$0.01875" in _row(html, "gemini-2.5-flash-lite")  # six decimals shown as they are
    assert 'href="/models/gpt-4o/"' in html


def test_models_page_shows_the_day_a_price_was_taken_and_models_without_price(viewer_a, catalog):
    ModelPrice.objects.filter(model=catalog["o3"]).update(price_taken_on=datetime(2025, 11, 25).date())
    ModelPrice.objects.filter(model=catalog["claude-sonnet-4-5"]).update(
        effective_from=timezone.now() + timedelta(days=3)
    )
    html = _html(_client_for(viewer_a).get("/models/"))
    assert "2025-11-25" in _row(html, "o3")
    sonnet = _row(html, "claude-sonnet-4-5")
    assert "no price in force" in sonnet and "1 scheduled" in sonnet


def test_models_page_query_count_does_not_grow_with_the_catalog(viewer_a, catalog, django_assert_max_num_queries):
    client = _client_for(viewer_a)
    # session, user, visible tenants, models, prices, unknown names; learned safety factors and
    # settle-above-hold rates per provider (budgets' estimates section, one query each)
    with django_assert_max_num_queries(9):
        _html(client.get("/models/"))


def test_layout_has_a_models_link(viewer_a, catalog):
    html = _html(_client_for(viewer_a).get("/"))
    assert '<a href="/models/"' in html
    assert re.search(r'<a href="/models/" aria-current="page">Models</a>', _html(_client_for(viewer_a).get("/models/")))


@pytest.mark.parametrize("url", ["/models/", "/models/gpt-4o/", ADD_O3, "/exports/focus.csv"])
def test_anonymous_is_sent_to_login(url):
    response = Client().get(url)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")


# --- Model detail -----------------------------------------------------------------------------------


def test_model_detail_shows_the_price_history(viewer_a, catalog):
    gpt4o = catalog["gpt-4o"]
    ModelPrice.objects.filter(model=gpt4o, effective_from__year=2024).update(
        source="https://openai.com/api/pricing/", price_taken_on=datetime(2025, 11, 25).date()
    )
    ModelPriceFactory(
        model=gpt4o,
        effective_from=timezone.now() + timedelta(days=10),
        input=Decimal("2.25"),
        cached_input=Decimal("1.10"),
        output=Decimal("9.00"),
        reasoning=Decimal("12.00"),
    )
    html = _html(_client_for(viewer_a).get("/models/gpt-4o/"))

    rows = re.findall(r'<tr class="price-row price-row--(\w+)">(.*?)</tr>', html, re.S)
    assert [status for status, _ in rows] == ["scheduled", "current", "past"]
    scheduled, current, past = (body for _, body in rows)
    assert "$2.25" in scheduled and "$12.00" in scheduled and "scheduled" in scheduled
    assert "2024-01-01" in current and "$2.50" in current and "in force" in current
    assert 'href="https://openai.com/api/pricing/"' in current and ">openai.com/api/pricing/<" not in current
    assert ">openai.com<" in current and "2025-11-25" in current
    assert "2023-06-01" in past and "$5.00" in past and "$15.00" in past
    assert "my-azure-gpt4o" in html and "o200k_base" in html and "16,384 tokens" in html


def test_unknown_model_detail_is_404(viewer_a, catalog):
    assert _client_for(viewer_a).get("/models/no-such-model/").status_code == 404


def test_model_names_with_a_slash_have_pages(operator, catalog):
    from tests.factories import LlmModelFactory

    LlmModelFactory(name="meta-llama/llama-3.3-70b", provider="together")
    client = _client_for(operator)
    assert "meta-llama/llama-3.3-70b" in _html(client.get("/models/"))
    assert "No prices yet" in _html(client.get("/models/meta-llama/llama-3.3-70b/"))
    assert client.get("/models/meta-llama/llama-3.3-70b/prices/add/").status_code == 200


# --- Price forms ------------------------------------------------------------------------------------


def test_operator_sees_the_price_buttons_and_a_viewer_does_not(operator, viewer_a, catalog):
    price = ModelPrice.objects.get(model=catalog["o3"])
    edit = f'href="/models/o3/prices/{price.pk}/edit/"'
    staff = _html(_client_for(operator).get("/models/o3/"))
    assert f'href="{ADD_O3}"' in staff and edit in staff
    member = _html(_client_for(viewer_a).get("/models/o3/"))
    assert ADD_O3 not in member and "/edit/" not in member and "Add price" not in member


def test_operator_adds_a_price_and_existing_usage_is_repriced(
    operator, api_a, catalog, django_capture_on_commit_callbacks
):
    record = _ingest(
        api_a, request_id="r1", model="o3", input_tokens=1_000_000, output_tokens=1_000_000, occurred_at=_hours_ago(2)
    )
    assert record.cost_nanos == 10_000_000_000  # $2 + $8 under the 2024 price
    client = _client_for(operator)
    form = _html(client.get(ADD_O3))
    assert 'value="2.00"' in form and 'value="8.00"' in form  # starts from the latest price

    starts = timezone.localtime() - timedelta(days=1)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(ADD_O3, _price_form(effective_from=starts.strftime("%Y-%m-%dT%H:%M:%S")))
    assert response.status_code == 302 and response["Location"] == "/models/o3/"

    added = ModelPrice.objects.get(model=catalog["o3"], effective_from=starts.replace(microsecond=0))
    assert (added.input, added.cached_input, added.output, added.reasoning) == (
        Decimal("1.5"),
        Decimal("0.375"),
        Decimal("6"),
        None,
    )
    assert added.source == "https://openai.com/api/pricing/"
    event = AuditEvent.objects.get(action="model_price.save", target_id=str(added.pk))
    assert event.actor_user == operator and event.before is None and Decimal(event.after["input"]) == Decimal("1.5")
    record.refresh_from_db()
    assert record.cost_nanos == 7_500_000_000 and record.price_id == added.pk  # $1.50 + $6.00

    page = _html(client.get(response["Location"]))
    assert "re-priced in the background" in page
    assert re.search(r'price-row--current">.*?\$1\.50', page, re.S)


def test_operator_corrects_a_price_and_usage_is_repriced(operator, api_a, catalog, django_capture_on_commit_callbacks):
    record = _ingest(api_a, request_id="r1", model="o3", input_tokens=1_000_000, occurred_at=_hours_ago(3))
    price = ModelPrice.objects.get(model=catalog["o3"])
    url = f"/models/o3/prices/{price.pk}/edit/"
    client = _client_for(operator)
    form = _html(client.get(url))
    assert 'value="2024-01-01T00:00:00"' in form and 'value="2.00"' in form and 'value="0.50"' in form

    data = _price_form(effective_from="2024-01-01T00:00:00", input="1.75", cached_input="0.5", output="8")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, data)
    assert response.status_code == 302

    price.refresh_from_db()
    assert price.input == Decimal("1.75") and ModelPrice.objects.filter(model=catalog["o3"]).count() == 1
    event = AuditEvent.objects.get(action="model_price.save", target_id=str(price.pk))
    assert Decimal(event.before["input"]) == 2 and Decimal(event.after["input"]) == Decimal("1.75")
    record.refresh_from_db()
    assert record.cost_nanos == 1_750_000_000
    assert "corrected" in _html(client.get("/models/o3/"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"input": "1.1234567"}, "Ensure that there are no more than 6 decimal places."),
        ({"output": "-1"}, "A price cannot be negative."),
        ({"input": "abc"}, "Enter a number."),
        ({"effective_from": ""}, "This field is required."),
        ({"effective_from": "2024-01-01T00:00:00"}, "o3 already has a price in force from 2024-01-01 00:00:00"),
    ],
    ids=["seven-decimals", "negative", "not-a-number", "no-start", "same-start-as-another-price"],
)
def test_invalid_price_input_shows_the_error_and_saves_nothing(operator, catalog, overrides, message):
    before = ModelPrice.objects.count()
    html = _html(_client_for(operator).post(ADD_O3, _price_form(**overrides)))
    assert "Nothing was saved" in html
    assert message in html
    assert 'class="field field--error"' in html
    assert ModelPrice.objects.count() == before
    assert not AuditEvent.objects.filter(action="model_price.save").exists()


def test_a_correction_may_keep_its_own_start(operator, catalog):
    price = ModelPrice.objects.get(model=catalog["o3"])
    other = ModelPrice.objects.get(model=catalog["gpt-4o"], effective_from__year=2024)
    # Same start as another model's price is fine; so is the price's own start.
    assert other.effective_from == price.effective_from
    response = _client_for(operator).post(
        f"/models/o3/prices/{price.pk}/edit/", _price_form(effective_from="2024-01-01T00:00:00", input="2.10")
    )
    assert response.status_code == 302
    price.refresh_from_db()
    assert price.input == Decimal("2.1")


def test_viewer_cannot_add_or_edit_prices(viewer_a, catalog):
    price = ModelPrice.objects.get(model=catalog["o3"])
    count = ModelPrice.objects.count()
    client = _client_for(viewer_a)
    edit = f"/models/o3/prices/{price.pk}/edit/"
    for url in (ADD_O3, edit):
        assert client.get(url).status_code == 403
        assert client.post(url, _price_form(input="0.01")).status_code == 403
    price.refresh_from_db()
    assert price.input == Decimal("2.00") and ModelPrice.objects.count() == count
    assert not AuditEvent.objects.filter(action="model_price.save").exists()


def test_editing_a_price_of_another_model_is_404(operator, catalog):
    foreign = ModelPrice.objects.get(model=catalog["claude-sonnet-4-5"])
    assert _client_for(operator).get(f"/models/o3/prices/{foreign.pk}/edit/").status_code == 404


# --- Unknown models in usage ---------------------------------------------------------------------------


def test_unknown_models_section_lists_only_the_viewers_tenants(viewer_a, tenant_a, tenant_b, catalog):
    _unpriced(tenant_a, "mystery-model-a", n=3)
    _unpriced(tenant_b, "marker-tenant-b-model", n=2)
    html = _html(_client_for(viewer_a).get("/models/"))
    assert "Models seen in usage without a price" in html
    match = re.search(r'<table class="table table--unknown">.*?</table>', html, re.S)
    assert match and "mystery-model-a" in match.group(0)
    assert re.search(r"mystery-model-a</td>\s*<td class=\"num\">3</td>", html)
    assert "marker-tenant-b" not in html
    assert "Ask an operator" in html and "/admin/finops/llmmodel/add/" not in html
    assert _client_for(viewer_a).get("/models/?tenant=globex").status_code == 404


def test_operator_sees_every_tenants_unknown_models_with_a_link_to_add_them(operator, tenant_a, tenant_b, catalog):
    _unpriced(tenant_a, "mystery-model-a")
    _unpriced(tenant_b, "marker-tenant-b-model", n=2)
    client = _client_for(operator)
    html = _html(client.get("/models/"))
    assert "mystery-model-a" in html and "marker-tenant-b-model" in html
    assert 'href="/admin/finops/llmmodel/add/"' in html
    assert 'href="/admin/finops/llmmodel/add/?name=marker-tenant-b-model"' in html
    only_a = _html(client.get("/models/?tenant=acme"))
    assert "mystery-model-a" in only_a and "marker-tenant-b-model" not in only_a


def test_no_unknown_models_section_when_all_usage_is_priced(viewer_a, api_a, catalog):
    _ingest(api_a, request_id="r1", model="gpt-4o", input_tokens=10)
    assert "Models seen in usage without a price" not in _html(_client_for(viewer_a).get("/models/"))


def test_known_model_without_a_price_at_the_time_links_to_the_model(viewer_a, tenant_a, catalog):
    now = timezone.now()
    UsageRecord.objects.create(
        tenant=tenant_a,
        model=catalog["o3"],
        model_name="o3",
        input_tokens=5,
        occurred_at=now,
        received_at=now,
        request_id="early",
        content_hash="0" * 32,
    )
    html = _html(_client_for(viewer_a).get("/models/"))
    assert re.search(r'catalog model <a class="mono" href="/models/o3/">o3</a> had no price in force then', html)


def _hours_ago(hours: int) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).isoformat()
