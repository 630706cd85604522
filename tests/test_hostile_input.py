"""Attacks on the API's input that once answered 500 (issue 13): each answers 400 in the JSON error shape now,
and what is valid beside them is still stored."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from budgets.models import Budget
from finops.models import UsageRecord

NESTED = "[" * 10_000 + "]" * 10_000
LONE_SURROGATE = '{"name": "x", "metric": "\\ud800", "hard_limit": "5"}'

JSON_ENDPOINTS = [
    "/api/v1/usage",
    "/api/v1/preflight",
    "/api/v1/tokens/count",
    "/api/v1/budgets",
    "/api/v1/controls",
    "/api/v1/notification-channels",
    "/api/v1/approvals",
    "/api/v1/workflows/support-bot/policy",  # PUT
    "/api/v1/workflows/support-bot/prompt-versions",
]
_PUT = {"/api/v1/workflows/support-bot/policy"}


def _raw(client, path: str, body: str | bytes, method: str = ""):
    method = method or ("put" if path in _PUT else "post")
    return getattr(client, method)(path, data=body, content_type="application/json")


def _assert_json_error(response, status: int = 400) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] and error["message"]
    return error


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
def test_ten_thousand_levels_of_nesting_are_400_on_every_endpoint(api_a, catalog, path):
    _assert_json_error(_raw(api_a.client, path, NESTED))
    _assert_json_error(_raw(api_a.client, path, '{"a":' * 10_000 + "1" + "}" * 10_000))


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("body", ['{"x": NaN}', '{"x": Infinity}', '{"x": -Infinity}', '{"x": 1e400}'])
def test_nan_and_infinity_are_400_on_every_endpoint(api_a, catalog, path, body):
    _assert_json_error(_raw(api_a.client, path, body))


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
def test_lone_surrogates_are_400_on_every_endpoint(api_a, catalog, path):
    _assert_json_error(_raw(api_a.client, path, LONE_SURROGATE))
    _assert_json_error(_raw(api_a.client, path, b'{"name": "\xff\xfe"}'))  # not UTF-8 either


def test_a_patch_with_deep_nesting_is_400_too(api_a, tenant_a):
    budget = api_a.client.post("/api/v1/budgets", {"name": "b", "hard_limit": "5"}, format="json").json()
    _assert_json_error(_raw(api_a.client, f"/api/v1/budgets/{budget['id']}", NESTED, method="patch"))


def test_the_exception_handler_answers_recursion_400_whatever_parsed_it(api_a):
    from tenants.errors import api_exception_handler

    response = api_exception_handler(RecursionError("maximum recursion depth exceeded"), {})
    assert response is not None and response.status_code == 400
    assert response.data["error"]["code"] == "too_deeply_nested"


# --- NUL bytes in usage records: rejected one by one, the rest of the batch stored ------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"request_id": "nul\x00id"},
        {"model": "gpt-4o\x00"},
        {"tags": {"team": "a\x00b"}},
        {"tags": {"te\x00am": "a"}},
        {"tenant": "acme\x00"},
    ],
    ids=["request_id", "model", "tag-value", "tag-key", "tenant"],
)
def test_a_nul_byte_rejects_its_record_and_the_batch_is_stored(api_a, catalog, bad):
    good = [{"request_id": f"good-{i}", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 1} for i in range(3)]
    hostile = {"request_id": "bad-1", "model": "gpt-4o", "input_tokens": 10, **bad}
    body = {"records": [good[0], hostile, good[1], good[2]]}
    for _ in range(2):  # a retry of the same batch changes nothing and still does not fail
        response = api_a.client.post("/api/v1/usage", body, format="json")
        assert response.status_code == 207, response.content
        items = response.json()["items"]
        assert items[1]["status"] == "rejected"
        assert "NUL" in json.dumps(items[1]) or "slug" in json.dumps(items[1])
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == ["good-0", "good-1", "good-2"]


def test_a_one_megabyte_tag_or_workflow_is_rejected_alone(api_a, catalog):
    big = "x" * 1_000_000
    body = {
        "records": [
            {"request_id": "ok", "model": "gpt-4o", "input_tokens": 1},
            {"request_id": "big-tag", "model": "gpt-4o", "input_tokens": 1, "tags": {"team": big}},
            {"request_id": "big-key", "model": "gpt-4o", "input_tokens": 1, "tags": {big: "a"}},
            {"request_id": "big-workflow", "model": "gpt-4o", "input_tokens": 1, "workflow": big},
            {"request_id": big, "model": "gpt-4o", "input_tokens": 1},
            {"request_id": "big-model", "model": big, "input_tokens": 1},
        ]
    }
    response = api_a.client.post("/api/v1/usage", body, format="json")
    assert response.status_code == 207
    statuses = [item["status"] for item in response.json()["items"]]
    assert statuses == ["accepted"] + ["rejected"] * 5
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["ok"]


# --- Budgets: out-of-range limits and choices ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "limit"),
    [
        ("cost", "1e30"),
        ("cost", "1E+999999"),
        ("cost", "sNaN"),
        ("cost", "NaN"),
        ("cost", "-Infinity"),
        ("cost", str(10**30)),
        ("cost", 10**15),
        ("tokens", 2**63),
        ("tokens", str(2**63)),
        ("tokens", "9" * 40),
        ("tokens", "1e30"),
    ],
)
def test_out_of_range_limits_are_400_with_a_reason(api_a, tenant_a, metric, limit):
    for field in ("soft_limit", "hard_limit"):
        response = api_a.client.post("/api/v1/budgets", {"name": "big", "metric": metric, field: limit}, format="json")
        error = _assert_json_error(response)
        assert field in error["details"], error
    assert not Budget.objects.exists()


def test_the_largest_limits_that_fit_are_accepted(api_a, tenant_a):
    tokens = api_a.client.post(
        "/api/v1/budgets", {"name": "t", "metric": "tokens", "hard_limit": 2**63 - 1}, format="json"
    )
    assert tokens.status_code == 201, tokens.content
    cost = api_a.client.post("/api/v1/budgets", {"name": "c", "hard_limit": "9000000000.00"}, format="json")
    assert cost.status_code == 201, cost.content


def test_a_budget_limit_raised_out_of_range_is_400(api_a, tenant_a):
    budget = api_a.client.post("/api/v1/budgets", {"name": "b", "hard_limit": "5"}, format="json").json()
    response = api_a.client.patch(f"/api/v1/budgets/{budget['id']}", {"hard_limit": "1e30"}, format="json")
    _assert_json_error(response)
    increase = api_a.client.post(
        f"/api/v1/budgets/{budget['id']}/increase", {"hard_limit": "sNaN", "justification": "x"}, format="json"
    )
    _assert_json_error(increase)


@pytest.mark.parametrize("field", ["metric", "period", "hard_action", "environment"])
def test_hostile_choices_are_400(api_a, tenant_a, field):
    for value in ["nope\x00", "<script>alert(1)</script>", "x" * 100_000, 7, None, ["month"]]:
        response = api_a.client.post("/api/v1/budgets", {"name": "b", "hard_limit": "5", field: value}, format="json")
        assert response.status_code == 400, (field, value, response.status_code)


def test_a_bad_policy_parameter_is_refused_at_write_time(api_a, tenant_a):
    policy = [{"at": "soft", "percent": 50, "kind": "cap_output_tokens", "params": {"max_output_tokens": "abc"}}]
    response = api_a.client.post(
        "/api/v1/budgets", {"name": "b", "soft_limit": "1", "hard_limit": "5", "policy": policy}, format="json"
    )
    error = _assert_json_error(response)
    assert "max_output_tokens" in json.dumps(error)


def test_a_stored_bad_policy_parameter_never_makes_preflight_500(api_a, tenant_a, catalog):
    """A row written before validation existed (or by hand) must not take the tenant's preflight down."""
    from datetime import timedelta

    from django.utils import timezone

    from budgets.models import Control

    created = api_a.client.post(
        "/api/v1/budgets", {"name": "b", "soft_limit": "0.000000001", "hard_limit": "500"}, format="json"
    ).json()
    budget = Budget.objects.get(pk=created["id"])
    Budget.objects.filter(pk=budget.pk).update(
        policy=[{"at": "soft", "percent": 1, "kind": "cap_output_tokens", "params": {"max_output_tokens": "abc"}}]
    )
    for kind, params in [
        ("cap_output_tokens", {"max_output_tokens": "abc"}),
        ("compress_context", {"ratio": "sNaN", "target_input_tokens": [1]}),
        ("downgrade_tier", {"steps": "many"}),
        ("require_approval", {"above_usd": {"x": 1}}),
    ]:
        Control.objects.create(
            tenant=tenant_a,
            budget=budget,
            kind=kind,
            params=params,
            reason="hand-written bad row",
            starts_at=timezone.now() - timedelta(minutes=1),
        )
    from budgets.services import preflight as preflight_service

    if hasattr(preflight_service, "preflight_state_reset"):
        preflight_service.preflight_state_reset()
    response = api_a.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 10}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["decision"]


# --- Every JSON endpoint: the error shape ---------------------------------------------------------------


def test_wrong_types_everywhere_answer_the_json_error_shape(api_a, catalog):
    for path in JSON_ENDPOINTS:
        for body in ["[]", '"text"', "1", "null", '{"records": 5}', '{"model": {"$gt": ""}}']:
            response = _raw(api_a.client, path, body)
            assert response.status_code < 500, (path, body, response.status_code, response.content[:200])
            if response.status_code >= 400:
                assert "error" in response.json(), (path, body)


def test_a_method_the_endpoint_does_not_have_is_405_whatever_the_body(api_a):
    for body in (NESTED, '{"x": NaN}', "{}"):
        response = _raw(api_a.client, "/api/v1/alerts", body, method="post")
        assert _assert_json_error(response, 405)["code"] == "method_not_allowed"


def test_urls_in_this_file_are_routes():
    assert reverse("api-usage") == "/api/v1/usage"
    assert reverse("api-notification-channels") == "/api/v1/notification-channels"


def test_a_value_the_database_refuses_answers_400_not_500(db):
    from django.db import DataError, connection

    from tenants.errors import api_exception_handler

    with pytest.raises(DataError) as caught, connection.cursor() as cursor:
        cursor.execute("SELECT %s::text", ["a\x00b"])
    response = api_exception_handler(caught.value, {})
    assert response is not None and response.status_code == 400
    assert response.data["error"]["code"] == "invalid_value"


@pytest.mark.parametrize("field", ["environment", "workflow", "service_tier", "channel", "prompt_version"])
@pytest.mark.parametrize("value", [["prod"], {"a": 1}, 7, True])
def test_a_wrong_typed_field_rejects_its_record_alone(api_a, catalog, field, value):
    """Found by Schemathesis after the merge: a list as `environment` raised TypeError (unhashable) and
    answered 500, losing the whole batch."""
    good = {"request_id": "good-1", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 1}
    hostile = {"request_id": "bad-1", "model": "gpt-4o", "input_tokens": 10, field: value}
    response = api_a.client.post("/api/v1/usage", {"records": [good, hostile]}, format="json")
    assert response.status_code == 207, response.content
    assert [item["status"] for item in response.json()["items"]] == ["accepted", "rejected"]
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["good-1"]
