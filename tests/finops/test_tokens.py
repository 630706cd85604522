import hashlib
import os
import shutil
import threading
from decimal import Decimal

import pytest
import tiktoken
import tiktoken.load
from rest_framework.test import APIClient

from finops import tokens
from finops.catalog import ModelEntry, get_catalog

URL = "/api/v1/tokens/count"
O200K_FILE, O200K_SHA = tokens.PACKAGED_FILES["o200k_base"]
CL100K_FILE, _ = tokens.PACKAGED_FILES["cl100k_base"]
THOUSAND_TOKENS = "hello" + " hello" * 999  # 1,000 tokens in o200k_base (checked below)


def entry(name="gpt-4o", provider="openai", encoding="o200k_base") -> ModelEntry:
    return ModelEntry(
        id=1,
        name=name,
        provider=provider,
        tier_id=1,
        tier_slug="standard",
        tier_rank=2,
        encoding=encoding,
        context_window=None,
        max_output_tokens=None,
    )


def cookbook_count(encoding_name: str, messages: list[dict]) -> int:
    """OpenAI cookbook's num_tokens_from_messages, on tiktoken directly."""
    enc = tokens.get_encoding(encoding_name)
    total = 0
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(enc.encode(value))
            if key == "name":
                total += 1
    return total + 3


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt by tiktoken to fetch a file fails the test loudly."""
    calls = []

    def refuse(blobpath):
        calls.append(blobpath)
        raise AssertionError(f"tiktoken tried to fetch {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    return calls


# --- counting ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "text", "expected"),
    [
        ("o200k_base", "hello world", 2),
        ("cl100k_base", "hello world", 2),
        ("o200k_base", "Hello, world!", 4),
        ("o200k_base", "", 0),
        ("o200k_base", THOUSAND_TOKENS, 1000),
    ],
)
def test_count_text_known_values(encoding, text, expected):
    count = tokens.count_text(entry(encoding=encoding), "gpt-4o", text)
    assert count == tokens.TokenCount(tokens=expected, encoding=encoding, estimated=False)


def test_count_text_treats_special_token_markers_as_text():
    count = tokens.count_text(None, "gpt-4o", "<|endoftext|>")
    assert count.tokens == 7  # the marker as ordinary characters, not the single special token
    assert count.tokens == len(tokens.get_encoding("o200k_base").encode("<|endoftext|>", disallowed_special=()))


@pytest.mark.parametrize(
    ("model_entry", "name", "expected"),
    [
        (entry(), "gpt-4o", ("o200k_base", False)),
        (entry(name="gpt-4", encoding="cl100k_base"), "my-deployment", ("cl100k_base", False)),
        (entry(name="claude-sonnet-4-5", provider="anthropic", encoding=""), "claude-sonnet-4-5", ("o200k_base", True)),
        (entry(name="gemini-2.5-flash", provider="google", encoding=""), "gemini-2.5-flash", ("o200k_base", True)),
        # A catalog encoding on a non-OpenAI model is still only an estimate.
        (entry(name="claude-x", provider="anthropic", encoding="cl100k_base"), "claude-x", ("cl100k_base", True)),
        # No catalog encoding: tiktoken's map, by canonical name first, then by the name as sent.
        (entry(name="gpt-3.5-turbo", encoding=""), "my-azure-deployment", ("cl100k_base", False)),
        (None, "gpt-3.5-turbo-0125", ("cl100k_base", False)),
        (None, "gpt-4o-mini", ("o200k_base", False)),
        (None, "openai/gpt-4", ("cl100k_base", False)),
        (None, "GPT-4o", ("o200k_base", False)),
        (None, "mystery-model-9000", ("o200k_base", True)),
        (None, "claude-3-haiku", ("o200k_base", True)),
        # Encodings the product does not ship fall back to the nearest one.
        (None, "text-davinci-003", ("o200k_base", True)),
    ],
)
def test_encoding_for(model_entry, name, expected):
    assert tokens.encoding_for(model_entry, name) == expected


@pytest.mark.django_db
def test_estimated_flags_from_the_catalog(catalog):
    snap = get_catalog()
    assert tokens.count_text(snap.resolve("gpt-4o"), "gpt-4o", "hi").estimated is False
    assert tokens.count_text(snap.resolve("o3"), "o3", "hi").estimated is False
    assert tokens.count_text(snap.resolve("claude-sonnet-4-5"), "claude-sonnet-4-5", "hi").estimated is True
    assert tokens.count_text(snap.resolve("gemini-2.5-flash-lite"), "gemini-2.5-flash-lite", "hi").estimated is True
    assert tokens.count_text(snap.resolve("unknown-model"), "unknown-model", "hi").estimated is True


def test_count_messages_matches_cookbook_formula():
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "name": "bob", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    count = tokens.count_messages(entry(), "gpt-4o", messages)
    # system: 3 + 1 + 6; user: 3 + 1 + (1 + 1) + 7; assistant: 3 + 1 + 1; reply priming: 3
    assert count.tokens == 10 + 13 + 5 + 3
    assert count.tokens == cookbook_count("o200k_base", messages)
    assert count.encoding == "o200k_base"
    assert count.estimated is False
    cl = tokens.count_messages(entry(encoding="cl100k_base"), "gpt-4", messages)
    assert cl.tokens == cookbook_count("cl100k_base", messages)


def test_count_messages_content_shapes():
    text_parts = [
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}, {"type": "text", "text": "hi"}]}
    ]
    count = tokens.count_messages(entry(), "gpt-4o", text_parts)
    assert count.tokens == 3 + 1 + 7 + 1 + 3
    assert count.estimated is False

    with_image = [
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}, {"type": "image_url", "image_url": {}}]}
    ]
    count = tokens.count_messages(entry(), "gpt-4o", with_image)
    assert count.tokens == 3 + 1 + 7 + 3
    assert count.estimated is True

    null_content = [{"role": "assistant", "content": None}]
    assert tokens.count_messages(entry(), "gpt-4o", null_content) == tokens.TokenCount(7, "o200k_base", False)
    assert tokens.count_messages(entry(), "gpt-4o", []).tokens == 3


def test_count_messages_non_string_fields_count_as_json_and_estimate():
    tool_call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [{"role": "assistant", "content": None, "tool_calls": [tool_call]}]
    count = tokens.count_messages(entry(), "gpt-4o", messages)
    json_tokens = len(
        tokens.get_encoding("o200k_base").encode_ordinary(
            '[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]'
        )
    )
    assert count.tokens == 3 + 1 + json_tokens + 3
    assert count.estimated is True


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ({"role": "user"}, "must be a list"),
        (["hello"], "messages[0] must be an object"),
        ([{"content": "hi"}], "messages[0].role is required"),
        ([{"role": "user"}, {"role": 3, "content": "hi"}], "messages[1].role is required"),
        ([{"role": "user", "content": 42}], "messages[0].content must be a string, null or a list"),
        ([{"role": "user", "content": ["hi"]}], "messages[0].content[0] must be an object"),
        ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text is required"),
        ([{"role": "user", "name": 7, "content": "hi"}], "messages[0].name must be a string"),
    ],
)
def test_count_messages_rejects_bad_shapes(messages, fragment):
    with pytest.raises(ValueError) as info:
        tokens.count_messages(entry(), "gpt-4o", messages)
    assert fragment in str(info.value)


def test_count_messages_character_limit():
    messages = [{"role": "user", "content": "x" * 50}, {"role": "user", "content": "y" * 50}]
    assert tokens.count_messages(entry(), "gpt-4o", messages, max_chars=200).tokens > 0
    with pytest.raises(ValueError, match="more than 100 characters"):
        tokens.count_messages(entry(), "gpt-4o", messages, max_chars=100)


# --- loading ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_packaged_encodings_load_without_network(monkeypatch, no_network, name):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    enc = tokens.load_encoding(name)
    assert enc.name == name
    assert len(enc.encode_ordinary("hello world")) == 2
    assert no_network == []
    assert "TIKTOKEN_CACHE_DIR" not in os.environ  # the override does not leak into the process
    file_name, sha = tokens.PACKAGED_FILES[name]
    assert hashlib.sha256((tokens.PACKAGED_DIR / file_name).read_bytes()).hexdigest() == sha


def test_corrupted_packaged_file_is_a_clear_error(monkeypatch, no_network, tmp_path):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    shutil.copy(tokens.PACKAGED_DIR / O200K_FILE, tmp_path / O200K_FILE)
    corrupted = tmp_path / O200K_FILE
    data = bytearray(corrupted.read_bytes())
    data[100] ^= 0x01
    corrupted.write_bytes(bytes(data))

    with pytest.raises(tokens.EncodingUnavailable) as info:
        tokens.load_encoding("o200k_base", packaged_dir=tmp_path)

    assert "corrupted" in info.value.message
    assert O200K_SHA in info.value.message
    assert info.value.code == "encoding_unavailable"
    assert info.value.status_code == 503
    assert corrupted.exists()  # tiktoken's delete-and-refetch never ran
    assert no_network == []


def test_missing_packaged_file_is_a_clear_error(monkeypatch, no_network, tmp_path):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    with pytest.raises(tokens.EncodingUnavailable, match="cannot be read"):
        tokens.load_encoding("cl100k_base", packaged_dir=tmp_path)
    assert no_network == []


def test_user_cache_dir_is_respected(monkeypatch, no_network, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(tokens.PACKAGED_DIR / CL100K_FILE, good / CL100K_FILE)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(good))
    # The packaged dir is ignored: pointing it somewhere empty changes nothing.
    assert tokens.load_encoding("cl100k_base", packaged_dir=tmp_path / "nowhere").name == "cl100k_base"
    assert no_network == []

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(empty))
    with pytest.raises(tokens.EncodingUnavailable, match="empty"):
        tokens.load_encoding("cl100k_base")
    assert len(no_network) == 1  # tiktoken's own behaviour: a cache miss fetches (refused here)


def test_get_encoding_loads_once_across_threads(monkeypatch):
    monkeypatch.setattr(tokens, "_encodings", {})
    real_load = tokens.load_encoding
    loads = []

    def counting_load(name, **kwargs):
        loads.append(name)
        return real_load(name, **kwargs)

    monkeypatch.setattr(tokens, "load_encoding", counting_load)
    results = []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        results.append(tokens.get_encoding("o200k_base"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert loads == ["o200k_base"]
    assert len(results) == 8 and all(r is results[0] for r in results)
    tokens.preload()
    assert sorted(loads) == ["cl100k_base", "o200k_base"]
    assert set(tokens._encodings) == {"cl100k_base", "o200k_base"}


def test_unshipped_encoding_is_refused(no_network):
    with pytest.raises(tokens.EncodingUnavailable, match="not one this product ships"):
        tokens.load_encoding("r50k_base")


# --- API ----------------------------------------------------------------------------------------------


def test_api_prices_a_catalog_model_exactly(api_a, catalog):
    response = api_a.client.post(URL, {"model": "gpt-4o", "text": THOUSAND_TOKENS}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "model": "gpt-4o",
        "resolved_model": "gpt-4o",
        "tokens": 1000,
        "encoding": "o200k_base",
        "estimated": False,
        "priced": True,
        "input_cost_usd": "0.002500000",
        "price_per_mtok_usd": "2.500000",
    }


def test_api_resolves_aliases_and_echoes_the_name_as_sent(api_platform, catalog):
    response = api_platform.client.post(URL, {"model": "my-azure-gpt4o", "text": "hello world"}, format="json")
    body = response.json()
    assert response.status_code == 200
    assert (body["model"], body["resolved_model"], body["tokens"]) == ("my-azure-gpt4o", "gpt-4o", 2)
    assert body["input_cost_usd"] == "0.000005000"  # 2 tokens x $2.50 / 1M


def test_api_counts_messages_and_estimates_non_openai(api_a, catalog):
    messages = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "hi"}]
    response = api_a.client.post(URL, {"model": "claude-sonnet-4-5", "messages": messages}, format="json")
    body = response.json()
    assert response.status_code == 200
    assert body["tokens"] == cookbook_count("o200k_base", messages)
    assert body["estimated"] is True
    assert body["resolved_model"] == "claude-sonnet-4-5"
    assert body["price_per_mtok_usd"] == "3.000000"
    assert body["input_cost_usd"] == f"{Decimal(body['tokens'] * 3).scaleb(-6):.9f}"  # $3.00 per 1M


def test_api_unknown_model_is_counted_but_unpriced(api_a, catalog):
    response = api_a.client.post(URL, {"model": "mystery-model", "text": "hello world"}, format="json")
    assert response.status_code == 200
    assert response.json() == {
        "model": "mystery-model",
        "resolved_model": None,
        "tokens": 2,
        "encoding": "o200k_base",
        "estimated": True,
        "priced": False,
        "input_cost_usd": None,
        "price_per_mtok_usd": None,
    }


def test_api_requires_authentication(catalog):
    response = APIClient().post(URL, {"model": "gpt-4o", "text": "hi"}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_api_accepts_any_scope_and_signed_in_people(make_key, tenant_a, viewer_a, catalog):
    read_only = make_key(tenant_a, scopes="read")
    assert read_only.client.post(URL, {"model": "gpt-4o", "text": "hi"}, format="json").status_code == 200

    # UserFactory sets the password after saving and never saves it again; without reloading, the
    # session's auth hash would not match the stored row and the session would be dropped.
    viewer_a.refresh_from_db()
    client = APIClient()
    client.force_login(viewer_a)
    response = client.post(URL, {"model": "gpt-4o", "text": "hello world"}, format="json")
    assert response.status_code == 200
    assert response.json()["tokens"] == 2


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"text": "hi"}, "model"),
        ({"model": 42, "text": "hi"}, "model"),
        ({"model": "gpt-4o", "text": 42}, "text"),
        ({"model": "gpt-4o"}, "non_field_errors"),
        ({"model": "gpt-4o", "text": "hi", "messages": [{"role": "user", "content": "hi"}]}, "non_field_errors"),
        ({"model": "gpt-4o", "messages": "hi"}, "messages"),
        ({"model": "gpt-4o", "messages": ["hi"]}, "messages"),
        ({"model": "gpt-4o", "messages": [{"content": "hi"}]}, "messages"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": {"a": 1}}]}, "messages"),
    ],
)
def test_api_rejects_bad_input(api_a, catalog, payload, field):
    response = api_a.client.post(URL, payload, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["details"]


def test_api_bad_messages_error_names_the_problem(api_a, catalog):
    response = api_a.client.post(URL, {"model": "gpt-4o", "messages": [{"content": "hi"}]}, format="json")
    assert response.json()["error"]["details"] == {"messages": ["messages[0].role is required and must be a string."]}


def test_api_rejects_text_over_the_limit(api_a, catalog):
    response = api_a.client.post(URL, {"model": "gpt-4o", "text": "a" * (tokens.MAX_TEXT_CHARS + 1)}, format="json")
    assert response.status_code == 400
    assert "text" in response.json()["error"]["details"]


def test_api_rejects_messages_over_the_limit(api_a, catalog):
    half = tokens.MAX_TEXT_CHARS // 2 + 1
    messages = [{"role": "user", "content": "a" * half}, {"role": "user", "content": "b" * half}]
    response = api_a.client.post(URL, {"model": "gpt-4o", "messages": messages}, format="json")
    assert response.status_code == 400
    assert "more than 2,000,000 characters" in response.json()["error"]["details"]["messages"][0]


def test_api_accepts_json_only(api_a, catalog):
    response = api_a.client.post(URL, {"model": "gpt-4o", "text": "hi"})  # multipart form
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_api_answers_503_when_an_encoding_cannot_load(api_a, catalog, monkeypatch):
    monkeypatch.setattr(tokens, "_encodings", {})

    def broken(name, **kwargs):
        raise tokens.EncodingUnavailable("The packaged tiktoken file for o200k_base is corrupted.")

    monkeypatch.setattr(tokens, "load_encoding", broken)
    response = api_a.client.post(URL, {"model": "gpt-4o", "text": "hi"}, format="json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "encoding_unavailable"


def test_api_rejects_a_body_over_the_upload_limit(api_a, catalog, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api_a.client.post(URL, {"model": "gpt-4o", "text": "a" * 2000}, format="json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
