"""tokenspend_client (the client helper) against the running app (pytest-django's live server) with real API keys.

The live server answers from another thread, so these tests use the transactional database: rows
are committed and visible to it, and flushed after each test.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from budgets.models import ApprovalRequest, BudgetWindow, Control, ControlKind, Reservation
from budgets.services.controls import control_start
from finops.models import UsageRecord, Workflow
from finops.pricing import NANOS_PER_USD
from tests.net import unused_port
from tokenspend_client import (
    ApprovalRequired,
    ApprovalTimeout,
    PreflightDenied,
    Tokenspend,
    TokenspendError,
    TokenspendUnavailable,
    usage_from_response,
)

from .factories import BudgetFactory

MESSAGES = [{"role": "user", "content": "Summarise this ticket: the printer is on fire again."}]


def chat_completion(model="gpt-4o-2024-08-06", prompt=1200, completion=300, cached=1024, reasoning=0):
    """An object shaped like the OpenAI SDK's ChatCompletion (attributes, not a dict)."""
    return SimpleNamespace(
        id="chatcmpl-test",
        model=model,
        choices=[SimpleNamespace(message=SimpleNamespace(role="assistant", content="It is on fire."))],
        usage=SimpleNamespace(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            prompt_tokens_details=SimpleNamespace(cached_tokens=cached, audio_tokens=0),
            completion_tokens_details=SimpleNamespace(reasoning_tokens=reasoning, audio_tokens=0),
        ),
    )


class FakeLlm:
    """The `call` of guarded_call: records the terms it was called with, returns a canned response."""

    def __init__(self, response):
        self.response = response
        self.calls: list[dict] = []

    def __call__(self, *, model, max_output_tokens, compress_to):
        self.calls.append({"model": model, "max_output_tokens": max_output_tokens, "compress_to": compress_to})
        return self.response


@pytest.fixture
def client_a(transactional_db, live_server, api_a, catalog) -> Tokenspend:
    return Tokenspend(live_server.url, api_a.raw, timeout=10, report_backoff=0.01)


def test_allow_runs_the_call_reports_openai_usage_and_settles_the_reservation(client_a, tenant_a):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=10 * NANOS_PER_USD)
    response = chat_completion()
    llm = FakeLlm(response)

    result = client_a.guarded_call(
        llm,
        workflow="ticket-summary",
        model="gpt-4o",
        messages=MESSAGES,
        max_output_tokens=500,
        request_id="req-client-1",
    )

    assert result is response
    assert llm.calls == [{"model": "gpt-4o", "max_output_tokens": 500, "compress_to": None}]
    record = UsageRecord.objects.get(tenant=tenant_a, request_id="req-client-1")
    # prompt_tokens includes the cached ones; the ingest splits them out.
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens) == (176, 1024, 300)
    assert record.model_name == "gpt-4o-2024-08-06"
    reservation = Reservation.objects.get(pk=record.reservation_id)
    assert reservation.status == Reservation.Status.SETTLED
    assert reservation.usage_record_id == record.pk
    window = BudgetWindow.objects.get(budget=budget)
    assert window.reserved == 0
    # 176 x $2.50/M + 1024 x $1.25/M + 300 x $10/M
    assert window.spent == record.cost_nanos == 440_000 + 1_280_000 + 3_000_000


def test_controls_reach_the_call_as_model_output_cap_and_input_target(client_a, tenant_a):
    control_start(
        kind=ControlKind.CAP_OUTPUT_TOKENS,
        tenant=tenant_a,
        params={"max_output_tokens": 256},
        source=Control.Source.MANUAL,
        reason="soft limit reached",
    )
    control_start(
        kind=ControlKind.COMPRESS_CONTEXT,
        tenant=tenant_a,
        params={"ratio": "0.5"},
        source=Control.Source.MANUAL,
        reason="hard limit near",
    )
    llm = FakeLlm(chat_completion(prompt=500, completion=200, cached=0))

    client_a.guarded_call(llm, workflow="ticket-summary", model="gpt-4o", input_tokens=1000, max_output_tokens=800)

    assert llm.calls == [{"model": "gpt-4o", "max_output_tokens": 256, "compress_to": 500}]
    assert Reservation.objects.get(tenant=tenant_a).status == Reservation.Status.SETTLED


def test_deny_raises_with_the_reasons_and_never_calls(client_a, tenant_a):
    BudgetFactory(tenant=tenant_a, name="Tiny", hard_limit=1000)  # one micro-dollar
    llm = FakeLlm(chat_completion())

    with pytest.raises(PreflightDenied) as denied:
        client_a.guarded_call(llm, workflow="ticket-summary", model="gpt-4o", input_tokens=1000, max_output_tokens=500)

    assert llm.calls == []
    assert any("Hard limit" in r and "'Tiny'" in r for r in denied.value.reasons)
    assert denied.value.preflight["decision"] == "deny"
    assert "Hard limit" in str(denied.value)
    assert not Reservation.objects.exists()
    assert not UsageRecord.objects.exists()


def test_needs_approval_raises_with_the_approval_id(client_a, tenant_a):
    control_start(
        kind=ControlKind.REQUIRE_APPROVAL,
        tenant=tenant_a,
        params={},
        source=Control.Source.MANUAL,
        reason="every run needs a go-ahead",
    )
    llm = FakeLlm(chat_completion())

    with pytest.raises(ApprovalRequired) as pending:
        client_a.guarded_call(llm, workflow="ticket-summary", model="gpt-4o", input_tokens=1000, max_output_tokens=500)

    assert llm.calls == []
    approval = ApprovalRequest.objects.get(tenant=tenant_a)
    assert pending.value.approval_id == str(approval.pk)
    assert pending.value.approval_status == "pending"
    assert any("every run needs a go-ahead" in r for r in pending.value.reasons)


def test_wait_for_approval_returns_the_decision_and_the_approved_call_runs(client_a, tenant_a):
    import threading

    from budgets.services.approvals import approval_decide
    from tenants.scope import Actor

    from ..factories import UserFactory

    control_start(
        kind=ControlKind.REQUIRE_APPROVAL, tenant=tenant_a, params={}, source=Control.Source.MANUAL, reason="go-ahead"
    )
    llm = FakeLlm(chat_completion())
    with pytest.raises(ApprovalRequired) as pending:
        client_a.guarded_call(llm, workflow="ticket-summary", model="gpt-4o", input_tokens=1000, max_output_tokens=500)
    approval = ApprovalRequest.objects.get(pk=pending.value.approval_id)
    with pytest.raises(ApprovalTimeout):
        client_a.wait_for_approval(approval.pk, timeout=0.3, poll_every=0.1)
    approver = UserFactory(username="approver-on-call", is_staff=True)
    later = threading.Timer(0.3, lambda: approval_decide(approval=approval, approve=True, actor=Actor(user=approver)))
    later.start()
    decided = client_a.wait_for_approval(approval.pk, timeout=30, poll_every=0.1)
    later.join()
    assert decided["status"] == "approved" and decided["decided_by"] == "approver-on-call"
    client_a.guarded_call(
        llm,
        workflow="ticket-summary",
        model="gpt-4o",
        input_tokens=1000,
        max_output_tokens=500,
        approval_id=approval.pk,
    )
    assert len(llm.calls) == 1
    approval.refresh_from_db()
    assert approval.status == "consumed"


def test_responses_api_dict_shape_is_reported(client_a, tenant_a):
    response = {
        "id": "resp_1",
        "model": "gpt-4o",
        "usage": {
            "input_tokens": 900,
            "input_tokens_details": {"cached_tokens": 400},
            "output_tokens": 120,
            "output_tokens_details": {"reasoning_tokens": 20},
            "total_tokens": 1020,
        },
    }

    result = client_a.guarded_call(
        FakeLlm(response), workflow="doc-qa", model="gpt-4o", prompt="What is our refund policy?", request_id="resp-1"
    )

    assert result is response
    record = UsageRecord.objects.get(request_id="resp-1")
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens, record.reasoning_tokens) == (
        500,
        400,
        100,
        20,
    )
    assert record.workflow == Workflow.objects.get(slug="doc-qa")


def test_report_is_retried_after_connection_errors(client_a, tenant_a, monkeypatch):
    real_post, failures = Tokenspend._post, []

    def flaky(self, path, body):
        if path == "/api/v1/usage" and len(failures) < 2:
            failures.append(path)
            raise TokenspendUnavailable("connection reset by peer")
        return real_post(self, path, body)

    monkeypatch.setattr(Tokenspend, "_post", flaky)

    client_a.guarded_call(
        FakeLlm(chat_completion()), workflow="ticket-summary", model="gpt-4o", input_tokens=1200, request_id="retried"
    )

    assert len(failures) == 2
    assert UsageRecord.objects.filter(request_id="retried").count() == 1
    assert Reservation.objects.get(tenant=tenant_a).status == Reservation.Status.SETTLED


def test_a_failing_report_does_not_lose_the_result(transactional_db, live_server, catalog, make_key, tenant_a, caplog):
    # A key that may preflight but not ingest: the report answers 403 (not retried), the call happened.
    key = make_key(tenant_a, scopes="preflight")
    client = Tokenspend(live_server.url, key.raw, timeout=10, report_backoff=0.01)
    response = chat_completion()

    with caplog.at_level(logging.WARNING, logger="tokenspend"):
        result = client.guarded_call(
            FakeLlm(response), workflow="ticket-summary", model="gpt-4o", input_tokens=1200, request_id="lost-1"
        )

    assert result is response
    assert "Usage report lost-1 failed" in caplog.text and "ingest" in caplog.text
    assert not UsageRecord.objects.exists()
    assert Reservation.objects.get(tenant=tenant_a).status == Reservation.Status.HELD  # expires by itself


def test_an_unreachable_ingest_is_retried_then_the_result_returned(client_a, tenant_a, monkeypatch, caplog):
    attempts = []
    real_post = Tokenspend._post

    def ingest_down(self, path, body):
        if path == "/api/v1/usage":
            attempts.append(body["request_id"])
            raise TokenspendUnavailable("HTTP 503 database_unavailable", status=503)
        return real_post(self, path, body)

    monkeypatch.setattr(Tokenspend, "_post", ingest_down)
    response = chat_completion()

    with caplog.at_level(logging.WARNING, logger="tokenspend"):
        result = client_a.guarded_call(
            FakeLlm(response), workflow="ticket-summary", model="gpt-4o", input_tokens=1200, request_id="down-1"
        )

    assert result is response
    assert attempts == ["down-1"] * client_a.report_attempts  # the same request_id each time: idempotent
    assert "Usage report down-1 failed" in caplog.text


def test_a_call_that_raises_reports_nothing_and_releases_the_reservation(client_a, tenant_a):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=10 * NANOS_PER_USD)

    def broken(**terms):
        raise TimeoutError("the provider timed out")

    with pytest.raises(TimeoutError, match="timed out"):
        client_a.guarded_call(broken, workflow="ticket-summary", model="gpt-4o", input_tokens=100)

    assert not UsageRecord.objects.exists()
    assert Reservation.objects.get(tenant=tenant_a).status == Reservation.Status.RELEASED
    assert BudgetWindow.objects.get(budget=budget).reserved == 0


def test_a_failed_release_still_raises_the_calls_own_error(transactional_db, live_server, catalog, make_key, tenant_a):
    # A bad key cannot release; and when releasing fails, the caller still sees the provider's error.
    client = Tokenspend(live_server.url, make_key(tenant_a).raw, timeout=10)
    other = Tokenspend(live_server.url, "tsk_nope_nope", timeout=10)
    decision = client.preflight(model="gpt-4o", input_tokens=100)
    with pytest.raises(TokenspendError) as error:
        other.release(decision["reservation_id"])
    assert error.value.status == 401

    def broken(**terms):
        raise ConnectionResetError("provider hung up")

    def release_down(reservation_id, *, tenant=None):
        raise TokenspendUnavailable("down")

    client.release = release_down
    with pytest.raises(ConnectionResetError):
        client.guarded_call(broken, workflow="w", model="gpt-4o", input_tokens=100)
    assert Reservation.objects.filter(status=Reservation.Status.HELD).count() == 2  # they expire by themselves


def test_platform_key_names_the_tenant(transactional_db, live_server, catalog, make_key, tenant_a, tenant_b):
    key = make_key(None, name="gateway")
    client = Tokenspend(live_server.url, key.raw, timeout=10)

    client.guarded_call(
        FakeLlm(chat_completion()),
        workflow="ticket-summary",
        model="gpt-4o",
        input_tokens=1200,
        tenant="globex",
        request_id="gw-1",
    )

    record = UsageRecord.objects.get(request_id="gw-1")
    assert record.tenant == tenant_b
    assert Reservation.objects.get(pk=record.reservation_id).tenant == tenant_b


def test_bad_input_is_an_error_not_a_decision(client_a):
    with pytest.raises(TokenspendError) as error:
        client_a.preflight(model="gpt-4o", input_tokens=-1)
    assert error.value.status == 400 and error.value.code == "invalid"
    with pytest.raises(ValueError, match="exactly one"):
        client_a.preflight(model="gpt-4o", input_tokens=10, prompt="hi")


def test_unreachable_preflight_fails_closed_by_default_and_open_when_asked(caplog):
    url = f"http://127.0.0.1:{unused_port()}"
    llm = FakeLlm(chat_completion())

    with pytest.raises(TokenspendUnavailable):
        Tokenspend(url, "tsk_x_y", timeout=2).guarded_call(llm, workflow="w", model="gpt-4o", input_tokens=10)
    assert llm.calls == []

    open_client = Tokenspend(url, "tsk_x_y", timeout=2, report_attempts=2, report_backoff=0.01, fail_open=True)
    with caplog.at_level(logging.WARNING, logger="tokenspend"):
        result = open_client.guarded_call(llm, workflow="w", model="gpt-4o", input_tokens=10, max_output_tokens=99)
    assert result is llm.response
    assert llm.calls == [{"model": "gpt-4o", "max_output_tokens": 99, "compress_to": None}]
    assert "fail_open" in caplog.text and "Usage report" in caplog.text


def test_usage_from_response_shapes():
    assert usage_from_response(chat_completion(prompt=10, completion=5, cached=2, reasoning=1)) == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": 1},
    }
    # OpenAI SDK objects leave details None when the provider sends none; Anthropic has no details.
    anthropic = SimpleNamespace(
        usage=SimpleNamespace(
            input_tokens=7,
            output_tokens=3,
            cache_read_input_tokens=100,
            cache_creation_input_tokens=0,
            prompt_tokens_details=None,
        )
    )
    assert usage_from_response(anthropic) == {
        "input_tokens": 7,
        "output_tokens": 3,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
    }
    assert usage_from_response({"choices": []}) is None
    assert usage_from_response(SimpleNamespace(usage=None)) is None
