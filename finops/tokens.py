"""The one module that owns tiktoken encodings: loading, model -> encoding, and counting.

Only the two encodings the package ships (`cl100k_base`, `o200k_base`) are ever used, so counting
works air-gapped and costs the same everywhere. Each is loaded once per process (about 0.9 s for
both, DESIGN.md 12): call `preload()` when a web or worker process starts, not on a first request.
After that, counting is a dict lookup plus tiktoken's encoder; nothing here queries the database
except `input_cost_estimate`, which reads the in-process catalog snapshot.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tiktoken
from rest_framework import status
from tiktoken_ext import openai_public

from tenants.errors import ApplicationError

from .pricing import TokenBuckets, cost_nanos

if TYPE_CHECKING:
    from .catalog import ModelEntry

PACKAGED_DIR = Path(__file__).resolve().parent / "encodings"

# Cache file names are tiktoken's own (SHA-1 of the download address); the SHA-256 values are the ones
# tiktoken_ext.openai_public expects, pinned here so the packaged copy is checked before tiktoken sees it.
PACKAGED_FILES: dict[str, tuple[str, str]] = {
    "cl100k_base": (
        "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "fb374d419588a4632f3f557e76b4b70aebbca790",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}
NEAREST_ENCODING = "o200k_base"
# Providers whose models tokenize exactly as tiktoken says; every other provider's count is an estimate.
EXACT_PROVIDERS = frozenset({"openai"})
# Upper bound on the text one count may encode (about 0.1-0.4 s of encoder time).
MAX_TEXT_CHARS = 2_000_000

# OpenAI's documented chat overhead (openai-cookbook, "How to count tokens with tiktoken").
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3


class EncodingUnavailable(ApplicationError):
    """An encoding file is missing, corrupted or cannot be fetched; counting cannot proceed."""

    def __init__(self, message: str):
        super().__init__("encoding_unavailable", message, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


class TokenInputInvalid(ValueError):
    """Text or messages that cannot be counted; `field` names the request field, the message says why."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class TokenCount:
    tokens: int
    encoding: str
    estimated: bool


_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}


def load_encoding(name: str, *, packaged_dir: Path = PACKAGED_DIR) -> tiktoken.Encoding:
    """Build a fresh Encoding through tiktoken (with its SHA-256 check); no process cache.

    With TIKTOKEN_CACHE_DIR set, this is tiktoken's own behaviour on the user's directory (which may
    download). Otherwise tiktoken is pointed at the packaged copies, after we verify them ourselves:
    on a hash mismatch tiktoken would delete the cached file (here: a package file) and download it
    again, which hangs or fails obscurely air-gapped. Verifying first turns that into one clear error
    and means tiktoken only ever reads a good file, so it never deletes or fetches anything (as long
    as its download address, hence the cache file name, is the one pinned here: the no-network test
    catches a tiktoken release that changes it).
    """
    if name not in PACKAGED_FILES:
        raise EncodingUnavailable(f"The encoding {name!r} is not one this product ships ({', '.join(PACKAGED_FILES)}).")
    constructor = openai_public.ENCODING_CONSTRUCTORS[name]
    try:
        if "TIKTOKEN_CACHE_DIR" in os.environ:
            return tiktoken.Encoding(**constructor())
        _verify_packaged(name, packaged_dir)
        with _tiktoken_cache_dir(packaged_dir):
            return tiktoken.Encoding(**constructor())
    except EncodingUnavailable:
        raise
    except Exception as exc:  # network, permissions, tiktoken's own hash error: all mean "cannot count"
        where = os.environ.get("TIKTOKEN_CACHE_DIR", str(packaged_dir))
        raise EncodingUnavailable(f"Cannot load the tiktoken encoding {name} (cache dir {where!r}): {exc}") from exc


def _verify_packaged(name: str, packaged_dir: Path) -> None:
    file_name, expected = PACKAGED_FILES[name]
    path = packaged_dir / file_name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EncodingUnavailable(
            f"The packaged tiktoken file for {name} cannot be read ({path}): {exc.strerror}. "
            "Reinstall the package, or set TIKTOKEN_CACHE_DIR to a directory holding the encoding files."
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise EncodingUnavailable(
            f"The packaged tiktoken file for {name} is corrupted ({path}): sha256 {actual}, expected {expected}. "
            "Reinstall the package, or set TIKTOKEN_CACHE_DIR to a directory holding a good copy."
        )


@contextlib.contextmanager
def _tiktoken_cache_dir(path: Path) -> Iterator[None]:
    # tiktoken's only knob for where it reads from is this variable. It is set just for the load (which
    # get_encoding serialises with `_lock`) and removed afterwards, so the process still reads as "not set".
    os.environ["TIKTOKEN_CACHE_DIR"] = str(path)
    try:
        yield
    finally:
        os.environ.pop("TIKTOKEN_CACHE_DIR", None)


def get_encoding(name: str) -> tiktoken.Encoding:
    """The process-wide Encoding for `name`, loaded on first use (thread-safe)."""
    enc = _encodings.get(name)
    if enc is not None:
        return enc
    with _lock:
        enc = _encodings.get(name)
        if enc is None:
            enc = load_encoding(name)
            _encodings[name] = enc
    return enc


def preload() -> None:
    """Load every shipped encoding; call at web/worker process start. Raises EncodingUnavailable."""
    for name in PACKAGED_FILES:
        get_encoding(name)


@lru_cache(maxsize=4096)
def _tiktoken_encoding_name(model_name: str) -> str | None:
    """tiktoken's own model map, tolerant of case and a `provider/` prefix (`openai/gpt-4o`)."""
    name = model_name.strip().lower()
    for candidate in (name, name.rsplit("/", 1)[-1]):
        try:
            return tiktoken.encoding_name_for_model(candidate)
        except KeyError:
            continue
    return None


def encoding_for(model_entry: ModelEntry | None, model_name: str) -> tuple[str, bool]:
    """(encoding name, estimated) for a catalog entry (or None) and the model name as sent."""
    foreign = model_entry is not None and model_entry.provider.lower() not in EXACT_PROVIDERS
    if model_entry is not None and model_entry.encoding in PACKAGED_FILES:
        return model_entry.encoding, foreign
    names = [model_entry.name, model_name] if model_entry is not None else [model_name]
    for name in names:
        known = _tiktoken_encoding_name(name)
        if known is None:
            continue
        if known in PACKAGED_FILES:
            return known, foreign
        # Legacy 50k vocabularies and o200k_harmony are not shipped: count with the nearest one.
        return NEAREST_ENCODING, True
    return NEAREST_ENCODING, True


def count_text(model_entry: ModelEntry | None, model_name: str, text: str) -> TokenCount:
    encoding, estimated = encoding_for(model_entry, model_name)
    # encode_ordinary == encode(text, disallowed_special=()): user text containing "<|endoftext|>" is
    # counted as the ordinary characters it is instead of raising.
    tokens = len(get_encoding(encoding).encode_ordinary(text))
    return TokenCount(tokens=tokens, encoding=encoding, estimated=estimated)


def count_messages(
    model_entry: ModelEntry | None, model_name: str, messages: Any, *, max_chars: int | None = None
) -> TokenCount:
    """Chat tokens as OpenAI's cookbook counts them: 3 per message, +1 per `name`, +3 reply priming.

    `content` may be a string, null, or a list of parts; text parts are counted, other parts (images,
    audio, files) are skipped and make the count an estimate, as do non-string fields such as
    `tool_calls` (counted as their compact JSON). Raises TokenInputInvalid (a ValueError) on a bad shape
    or when the text exceeds `max_chars`.
    """
    encoding, estimated = encoding_for(model_entry, model_name)
    encode = get_encoding(encoding).encode_ordinary
    if not isinstance(messages, list):
        raise TokenInputInvalid("messages", "messages must be a list of message objects.")
    chars = 0

    def count(value: str) -> int:
        nonlocal chars
        chars += len(value)
        if max_chars is not None and chars > max_chars:
            raise TokenInputInvalid("messages", f"messages hold more than {max_chars:,} characters of text.")
        return len(encode(value))

    tokens = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TokenInputInvalid("messages", f"{where} must be an object with a 'role'.")
        if not isinstance(message.get("role"), str):
            raise TokenInputInvalid("messages", f"{where}.role is required and must be a string.")
        tokens += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "content":
                content_tokens, partial = _count_content(value, f"{where}.content", count)
                tokens += content_tokens
                estimated = estimated or partial
            elif key == "name":
                if not isinstance(value, str):
                    raise TokenInputInvalid("messages", f"{where}.name must be a string.")
                tokens += count(value) + TOKENS_PER_NAME
            elif isinstance(value, str):
                tokens += count(value)
            elif value is not None:
                tokens += count(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
                estimated = True
    tokens += TOKENS_REPLY_PRIMING
    return TokenCount(tokens=tokens, encoding=encoding, estimated=estimated)


def _count_content(content: Any, where: str, count) -> tuple[int, bool]:
    if content is None:
        return 0, False
    if isinstance(content, str):
        return count(content), False
    if not isinstance(content, list):
        raise TokenInputInvalid("messages", f"{where} must be a string, null or a list of parts.")
    tokens, skipped = 0, False
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise TokenInputInvalid("messages", f"{where}[{j}] must be an object with a string 'type'.")
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                raise TokenInputInvalid("messages", f"{where}[{j}].text is required and must be a string.")
            tokens += count(part["text"])
        else:
            skipped = True
    return tokens, skipped


@dataclass(frozen=True, slots=True)
class InputCostEstimate:
    model_name: str
    resolved_model: str | None
    count: TokenCount
    price_per_mtok_usd: Decimal | None
    cost_nanos: int | None

    @property
    def priced(self) -> bool:
        return self.cost_nanos is not None


def input_cost_estimate(
    *, model_name: str, text: str | None = None, messages: Any = None, max_chars: int = MAX_TEXT_CHARS
) -> InputCostEstimate:
    """Tokens of `text` or chat `messages` for a model, and what they cost as uncached input today.

    Unknown or unpriced models are counted with the nearest encoding and come back unpriced.
    """
    if (text is None) == (messages is None):
        raise ValueError("Pass exactly one of text or messages.")
    # Imported here so this module (and `preload()`) can be imported before Django's apps are ready.
    from .catalog import get_catalog

    catalog = get_catalog()
    entry = catalog.resolve(model_name)
    if text is not None:
        if len(text) > max_chars:
            raise TokenInputInvalid("text", f"text holds more than {max_chars:,} characters.")
        count = count_text(entry, model_name, text)
    else:
        count = count_messages(entry, model_name, messages, max_chars=max_chars)
    price = catalog.current_price(entry.id) if entry is not None else None
    if entry is None or price is None:
        return InputCostEstimate(
            model_name=model_name,
            resolved_model=entry.name if entry is not None else None,
            count=count,
            price_per_mtok_usd=None,
            cost_nanos=None,
        )
    return InputCostEstimate(
        model_name=model_name,
        resolved_model=entry.name,
        count=count,
        # PriceRow holds pico-USD per token, which is USD per 1M tokens scaled by 10^6.
        price_per_mtok_usd=Decimal(price.input).scaleb(-6),
        cost_nanos=cost_nanos(price, TokenBuckets(input=count.tokens)),
    )
