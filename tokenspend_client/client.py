"""A small client for Tokenspend's preflight and usage APIs, on the Python standard library only.

Copy this folder (or just this module: it stands alone) into a service that calls LLMs, or install
the project and import it:

    from tokenspend_client import ApprovalRequired, PreflightDenied, Tokenspend

    spend = Tokenspend("https://tokenspend.internal", api_key=os.environ["TOKENSPEND_KEY"])

    def call(*, model, max_output_tokens, compress_to):
        msgs = shorten(messages, compress_to) if compress_to else messages
        return openai.chat.completions.create(model=model, messages=msgs, max_completion_tokens=max_output_tokens)

    try:
        response = spend.guarded_call(call, workflow="ticket-summary", model="gpt-4o", messages=messages,
                                      max_output_tokens=800)
    except PreflightDenied as denied:
        ...  # denied.reasons says why (a hard limit, a deny control)
    except ApprovalRequired as pending:
        ...  # ask an approver for pending.approval_id, then call again with approval_id=...

`guarded_call` asks preflight first, runs the call on the terms it got (model, output limit, input
target), then reports the call's usage with the reservation id, which settles the reservation once.
Reporting is retried on connection errors, 429 and 5xx (ingest is idempotent by request_id) and never
loses the call's result: if it still fails, a warning is logged and the result is returned. When the
call raises, the reservation is released (POST /api/v1/reservations/<id>/release, tried once; if that
fails too it expires by itself after RESERVATION_TTL_SECONDS, 10 minutes by default) and the
exception propagates. README.md beside this file and the server's docs/budgets.md have the details.
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from .usage import response_model, usage_from_response

logger = logging.getLogger("tokenspend")

ALLOW, NEEDS_APPROVAL, DENY = "allow", "needs_approval", "deny"

# The usage fields the ingest API reads, per SDK shape (the server's finops/services/usage_validation.py): OpenAI
# Chat Completions and Responses, Anthropic Messages. Nested *_details hold cached and reasoning tokens.

class TokenspendError(Exception):
    """Tokenspend answered with an error (bad input, key, scope): `status`, `code` and `message` from its body."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None, body: Any = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body


class TokenspendUnavailable(TokenspendError):
    """Tokenspend could not be reached, timed out, or answered 429 or 5xx."""


class PreflightDenied(Exception):
    """Preflight said deny: `reasons` explains why; `preflight` is the whole answer."""

    def __init__(self, preflight: dict):
        self.preflight = preflight
        self.reasons: list[str] = list(preflight.get("reasons") or [])
        super().__init__("Preflight denied the call: " + (" ".join(self.reasons) or "no reason given."))


class ApprovalRequired(Exception):
    """Preflight wants a person's approval first: have `approval_id` approved, then call again with it."""

    def __init__(self, preflight: dict):
        self.preflight = preflight
        self.approval_id: str | None = preflight.get("approval_id")
        self.approval_status: str | None = preflight.get("approval_status")
        self.reasons: list[str] = list(preflight.get("reasons") or [])
        super().__init__(
            f"Approval {self.approval_id} ({self.approval_status}) is needed: " + (" ".join(self.reasons) or "-")
        )


class ApprovalTimeout(TokenspendError):
    """`wait_for_approval` gave up: nobody decided the request in time (it stays pending)."""


class Tokenspend:
    """Talks to one Tokenspend server with one API key (scopes `preflight` and `ingest`).

    `timeout` bounds each HTTP request in seconds. Usage reports are tried `report_attempts` times,
    waiting `report_backoff` seconds after the first failure and twice as long after each next one.
    With `fail_open=True`, a Tokenspend that cannot be reached does not stop the call: it runs on the
    caller's own model and limits (a warning is logged); by default the call is not run and
    TokenspendUnavailable is raised.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 5.0,
        report_attempts: int = 4,
        report_backoff: float = 0.25,
        fail_open: bool = False,
    ):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.report_attempts = max(1, report_attempts)
        self.report_backoff = report_backoff
        self.fail_open = fail_open

    # --- the two endpoints ------------------------------------------------------------------------

    def preflight(
        self,
        *,
        model: str,
        workflow: str | None = None,
        environment: str = "prod",
        input_tokens: int | None = None,
        prompt: str | None = None,
        messages: list[dict] | None = None,
        max_output_tokens: int | None = None,
        approval_id: str | None = None,
        tenant: str | None = None,
    ) -> dict:
        """POST /api/v1/preflight once (never retried: each answer may hold a new reservation).

        Returns the decision as Tokenspend sent it; a deny or needs_approval is an answer, not an error.
        """
        inputs = {"input_tokens": input_tokens, "prompt": prompt, "messages": messages}
        given = {k: v for k, v in inputs.items() if v is not None}
        if len(given) != 1:
            raise ValueError("Pass exactly one of input_tokens, prompt or messages.")
        body: dict[str, Any] = {"model": model, "environment": environment, **given}
        optional = {
            "workflow": workflow,
            "max_output_tokens": max_output_tokens,
            "approval_id": str(approval_id) if approval_id else None,
            "tenant": tenant,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return self._post("/api/v1/preflight", body)[1]

    def report_usage(
        self,
        *,
        model: str,
        request_id: str | None = None,
        usage: Mapping | None = None,
        workflow: str | None = None,
        environment: str = "prod",
        reservation_id: str | None = None,
        tenant: str | None = None,
        tags: Mapping[str, str] | None = None,
        **token_fields: int,
    ) -> dict:
        """POST one record to /api/v1/usage, retried on connection errors, 429 and 5xx; returns its item.

        Tokens go either as `usage` (an SDK's usage dict; see usage_from_response) or as canonical
        keyword fields (input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
        reasoning_tokens). Raises TokenspendError if the record is rejected or conflicts with a stored
        one, TokenspendUnavailable when every attempt failed.
        """
        record: dict[str, Any] = {
            "request_id": request_id or str(uuid.uuid4()),
            "model": model,
            "environment": environment,
            **token_fields,
        }
        optional = {
            "usage": dict(usage) if usage is not None else None,
            "workflow": workflow,
            "reservation_id": reservation_id,
            "tenant": tenant,
            "tags": dict(tags) if tags else None,
        }
        record.update({k: v for k, v in optional.items() if v is not None})
        attempt = 0
        while True:
            attempt += 1
            try:
                _, body = self._post("/api/v1/usage", record)
                break
            except TokenspendUnavailable as exc:
                if attempt >= self.report_attempts:
                    raise
                wait = self.report_backoff * 2 ** (attempt - 1) * random.uniform(0.8, 1.2)
                logger.info("Usage report %s failed (%s); retry %d in %.2f s", record["request_id"], exc, attempt, wait)
                time.sleep(wait)
        item = (body.get("items") or [{}])[0]
        if item.get("status") not in ("accepted", "duplicate"):
            raise TokenspendError(
                f"Usage record {record['request_id']} was {item.get('status')}: {item.get('errors')}",
                status=200,
                code=item.get("status"),
                body=body,
            )
        return item

    def release(self, reservation_id: str, *, tenant: str | None = None) -> dict:
        """Give a reservation back when its call will not happen; tried once (it expires by itself anyway).

        Returns {"id", "status", "released"}; releasing a settled or expired reservation changes nothing.
        """
        query = f"?{urllib.parse.urlencode({'tenant': tenant})}" if tenant else ""
        path = f"/api/v1/reservations/{urllib.parse.quote(str(reservation_id))}/release{query}"
        return self._post(path, {})[1]

    def approval(self, approval_id: str, *, tenant: str | None = None) -> dict:
        """One approval request as Tokenspend has it: status (pending, approved, rejected, expired,
        consumed, cancelled), who decided, the comment, and what it covers."""
        query = f"?{urllib.parse.urlencode({'tenant': tenant})}" if tenant else ""
        return self._request("GET", f"/api/v1/approvals/{urllib.parse.quote(str(approval_id))}{query}")[1]

    def wait_for_approval(
        self, approval_id: str, *, timeout: float = 900.0, poll_every: float = 5.0, tenant: str | None = None
    ) -> dict:
        """Poll a request until a person decides it (or it expires or is cancelled) and return it; check
        `["status"] == "approved"`, then preflight again with `approval_id`. Raises ApprovalTimeout
        after `timeout` seconds still pending; a poll that cannot reach Tokenspend is retried."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                request = self.approval(approval_id, tenant=tenant)
                if request.get("status") != "pending":
                    return request
            except TokenspendUnavailable as exc:
                logger.warning("Polling approval %s: %s", approval_id, exc)
            if time.monotonic() + poll_every > deadline:
                raise ApprovalTimeout(f"Approval {approval_id} is still pending after {timeout:.0f} s.")
            time.sleep(poll_every)

    # --- the guarded call -------------------------------------------------------------------------

    def guarded_call(
        self,
        call: Callable[..., Any],
        *,
        workflow: str,
        model: str,
        messages: list[dict] | None = None,
        prompt: str | None = None,
        input_tokens: int | None = None,
        max_output_tokens: int | None = None,
        environment: str = "prod",
        tenant: str | None = None,
        request_id: str | None = None,
        approval_id: str | None = None,
        extract_usage: Callable[[Any], Mapping | None] = usage_from_response,
    ) -> Any:
        """Preflight, run `call` on the terms preflight gave, report its usage; return what `call` returned.

        `call` is invoked with three keyword arguments and must make the LLM request with them:

        - `model`: the model to call (preflight may have swapped in a cheaper one);
        - `max_output_tokens`: the output limit to send (preflight may have capped it);
        - `compress_to`: None, or the number of input tokens to shrink the context to first
          (drop old turns, summarise, trim retrieved documents).

        It returns the SDK's response: an object with `.usage` (OpenAI Chat Completions or Responses,
        Anthropic Messages) or a dict with "usage"; pass `extract_usage` for anything else.

        Raises PreflightDenied (with reasons) or ApprovalRequired (with approval_id and reasons) and
        then does not run `call`. If `call` raises, nothing is reported, the reservation is released
        (once; if that fails it expires by itself) and the exception propagates.
        """
        request_id = request_id or str(uuid.uuid4())
        try:
            decision = self.preflight(
                model=model,
                workflow=workflow,
                environment=environment,
                input_tokens=input_tokens,
                prompt=prompt,
                messages=messages,
                max_output_tokens=max_output_tokens,
                approval_id=approval_id,
                tenant=tenant,
            )
        except TokenspendUnavailable as exc:
            if not self.fail_open:
                raise
            logger.warning("Preflight unavailable (%s); fail_open: running %s unguarded", exc, model)
            decision = {"decision": ALLOW, "model": model, "max_output_tokens": max_output_tokens}
        if decision["decision"] == DENY:
            raise PreflightDenied(decision)
        if decision["decision"] == NEEDS_APPROVAL:
            raise ApprovalRequired(decision)

        effective_model = decision.get("model") or model
        try:
            result = call(
                model=effective_model,
                max_output_tokens=decision.get("max_output_tokens"),
                compress_to=decision.get("target_input_tokens") if decision.get("compress_context") else None,
            )
        except Exception:
            self._release_quietly(decision.get("reservation_id"), tenant)
            raise

        usage = extract_usage(result)
        if not usage:
            logger.warning(
                "Call %s returned no usage to report; reservation %s will expire unsettled",
                request_id,
                decision.get("reservation_id"),
            )
            return result
        try:
            self.report_usage(
                request_id=request_id,
                # The response names the exact snapshot that ran (priced by the catalog's patterns).
                model=response_model(result) or effective_model,
                usage=usage,
                workflow=workflow,
                environment=environment,
                reservation_id=decision.get("reservation_id"),
                tenant=tenant,
            )
        except TokenspendError as exc:
            # The call happened and its result is the caller's; the record can be replayed from the log.
            logger.warning(
                "Usage report %s failed, the result is returned anyway: %s; usage %s",
                request_id,
                exc,
                json.dumps(usage),
            )
        return result

    def _release_quietly(self, reservation_id: str | None, tenant: str | None) -> None:
        # The call's own exception is what the caller must see; a failed release only costs headroom
        # until the reservation expires.
        if not reservation_id:
            return
        try:
            self.release(reservation_id, tenant=tenant)
        except TokenspendError as exc:
            logger.warning("Could not release reservation %s (it will expire by itself): %s", reservation_id, exc)

    # --- HTTP ---------------------------------------------------------------------------------------

    def _post(self, path: str, body: dict) -> tuple[int, dict]:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={
                "Authorization": f"Bearer {self.api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "tokenspend-python/1",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            # Connection refused or reset, DNS, timeout; a half-read body (ValueError from json).
            raise TokenspendUnavailable(f"{path}: {exc}") from exc
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = {}
        error = parsed.get("error") if isinstance(parsed, dict) else None
        error = error if isinstance(error, dict) else {}
        message = f"{path}: HTTP {status} {error.get('code', '')}: {error.get('message') or payload[:200]!r}"
        cls = TokenspendUnavailable if status == 429 or status >= 500 else TokenspendError
        raise cls(message, status=status, code=error.get("code"), body=parsed)
