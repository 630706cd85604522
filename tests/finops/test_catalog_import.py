"""`manage.py catalog_import FILE [--dry-run]`: the project's JSON and LiteLLM's price table become new
effective-dated prices; a dry run shows the changes and writes nothing; history is never rewritten."""

import json
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from finops.models import LlmModel, ModelPrice, UsageRecord
from finops.services.catalog_import import litellm_price_specs

pytestmark = pytest.mark.django_db

LITELLM = {
    "sample_spec": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 0},
    "o3": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 2e-06,
        "cache_read_input_token_cost": 5e-07,
        "output_cost_per_token": 8e-06,
        "input_cost_per_token_batches": 1e-06,
        "output_cost_per_token_batches": 4e-06,
        "input_cost_per_token_flex": 1e-06,
        "cache_read_input_token_cost_flex": 2.5e-07,
        "output_cost_per_token_flex": 4e-06,
        "input_cost_per_token_priority": 3.5e-06,
        "cache_read_input_token_cost_priority": 8.75e-07,
        "output_cost_per_token_priority": 1.4e-05,
    },
    "claude-sonnet-4-5": {
        "litellm_provider": "anthropic",
        "mode": "chat",
        "input_cost_per_token": 3e-06,
        "cache_read_input_token_cost": 3e-07,
        "cache_creation_input_token_cost": 3.75e-06,
        "cache_creation_input_token_cost_above_1hr": 6e-06,
        "output_cost_per_token": 1.5e-05,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "output_cost_per_token_above_200k_tokens": 2.25e-05,
        "cache_read_input_token_cost_above_200k_tokens": 6e-07,
        "cache_creation_input_token_cost_above_200k_tokens": 7.5e-06,
    },
    "vertex_ai/gpt-4o": {"litellm_provider": "vertex_ai-openai_models", "input_cost_per_token": 3e-06},
    "openrouter/openai/gpt-4o": {"litellm_provider": "openrouter", "input_cost_per_token": 9e-06},
    "gpt-4o": {  # same as the catalog's current price: unchanged
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 2.5e-06,
        "cache_read_input_token_cost": 1.25e-06,
        "output_cost_per_token": 1e-05,
    },
    "brand-new-model": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-06},
}
WHEN = "2026-06-01T00:00:00Z"


@pytest.fixture
def catalog(catalog):
    """The shared catalog with OpenAI cache writes at the input price, as the shipped catalog has them."""
    for price in ModelPrice.objects.filter(model__provider="openai"):
        price.cache_write = price.input
        price.save()
    return catalog


def _usage(tenant, model, *, occurred_at, service_tier="standard", input_tokens=1000, cost_nanos=123) -> UsageRecord:
    return UsageRecord.objects.create(
        tenant=tenant,
        model=model,
        model_name=model.name,
        input_tokens=input_tokens,
        cost_nanos=cost_nanos,
        priced=True,
        service_tier=service_tier,
        occurred_at=occurred_at,
        received_at=occurred_at,
        request_id=f"req-{occurred_at:%Y%m%d}-{service_tier}",
        content_hash="0" * 32,
    )


def _write(tmp_path, data, name="prices.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _run(*args, **options) -> str:
    out = StringIO()
    call_command("catalog_import", *map(str, args), stdout=out, **options)
    return out.getvalue()


def _history() -> list[tuple]:
    return list(
        ModelPrice.objects.order_by("id").values_list(
            "id", "model__name", "channel", "service_tier", "effective_from", "input", "output", "updated_at"
        )
    )


def test_litellm_entry_becomes_tier_rows_long_context_and_one_hour_writes():
    specs = {s["service_tier"]: s for s in litellm_price_specs(LITELLM["o3"])}
    assert set(specs) == {"standard", "batch", "flex", "priority"}
    assert (specs["standard"]["input"], specs["standard"]["cached_input"], specs["standard"]["output"]) == (
        "2",
        "0.5",
        "8",
    )
    assert specs["standard"]["cache_write"] == "2"  # OpenAI bills cache writes as input
    assert (specs["batch"]["input"], specs["batch"]["cached_input"]) == ("1", "0.5")  # never above the tier's input
    assert specs["priority"]["cached_input"] == "0.875"
    (sonnet,) = litellm_price_specs(LITELLM["claude-sonnet-4-5"])
    assert sonnet["cache_write_1h"] == "6"
    assert sonnet["long_context"] == {
        "threshold": 200_000,
        "input": "6",
        "output": "22.5",
        "cached_input": "0.6",
        "cache_write": "7.5",
        "cache_write_1h": None,
    }


def test_litellm_dry_run_shows_the_changes_and_writes_nothing(tmp_path, catalog):
    before = _history()
    out = _run(_write(tmp_path, LITELLM), "--dry-run", effective_from=WHEN, verbosity=2)
    assert _history() == before
    assert "dry run: nothing written" in out
    assert "new       o3 [api priority] from 2026-06-01: input - -> 3.5" in out
    assert "new       o3 from 2026-06-01" not in out  # o3 standard is unchanged (2 / 0.5 / 8)
    assert "new       claude-sonnet-4-5 from 2026-06-01: cache_write_1h - -> 6, long_context_threshold" in out
    assert "gpt-4o [vertex standard]" in out and "openrouter" not in out.split("not in the catalog")[0]
    assert "not in the catalog: brand-new-model" in out
    assert "litellm file: 5 new prices, 2 unchanged, 0 skipped, 1 names not in the catalog" in out


def test_litellm_import_adds_dated_prices_keeps_history_and_reprices_what_they_cover(
    tmp_path, catalog, tenant_a, django_capture_on_commit_callbacks
):
    before = _history()
    old = _usage(tenant_a, catalog["o3"], occurred_at=datetime(2026, 5, 1, tzinfo=UTC))
    batch = _usage(
        tenant_a,
        catalog["o3"],
        service_tier="batch",
        input_tokens=1_000_000,
        occurred_at=datetime(2026, 6, 2, tzinfo=UTC),
    )
    old_cost = old.cost_nanos
    with django_capture_on_commit_callbacks(execute=True):
        out = _run(_write(tmp_path, LITELLM), effective_from=WHEN, taken_on="2026-05-30")
    assert "created 5 prices" in out
    assert _history()[: len(before)] == before  # every existing row as it was
    added = ModelPrice.objects.filter(effective_from=datetime(2026, 6, 1, tzinfo=UTC))
    assert added.count() == 5
    assert {p.price_taken_on.isoformat() for p in added} == {"2026-05-30"}
    assert all(p.source.startswith("LiteLLM model_prices_and_context_window.json: ") for p in added)
    batch.refresh_from_db()
    old.refresh_from_db()
    assert batch.cost_nanos == 1_000_000_000 and batch.price_rule == "batch"  # $1 per 1M on the batch row
    assert old.cost_nanos == old_cost  # before the new prices start: untouched
    # Importing the same file again changes nothing.
    again = _run(_write(tmp_path, LITELLM), effective_from=WHEN)
    assert "0 new prices" in again and "created 0 prices" in again


def test_a_differing_price_that_would_start_before_the_latest_is_skipped(tmp_path, catalog):
    _run(_write(tmp_path, LITELLM), effective_from=WHEN)
    changed = json.loads(json.dumps(LITELLM))
    changed["claude-sonnet-4-5"]["input_cost_per_token"] = 3.3e-06
    before = _history()
    out = _run(_write(tmp_path, changed), effective_from="2026-05-01T00:00:00Z")
    assert "skipped   claude-sonnet-4-5 from 2026-05-01: differs, but starts on or before the latest price" in out
    assert _history() == before


PROJECT = {
    "format": 1,
    "models": [
        {  # a later price for a known model, and its batch tier
            "name": "gpt-4o",
            "prices": [
                {
                    "effective_from": "2026-07-01T00:00:00Z",
                    "input": "2.00",
                    "cached_input": "1.00",
                    "cache_write": "2.00",
                    "output": "8.00",
                    "tier_multipliers": {"batch": "0.5"},
                    "price_taken_on": "2026-06-30",
                    "source": "https://platform.openai.com/docs/pricing",
                },
                {  # the same as the price in force then: unchanged
                    "effective_from": "2024-06-01T00:00:00Z",
                    "input": "2.50",
                    "cached_input": "1.25",
                    "cache_write": "2.5",
                    "output": "10.00",
                },
                {  # differs from history: skipped
                    "effective_from": "2024-01-01T00:00:00Z",
                    "input": "9",
                    "cached_input": "9",
                    "cache_write": "9",
                    "output": "9",
                },
            ],
        },
        {
            "name": "gpt-5.2",
            "provider": "openai",
            "tier": "premium",
            "aliases": ["gpt-5.2-2025-12-11"],
            "encoding": "o200k_base",
            "prices": [
                {
                    "effective_from": "2025-12-11T00:00:00Z",
                    "input": "1.75",
                    "cached_input": "0.175",
                    "cache_write": "1.75",
                    "output": "14",
                    "long_context": {"threshold": 272000, "input": "3.5", "output": "21"},
                    "price_taken_on": "2026-12-06",
                },
                {
                    "effective_from": "2025-12-11T00:00:00Z",
                    "channel": "azure",
                    "input": "1.925",
                    "cached_input": "0.1925",
                    "cache_write": "1.925",
                    "output": "15.4",
                },
            ],
        },
        {"name": "no-tier-model", "provider": "x", "prices": [{"effective_from": WHEN, "input": "1"}]},
    ],
}


def test_project_format_dry_run_then_import(tmp_path, catalog):
    path = _write(tmp_path, PROJECT)
    before = _history()
    out = _run(path, "--dry-run")
    assert _history() == before and not LlmModel.objects.filter(name="gpt-5.2").exists()
    assert "new       gpt-4o from 2026-07-01: input 2.5 -> 2, cached_input 1.25 -> 1" in out
    assert "\nunchanged" not in out  # listed only with --show-unchanged
    assert "skipped   gpt-4o from 2024-01-01" in out
    assert "new       gpt-5.2 [azure standard] from 2025-12-11" in out
    assert "project file: 3 new prices, 1 unchanged, 1 skipped, 1 names not in the catalog" in out

    out = _run(path)
    assert "created 3 prices" in out and _history()[: len(before)] == before
    gpt52 = LlmModel.objects.get(name="gpt-5.2")
    assert gpt52.tier.slug == "premium" and gpt52.aliases == ["gpt-5.2-2025-12-11"]
    api = gpt52.prices.get(channel="api")
    assert (api.long_context_threshold, api.long_context_input, api.long_context_output) == (
        272_000,
        Decimal("3.5"),
        Decimal("21"),
    )
    assert ModelPrice.objects.get(model=catalog["gpt-4o"], effective_from__year=2026).tier_multipliers == {
        "batch": "0.5"
    }
    assert "0 new prices" in _run(path)


def test_bad_files_are_refused_with_a_message(tmp_path, catalog):
    with pytest.raises(CommandError, match="Neither the project's catalog JSON"):
        _run(_write(tmp_path, {"hello": 1}))
    bad = {"format": 1, "models": [{"name": "gpt-4o", "prices": [{"effective_from": WHEN, "input": "0.0000001"}]}]}
    with pytest.raises(CommandError, match="at most 6 decimals"):
        _run(_write(tmp_path, bad))
    assert UsageRecord.objects.count() == 0


def test_a_newer_seed_file_can_be_imported_from_now_on_over_an_older_catalog(tmp_path, catalog):
    data = {
        "format": 1,
        "models": [
            {
                "name": "claude-sonnet-4-5",
                "prices": [
                    {  # the 2024 price with the 1-hour write price the older catalog lacks
                        "effective_from": "2024-01-01T00:00:00Z",
                        "input": "3.00",
                        "cached_input": "0.30",
                        "cache_write": "3.75",
                        "cache_write_1h": "6",
                        "output": "15.00",
                    }
                ],
            }
        ],
    }
    path = _write(tmp_path, data)
    assert "skipped   claude-sonnet-4-5 from 2024-01-01" in _run(path, "--dry-run")
    out = _run(path, effective_from="2026-12-06T00:00:00Z")
    assert "created 1 prices" in out
    added = ModelPrice.objects.get(model=catalog["claude-sonnet-4-5"], effective_from__year=2026)
    assert added.cache_write_1h == Decimal("6")


def test_from_now_on_takes_only_each_models_latest_price_of_the_file(tmp_path, catalog):
    """A file holding a model's price history (as the shipped seed does) imported with --effective-from
    must start the newest price then, not whichever history row came last in the file."""
    old = {"effective_from": "2024-01-01T00:00:00Z", "input": "10", "cached_input": "2.5", "cache_write": "10"}
    new = {"effective_from": "2025-06-10T00:00:00Z", "input": "1.5", "cached_input": "0.5", "cache_write": "1.5"}
    old["output"], new["output"] = "40", "6"
    for order in ([old, new], [new, old]):
        path = _write(tmp_path, {"format": 1, "models": [{"name": "gpt-4o", "prices": order}]})
        out = _run(path, "--dry-run", effective_from="2027-01-01T00:00:00Z")
        assert "project file: 1 new prices" in out, out
        assert "new       gpt-4o from 2027-01-01: input 2.5 -> 1.5" in out, out


def test_a_litellm_entry_silent_on_a_rule_keeps_the_rule_in_force(tmp_path, catalog):
    """LiteLLM's table not listing a long-context premium or a 1-hour write price is no reason to
    drop them: an import must never make the catalog under-price the calls those rules bill."""
    _run(_write(tmp_path, {"claude-sonnet-4-5": LITELLM["claude-sonnet-4-5"]}), effective_from=WHEN)
    silent = {k: v for k, v in LITELLM["claude-sonnet-4-5"].items() if "above" not in k} | {
        "input_cost_per_token": 3.3e-06
    }
    out = _run(_write(tmp_path, {"claude-sonnet-4-5": silent}, "silent.json"), effective_from="2026-09-01T00:00:00Z")
    assert "created 1 prices" in out
    added = ModelPrice.objects.get(model=catalog["claude-sonnet-4-5"], effective_from__month=9, channel="api")
    assert added.input == Decimal("3.3")
    assert (added.long_context_threshold, added.long_context_input, added.long_context_output) == (
        200_000,
        Decimal("6"),
        Decimal("22.5"),
    )
    assert added.cache_write_1h == Decimal("6")
