"""What makes two usage reports 'the same call': the content hash behind duplicate vs conflict."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime


def usage_content_hash(
    *,
    workflow: str,
    model_name: str,
    environment: str,
    occurred_at: datetime | None,
    input_tokens: int,
    cached_input_tokens: int,
    cache_write_tokens: int,
    output_tokens: int,
    reasoning_tokens: int,
    tags: dict[str, str],
    reservation_id: str | None = None,
    prompt_version: str = "",
    cache_write_1h_tokens: int = 0,
    service_tier: str = "standard",
    channel: str = "api",
) -> str:
    """A 32-hex-char digest of a record's content as stored (after mapping and counting).

    The same request_id with the same digest is a duplicate; with another digest, a conflict.
    `occurred_at` is normalised to UTC so '+02:00' and 'Z' spellings of one instant agree. It is
    None when the client left it out (the server's clock filled it in): a retry of such a record
    arrives at another instant and must still be a duplicate. `prompt_version` joins the material only
    when given, so records stored before it existed keep their digest.
    """
    when = occurred_at.astimezone(UTC).isoformat(timespec="microseconds") if occurred_at is not None else ""
    tag_part = "\x1f".join(f"{k}\x1e{v}" for k, v in sorted(tags.items()))
    material = "\x1d".join(
        (
            workflow,
            model_name,
            environment,
            when,
            str(input_tokens),
            str(cached_input_tokens),
            str(cache_write_tokens),
            str(output_tokens),
            str(reasoning_tokens),
            tag_part,
            reservation_id or "",
        )
    )
    if prompt_version:
        material += "\x1d" + prompt_version
    # Billing fields join only when they differ from what every older record implicitly had.
    if cache_write_1h_tokens or service_tier != "standard" or channel != "api":
        material += f"\x1d{cache_write_1h_tokens}\x1d{service_tier}\x1d{channel}"
    return hashlib.blake2b(material.encode(), digest_size=16).hexdigest()


def utc_now() -> datetime:
    return datetime.now(UTC)
