"""The hourly anomaly job through its services: opening with evidence, controls by policy, clearing with
hysteresis, feedback, and running twice. Deterministic hourly rollups, no randomness."""

from datetime import UTC, datetime, timedelta

import pytest

from budgets.models import Alert, Anomaly, Control, ControlKind
from budgets.services.anomalies import _excluded_hours, anomalies_detect, anomaly_feedback
from finops.models import UsageRollup, Workflow
from tenants.errors import ApplicationError
from tenants.models import AuditEvent
from tenants.scope import Actor
from tests.factories import UserFactory, WorkflowFactory

NOW = datetime(2026, 3, 12, 10, 4, tzinfo=UTC)  # a Thursday, 4 minutes after 10:00 closed... of 09:00
LAST = datetime(2026, 3, 12, 9, tzinfo=UTC)  # the hour the job scores at NOW
DAYS = 13


def put_hours(tenant, workflow, model, hours, *, calls, tokens_per_call=1000, cost_per_call_nanos=2_000_000):
    """Hourly (and daily) rollup rows: `calls` is a function of the hour index and the hour."""
    rows = []
    for i, at in enumerate(hours):
        n = calls(i, at) if callable(calls) else calls
        if not n:
            continue
        tpc = tokens_per_call(at) if callable(tokens_per_call) else tokens_per_call
        rows.append(
            UsageRollup(
                grain=UsageRollup.Grain.HOUR,
                bucket_start=at,
                tenant=tenant,
                workflow=workflow,
                model=model,
                environment="prod",
                calls=n,
                input_tokens=n * tpc * 3 // 4,
                output_tokens=n * tpc // 4,
                cost_nanos=n * cost_per_call_nanos,
            )
        )
    days = {}
    for r in rows:
        day = r.bucket_start.replace(hour=0)
        d = days.setdefault(
            day,
            UsageRollup(
                grain=UsageRollup.Grain.DAY,
                bucket_start=day,
                tenant=tenant,
                workflow=workflow,
                model=model,
                environment="prod",
            ),
        )
        d.calls += r.calls
    UsageRollup.objects.bulk_create(rows + list(days.values()))


def history(end=LAST, days=DAYS):
    start = end - timedelta(days=days)
    return [start + timedelta(hours=i) for i in range(int((end - start).total_seconds() // 3600))]


def steady(i, at):
    return 100 + (i * 7) % 9  # 100..108: a little deterministic noise


@pytest.fixture
def wf(db):
    return WorkflowFactory(slug="support-bot", name="Support bot", priority=Workflow.Priority.NORMAL)


@pytest.fixture
def normal_history(tenant_a, tenant_b, catalog, wf):
    put_hours(tenant_a, wf, catalog["gpt-4o"], history(), calls=steady)
    # a few premium calls every day: o3 is known, and the usual tier stays standard
    put_hours(tenant_a, wf, catalog["o3"], history(), calls=lambda i, at: 3 if at.hour == 12 else 0)
    return wf


def test_runaway_loop_opens_an_alert_with_evidence_and_requires_approval(tenant_a, catalog, normal_history):
    wf = normal_history
    put_hours(tenant_a, wf, catalog["gpt-4o"], [LAST - timedelta(hours=1), LAST], calls=600)
    result = anomalies_detect(now=NOW)
    assert result.hour == LAST and result.opened >= 1
    anomaly = Anomaly.objects.get(tenant=tenant_a, kind=Anomaly.Kind.RUNAWAY_LOOP)
    assert anomaly.status == Anomaly.Status.OPEN and anomaly.workflow == wf and anomaly.metric == "calls"
    assert anomaly.opened_at == LAST - timedelta(hours=1)  # the episode's first hour
    assert anomaly.observed == 600
    assert 100 <= anomaly.expected <= 108 and anomaly.high < 600 and anomaly.score > 5
    assert anomaly.evidence["unit"] == "calls/h" and anomaly.evidence["series"][-1][1] == 600
    alert = anomaly.alert
    assert alert.kind == Alert.Kind.ANOMALY and alert.tenant == tenant_a
    assert "600 calls/h" in alert.message and "expected" in alert.message and "require_approval" in alert.message
    control = anomaly.controls.get()
    assert control.source == Control.Source.ANOMALY and control.kind == ControlKind.REQUIRE_APPROVAL
    assert control.tenant == tenant_a and control.workflow == wf and control.ends_at is None
    assert "critical" not in control.priorities
    assert AuditEvent.objects.filter(action="anomaly.open", tenant=tenant_a).count() == 1
    assert AuditEvent.objects.filter(action="control.start", tenant=tenant_a).count() == 1

    # the job runs again in the same hour: nothing new
    again = anomalies_detect(now=NOW + timedelta(minutes=15))
    assert again.opened == 0
    assert Anomaly.objects.filter(tenant=tenant_a).count() == 1 and Control.objects.count() == 1


def test_it_clears_with_hysteresis_and_ends_its_controls(tenant_a, catalog, normal_history):
    wf = normal_history
    put_hours(tenant_a, wf, catalog["gpt-4o"], [LAST], calls=600)
    anomalies_detect(now=NOW)
    anomaly = Anomaly.objects.get(kind=Anomaly.Kind.RUNAWAY_LOOP)
    control = anomaly.controls.get()
    # first hour back in range: still open (hysteresis)
    put_hours(tenant_a, wf, catalog["gpt-4o"], [LAST + timedelta(hours=1)], calls=104)
    anomalies_detect(now=NOW + timedelta(hours=1))
    anomaly.refresh_from_db()
    assert anomaly.status == Anomaly.Status.OPEN and anomaly.last_hour == LAST + timedelta(hours=1)
    # second hour in range: cleared, control ended, both audited
    put_hours(tenant_a, wf, catalog["gpt-4o"], [LAST + timedelta(hours=2)], calls=104)
    result = anomalies_detect(now=NOW + timedelta(hours=2))
    assert result.cleared == 1
    anomaly.refresh_from_db()
    control.refresh_from_db()
    assert anomaly.status == Anomaly.Status.CLEARED and anomaly.cleared_at == NOW + timedelta(hours=2)
    assert control.ends_at == NOW + timedelta(hours=2) and "cleared" in control.ended_reason
    assert AuditEvent.objects.filter(action="anomaly.clear").count() == 1
    assert AuditEvent.objects.filter(action="control.end").count() == 1


def test_prompt_bloat_caps_output_tokens(tenant_a, catalog, normal_history):
    wf = normal_history
    put_hours(tenant_a, wf, catalog["gpt-4o"], [LAST], calls=104, tokens_per_call=2600)
    anomalies_detect(now=NOW)
    anomaly = Anomaly.objects.get(kind=Anomaly.Kind.PROMPT_BLOAT)
    assert anomaly.metric == "tokens_per_call" and anomaly.observed == pytest.approx(2600, rel=0.01)
    control = anomaly.controls.get()
    assert control.kind == ControlKind.CAP_OUTPUT_TOKENS and control.params == {"max_output_tokens": 1024}
    # the cost rose too, but a spend spike explained by bloat is not opened separately
    assert not Anomaly.objects.filter(kind=Anomaly.Kind.SPIKE).exists()


def test_tokens_per_call_above_the_envelope_p95_is_prompt_bloat(tenant_a, catalog, normal_history):
    wf = normal_history
    Workflow.objects.filter(pk=wf.pk).update(expected_input_tokens_p95=500, expected_output_tokens_p95=200)
    put_hours(tenant_a, wf, catalog["gpt-4o"], [LAST], calls=104)  # 1000 tokens per call, as always
    anomalies_detect(now=NOW)
    assert Anomaly.objects.get(kind=Anomaly.Kind.PROMPT_BLOAT).observed == pytest.approx(1000)


def test_model_mix_moving_to_a_pricier_tier_downgrades(tenant_a, catalog, normal_history):
    wf = normal_history
    put_hours(tenant_a, wf, catalog["gpt-4o"], [LAST], calls=50)
    put_hours(tenant_a, wf, catalog["o3"], [LAST], calls=60)
    anomalies_detect(now=NOW)
    anomaly = Anomaly.objects.get(kind=Anomaly.Kind.TIER_SHIFT)
    assert anomaly.metric == "pricier_calls" and anomaly.observed == 60
    assert anomaly.controls.get().kind == ControlKind.DOWNGRADE_TIER
    assert not Anomaly.objects.filter(kind=Anomaly.Kind.NEW_MODEL).exists()  # o3 was seen before


def test_a_model_never_seen_for_the_tenant_alerts_without_a_control_and_clears_after_a_day(
    tenant_a, catalog, normal_history
):
    wf = normal_history
    put_hours(tenant_a, wf, catalog["gpt-4o"], [LAST], calls=100)
    put_hours(tenant_a, wf, catalog["claude-sonnet-4-5"], [LAST], calls=8)
    anomalies_detect(now=NOW)
    anomaly = Anomaly.objects.get(kind=Anomaly.Kind.NEW_MODEL)
    assert anomaly.subject_name == "claude-sonnet-4-5" and anomaly.observed == 8 and anomaly.workflow == wf
    assert anomaly.controls.count() == 0 and anomaly.alert.kind == Alert.Kind.ANOMALY
    later = [LAST + timedelta(hours=h) for h in range(1, 24)]
    put_hours(tenant_a, wf, catalog["gpt-4o"], later, calls=steady)
    anomalies_detect(now=NOW + timedelta(hours=22))
    anomaly.refresh_from_db()
    assert anomaly.status == Anomaly.Status.OPEN
    anomalies_detect(now=NOW + timedelta(hours=23))
    anomaly.refresh_from_db()
    assert anomaly.status == Anomaly.Status.CLEARED


def test_quiet_workflows_do_not_alert_on_noise(tenant_a, catalog):
    quiet = WorkflowFactory(slug="quiet-one")
    put_hours(tenant_a, quiet, catalog["gpt-4o"], history(), calls=lambda i, at: 2 + i % 2)
    put_hours(tenant_a, quiet, catalog["gpt-4o"], [LAST], calls=12)  # 5x, but 12 calls
    anomalies_detect(now=NOW)
    assert not Anomaly.objects.exists()


def test_critical_workflows_get_the_alert_but_no_control(tenant_a, catalog, normal_history):
    wf = normal_history
    Workflow.objects.filter(pk=wf.pk).update(priority=Workflow.Priority.CRITICAL)
    put_hours(tenant_a, wf, catalog["gpt-4o"], [LAST], calls=600)
    anomalies_detect(now=NOW)
    anomaly = Anomaly.objects.get(kind=Anomaly.Kind.RUNAWAY_LOOP)
    assert anomaly.alert is not None and anomaly.controls.count() == 0


def test_only_the_tenant_with_the_spike_gets_an_anomaly(tenant_a, tenant_b, catalog, normal_history):
    wf = normal_history
    put_hours(tenant_b, wf, catalog["gpt-4o"], history(), calls=steady)
    put_hours(tenant_b, wf, catalog["gpt-4o"], [LAST], calls=104)
    put_hours(tenant_a, wf, catalog["gpt-4o"], [LAST], calls=600)
    anomalies_detect(now=NOW)
    assert set(Anomaly.objects.values_list("tenant_id", flat=True)) == {tenant_a.pk}


def test_a_tenant_with_rollups_still_marked_dirty_waits_for_the_next_run(tenant_a, catalog, normal_history):
    from finops.models import RollupDirtyDay

    put_hours(tenant_a, normal_history, catalog["gpt-4o"], [LAST], calls=600)
    RollupDirtyDay.objects.create(tenant=tenant_a, day=LAST.date())
    result = anomalies_detect(now=NOW)
    assert result.skipped >= 1 and not Anomaly.objects.exists()


def test_feedback_expected_ends_controls_is_audited_and_excludes_the_period(tenant_a, catalog, normal_history):
    wf = normal_history
    put_hours(tenant_a, wf, catalog["gpt-4o"], [LAST], calls=600)
    anomalies_detect(now=NOW)
    anomaly = Anomaly.objects.get(kind=Anomaly.Kind.RUNAWAY_LOOP)
    control = anomaly.controls.get()
    person = UserFactory(username="approver-a")
    with pytest.raises(ApplicationError) as exc:
        anomaly_feedback(anomaly=anomaly, feedback="maybe", actor=Actor(user=person))
    assert exc.value.code == "invalid"
    done = anomaly_feedback(anomaly=anomaly, feedback="expected", note="load test", actor=Actor(user=person))
    assert done.feedback == "expected" and done.feedback_by == person and done.feedback_note == "load test"
    control.refresh_from_db()
    assert control.ends_at is not None and "expected" in control.ended_reason
    event = AuditEvent.objects.get(action="anomaly.feedback")
    assert event.before == {"feedback": "", "note": ""} and event.after["feedback"] == "expected"
    assert event.after["controls_ended"] == 1
    assert _excluded_hours(tenant_a, wf.pk, LAST) == {LAST}
    # the same feedback again changes nothing
    anomaly_feedback(anomaly=done, feedback="expected", note="load test", actor=Actor(user=person))
    assert AuditEvent.objects.filter(action="anomaly.feedback").count() == 1


def test_hours_marked_expected_are_not_flagged_again_nor_learned(tenant_a, catalog, normal_history):
    wf = normal_history
    put_hours(tenant_a, wf, catalog["gpt-4o"], [LAST], calls=600)
    anomalies_detect(now=NOW)
    anomaly = Anomaly.objects.get(kind=Anomaly.Kind.RUNAWAY_LOOP)
    anomaly_feedback(anomaly=anomaly, feedback="false_alarm", actor=Actor.system())
    put_hours(tenant_a, wf, catalog["gpt-4o"], [LAST + timedelta(hours=h) for h in (1, 2)], calls=104)
    anomalies_detect(now=NOW + timedelta(hours=2))
    anomaly.refresh_from_db()
    assert anomaly.status == Anomaly.Status.CLEARED
    assert Anomaly.objects.filter(kind=Anomaly.Kind.RUNAWAY_LOOP).count() == 1


def test_the_tenants_own_envelope_comes_before_the_workflows(tenant_a, catalog, normal_history):
    from finops.models import TenantWorkflowEnvelope

    wf = normal_history
    Workflow.objects.filter(pk=wf.pk).update(expected_input_tokens_p95=500, expected_output_tokens_p95=200)
    TenantWorkflowEnvelope.objects.create(
        tenant=tenant_a, workflow=wf, expected_input_tokens_p95=2000, expected_output_tokens_p95=500
    )
    put_hours(tenant_a, wf, catalog["gpt-4o"], [LAST], calls=104)  # 1000 tokens per call: within A's own
    anomalies_detect(now=NOW)
    assert not Anomaly.objects.filter(kind=Anomaly.Kind.PROMPT_BLOAT).exists()
