"""Strict API input (tenants/strict_input.py): what the schema calls invalid is a 400 in the JSON error
shape, never silently read as something else (a repeated or empty query parameter, 0/1 for a boolean,
a number for a text field or a UUID, a page size that is not one)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def _assert_400(response, field: str) -> None:
    assert response.status_code == 400, (response.status_code, response.content[:300])
    error = response.json()["error"]
    assert error["code"] == "invalid" and error["message"]
    assert field in str(error.get("details")), error


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/usage?page_size=5&page_size=6",
        "/api/v1/alerts?page_size=5&page_size=6",
        "/api/v1/budgets?active=true&active=false",
        "/api/v1/controls?active=true&active=true",
        "/api/v1/spend?start=2026-01-01&start=2026-02-01",
        "/api/v1/spend.csv?granularity=day&granularity=hour",
        "/api/v1/exports/focus.csv?workflow=a&workflow=b",
    ],
)
def test_a_query_parameter_given_twice_is_400(api_a, path):
    _assert_400(api_a.client.get(path), path.split("?")[1].split("=")[0])


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/spend?start=",
        "/api/v1/spend.csv?end=",
        "/api/v1/exports/focus.csv?workflow=",
        "/api/v1/usage?page_size=",
        "/api/v1/budgets?tenant=",
    ],
)
def test_an_empty_query_parameter_is_400(api_a, path):
    _assert_400(api_a.client.get(path), path.split("?")[1].rstrip("="))


def test_an_empty_tenant_on_a_write_is_400_not_platform_wide(api_a):
    response = api_a.client.post(
        "/api/v1/notification-channels?tenant=",
        {"kind": "webhook", "target": "https://hooks.example.com/t", "secret": "s" * 32},
        format="json",
    )
    _assert_400(response, "tenant")


def test_list_filters_the_schema_declares_as_lists_may_repeat(api_a, catalog):
    response = api_a.client.get("/api/v1/spend?model=gpt-4o&model=o3&group_by=model")
    assert response.status_code == 200, response.content[:300]


@pytest.mark.parametrize("page_size", ["abc", "0", "-1", "1.5", "1001", "null"])
def test_a_page_size_that_is_not_one_is_400(api_a, page_size):
    _assert_400(api_a.client.get(f"/api/v1/usage?page_size={page_size}"), "page_size")


def test_a_valid_page_size_pages(api_a, catalog):
    for i in range(3):
        api_a.client.post("/api/v1/usage", {"request_id": f"r{i}", "model": "gpt-4o", "input_tokens": 1}, format="json")
    page = api_a.client.get("/api/v1/usage?page_size=2").json()
    assert len(page["results"]) == 2 and page["next"]
    assert api_a.client.get("/api/v1/alerts?page_size=500").status_code == 200
    _assert_400(api_a.client.get("/api/v1/alerts?page_size=501"), "page_size")


@pytest.mark.parametrize("path", ["/api/v1/budgets", "/api/v1/controls"])
@pytest.mark.parametrize("value", ["1", "0", "yes", "True", "null"])
def test_active_takes_true_or_false_only(api_a, path, value):
    _assert_400(api_a.client.get(f"{path}?active={value}"), "active")


def test_active_false_lists_only_retired_budgets(api_a):
    live = api_a.client.post("/api/v1/budgets", {"name": "live", "hard_limit": "5.00"}, format="json")
    retired = api_a.client.post(
        "/api/v1/budgets", {"name": "retired", "hard_limit": "5.00", "is_active": False}, format="json"
    )
    assert live.status_code == retired.status_code == 201, retired.content
    names = [b["name"] for b in api_a.client.get("/api/v1/budgets?active=false").json()["results"]]
    assert names == ["retired"]
    assert [b["name"] for b in api_a.client.get("/api/v1/budgets?active=true").json()["results"]] == ["live"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("is_active", 1),
        ("is_active", "true"),
        ("tenant", 0),
        ("name", 5),
        ("workflow", 7),
        ("unreserved_alert_pct", 5),
    ],
)
def test_a_budget_body_with_a_wrong_json_type_is_400(api_a, field, value):
    body = {"name": "b", "hard_limit": "5.00", field: value}
    _assert_400(api_a.client.post("/api/v1/budgets", body, format="json"), field)


def test_a_budget_body_with_the_right_json_types_is_created(api_a):
    body = {"name": "b", "hard_limit": "5.00", "is_active": True, "unreserved_alert_pct": "7.50"}
    response = api_a.client.post("/api/v1/budgets", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["unreserved_alert_pct"] == "7.50" and response.json()["is_active"] is True


@pytest.mark.parametrize(
    ("field", "value"),
    [("may_write_cache", 0), ("may_write_cache", "yes"), ("approval_id", 0), ("workflow", 12), ("model", 4)],
)
def test_a_preflight_with_a_wrong_json_type_is_400(api_a, catalog, field, value):
    body = {"model": "gpt-4o", "input_tokens": 10, field: value}
    _assert_400(api_a.client.post("/api/v1/preflight", body, format="json"), field)


def test_a_preflight_with_json_booleans_is_decided(api_a, catalog):
    body = {"model": "gpt-4o", "input_tokens": 10, "may_write_cache": False}
    response = api_a.client.post("/api/v1/preflight", body, format="json")
    assert response.status_code == 200 and response.json()["decision"] == "allow"
