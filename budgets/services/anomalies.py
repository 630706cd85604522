"""Anomaly detection that acts: the hourly job, its alerts and controls, and people's feedback (issue 10).

`anomalies_detect` runs a few minutes after each hour closes (finops/celery.py) and again later in the
hour for tenants whose rollups were still being recomputed. For every active tenant it reads the hourly
rollups of the retention period (never raw usage), builds one hourly series per workflow and metric and
scores them with `finops.anomalies.score_series` and `PRODUCT_SETTINGS` (the settings the bench
measures, docs/anomalies.md):

| metric | what it catches | kind | control started (ANOMALY_POLICY) |
|---|---|---|---|
| calls per hour | call volume spikes, runaway loops | runaway_loop | require_approval |
| spend per hour | spend spikes | spike | none: an alert |
| tokens per call (also: above the workflow's envelope p95) | prompt bloat | prompt_bloat | cap_output_tokens |
| calls on a tier pricier than the workflow's usual one | model mix moving up | tier_shift | downgrade_tier |
| a model / workflow never seen for the tenant | a new expensive model | new_model / new_workflow | none |

An anomaly opens when the last closed hour is in an episode (the score's hysteresis decides), with an
`Alert` carrying the evidence (observed, expected, band, score, kind) and the controls of its kind's
policy, scoped to the tenant x workflow and never applied to critical workflows. It clears when the
scoring says the episode ended (new-model and new-workflow anomalies after a day), ending its controls.
A spend spike is not opened while a call, tokens or tier anomaly of the same workflow explains it.
Every open, clear, feedback and control start and end is audited.

Feedback: confirmed, expected (planned activity) or false alarm. The last two end the anomaly's controls
at once, and their hours are passed to `score_series` as excluded: never learned into later baselines.

Every step is guarded by the anomaly's status and a unique constraint on open anomalies, so running the
job twice for an hour changes nothing the second time.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from budgets.models import Alert, Anomaly, Control, ControlKind
from finops.anomalies import NEW_NAME_MIN_CALLS, PRODUCT_SETTINGS, ScoredPoint, new_names, score_series
from finops.models import RollupDirtyDay, TenantWorkflowEnvelope, Workflow
from tenants.errors import ApplicationError
from tenants.models import Tenant
from tenants.scope import Actor
from tenants.services import audit_record

from .alerts import notifications_create
from .anomaly_series import TenantHours, hour_floor, tenant_hours, tenant_seen_before
from .controls import active_controls_q, control_end, control_start

logger = logging.getLogger(__name__)

Kind = Anomaly.Kind
METRIC_KIND: dict[str, str] = {
    "calls": Kind.RUNAWAY_LOOP,
    "cost": Kind.SPIKE,
    "tokens_per_call": Kind.PROMPT_BLOAT,
    "pricier_calls": Kind.TIER_SHIFT,
}
UNITS = {
    "calls": "calls/h",
    "cost": "USD/h",
    "tokens_per_call": "tokens/call",
    "pricier_calls": "calls/h on a pricier tier",
    "model": "calls/h",
    "workflow": "calls/h",
}
# What each kind starts through the ladder. Critical workflows only get the alert.
ANOMALY_POLICY: dict[str, list[dict]] = {
    Kind.RUNAWAY_LOOP: [{"kind": ControlKind.REQUIRE_APPROVAL, "params": {}}],
    Kind.PROMPT_BLOAT: [{"kind": ControlKind.CAP_OUTPUT_TOKENS, "params": {"max_output_tokens": 1024}}],
    Kind.TIER_SHIFT: [{"kind": ControlKind.DOWNGRADE_TIER, "params": {"steps": 1}}],
    Kind.SPIKE: [],
    Kind.NEW_MODEL: [],
    Kind.NEW_WORKFLOW: [],
}
CONTROL_PRIORITIES = ["low", "normal", "high"]
EVENT_OPEN_HOURS = 24  # new model / new workflow anomalies clear after a day
EVIDENCE_HOURS = 72
MIN_TENANT_HISTORY = timedelta(days=7)  # before this, everything a tenant does is "new"
FEEDBACK_EXCLUDED = (Anomaly.Feedback.EXPECTED, Anomaly.Feedback.FALSE_ALARM)


def _excluded_hours(tenant: Tenant, workflow_id: int | None, hour: datetime) -> set[datetime]:
    out: set[datetime] = set()
    marked = Anomaly.objects.filter(tenant=tenant, feedback__in=FEEDBACK_EXCLUDED)
    marked = marked.filter(workflow__isnull=True) if workflow_id is None else marked.filter(workflow_id=workflow_id)
    for opened, cleared in marked.values_list("opened_at", "cleared_at"):
        at, end = hour_floor(opened), hour_floor(cleared) if cleared else hour
        while at <= end:
            out.add(at)
            at += timedelta(hours=1)
    return out


def _evidence(metric: str, results: list[ScoredPoint]) -> dict:
    def num(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(v, 4)

    return {
        "unit": UNITS[metric],
        "series": [[r.at.isoformat(), num(r.value), num(r.expected), num(r.low), num(r.high)] for r in results],
    }


@dataclass
class Finding:
    kind: str
    metric: str
    workflow_id: int | None
    opened_at: datetime
    observed: float
    expected: float | None = None
    low: float | None = None
    high: float | None = None
    score: float | None = None
    subject_name: str = ""
    evidence: dict = field(default_factory=dict)


def _findings(tenant: Tenant, hours: TenantHours, hour: datetime) -> tuple[list[Finding], set[tuple]]:
    """What is anomalous in `hour`, and the (workflow, kind, subject) keys that were scored in range."""
    findings: list[Finding] = []
    in_range: set[tuple] = set()
    ids = [k for k in hours.series if k is not None]
    envelopes: dict[int, Workflow | TenantWorkflowEnvelope] = {w.pk: w for w in Workflow.objects.filter(pk__in=ids)}
    own = TenantWorkflowEnvelope.objects.filter(tenant=tenant, workflow_id__in=ids)
    envelopes.update({e.workflow_id: e for e in own})
    for wf_id, series in hours.series.items():
        excluded = _excluded_hours(tenant, wf_id, hour)
        for metric, (points, volumes) in series.metrics().items():
            results = score_series(points, settings=PRODUCT_SETTINGS[metric], volumes=volumes, exclude=excluded)
            last = results[-1]
            kind = METRIC_KIND[metric]
            flagged = last.is_anomaly
            if metric == "tokens_per_call" and not flagged and last.value is not None:
                flagged = _above_envelope(envelopes.get(wf_id or 0), last.value, series.calls[-1])
            if flagged and last.value is not None:
                findings.append(
                    Finding(
                        kind=kind,
                        metric=metric,
                        workflow_id=wf_id,
                        opened_at=last.episode_start or last.at,
                        observed=last.value,
                        expected=last.expected,
                        low=last.low,
                        high=last.high,
                        score=last.score,
                        evidence=_evidence(metric, results[-EVIDENCE_HOURS:]),
                    )
                )
            else:
                in_range.add((wf_id, kind, ""))
    return findings, in_range


def _above_envelope(envelope: Workflow | TenantWorkflowEnvelope | None, tokens_per_call: float, calls: float) -> bool:
    """Mean tokens per call above the envelope's expected p95 (input + output), at the minimum volume. The
    envelope is the tenant's own for the workflow when it has one, else the workflow's."""
    if envelope is None or envelope.expected_input_tokens_p95 is None or envelope.expected_output_tokens_p95 is None:
        return False
    p95 = envelope.expected_input_tokens_p95 + envelope.expected_output_tokens_p95
    return calls >= PRODUCT_SETTINGS["tokens_per_call"].min_volume and tokens_per_call > p95


def _new_things(tenant: Tenant, hours: TenantHours, hour: datetime) -> list[Finding]:
    """Models and workflows with calls in `hour` that the tenant never used before it."""
    seen = tenant_seen_before(tenant=tenant, hour=hour, min_history=MIN_TENANT_HISTORY)
    if seen is None:
        return []
    seen_models, seen_workflows = seen
    out: list[Finding] = []
    totals: dict[str, float] = defaultdict(float)
    top_workflow: dict[str, tuple[float, int | None]] = {}
    for wf_id, per_model in hours.last_hour_models.items():
        for name, calls in per_model.items():
            totals[name] += calls
            if calls > top_workflow.get(name, (-1.0, None))[0]:
                top_workflow[name] = (calls, wf_id)
        wf_calls = sum(per_model.values())
        if wf_id not in seen_workflows and wf_calls >= NEW_NAME_MIN_CALLS:
            out.append(
                Finding(Kind.NEW_WORKFLOW, "workflow", wf_id, hour, wf_calls, evidence={"unit": UNITS["workflow"]})
            )
    for name in new_names(seen_models, dict(totals)):
        out.append(
            Finding(
                Kind.NEW_MODEL,
                "model",
                top_workflow[name][1],
                hour,
                totals[name],
                subject_name=name,
                evidence={"unit": UNITS["model"], "model": name},
            )
        )
    return out


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit.startswith("USD"):
        return f"${value:,.2f}"
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:,.1f}"


def _describe(anomaly: Anomaly) -> str:
    unit = anomaly.evidence.get("unit", "")
    where = anomaly.workflow.name if anomaly.workflow is not None else "usage without a workflow"
    if anomaly.kind in (Kind.NEW_MODEL, Kind.NEW_WORKFLOW):
        what = f"model {anomaly.subject_name}" if anomaly.kind == Kind.NEW_MODEL else f"workflow {where}"
        return f"{anomaly.tenant.name}: {what} used for the first time ({_fmt(anomaly.observed, unit)} {unit})"
    return (
        f"{anomaly.tenant.name} / {where}: {anomaly.get_kind_display().lower()}: {_fmt(anomaly.observed, unit)} {unit} "
        f"against {_fmt(anomaly.expected, unit)} expected (band {_fmt(anomaly.low, unit)} to "
        f"{_fmt(anomaly.high, unit)}, score {anomaly.score or 0:.1f})"
    )


def _open(tenant: Tenant, finding: Finding, *, hour: datetime, now: datetime) -> Anomaly | None:
    try:
        with transaction.atomic():
            anomaly = Anomaly.objects.create(
                tenant=tenant,
                workflow_id=finding.workflow_id,
                kind=finding.kind,
                metric=finding.metric,
                subject_name=finding.subject_name,
                opened_at=finding.opened_at,
                last_hour=hour,
                observed=finding.observed,
                expected=finding.expected,
                low=finding.low,
                high=finding.high,
                score=finding.score,
                peak_score=finding.score,
                evidence=finding.evidence,
                created_at=now,
            )
            anomaly = Anomaly.objects.select_related("tenant", "workflow").get(pk=anomaly.pk)
            description = _describe(anomaly)
            controls = _start_controls(anomaly, description, now=now)
            message = description + ".\n"
            if controls:
                message += "Controls started: " + ", ".join(c.kind for c in controls) + ".\n"
            message += "Say whether it was expected on the anomalies page; the controls end when it clears."
            ratio = finding.observed / finding.expected * 100 if finding.expected else 100
            alert = Alert.objects.create(
                kind=Alert.Kind.ANOMALY,
                level=max(0, min(int(ratio), 32767)),
                tenant=tenant,
                subject=f"[Tokenspend] Anomaly: {description}"[:300],
                message=message,
                created_at=now,
            )
            notifications_create(alert)
            anomaly.alert = alert
            anomaly.save(update_fields=["alert"])
            audit_record(
                action="anomaly.open",
                tenant=tenant,
                target=anomaly,
                after={**_summary(anomaly), "controls": [c.pk for c in controls], "alert": alert.pk},
            )
    except IntegrityError:
        return None  # another run opened it first (anomaly_open_once)
    return anomaly


def _start_controls(anomaly: Anomaly, description: str, *, now: datetime) -> list[Control]:
    rungs = ANOMALY_POLICY.get(anomaly.kind, [])
    if not rungs or anomaly.workflow is None or anomaly.workflow.priority == Workflow.Priority.CRITICAL:
        return []
    started = []
    for rung in rungs:
        control = control_start(
            kind=rung["kind"],
            source=Control.Source.ANOMALY,
            reason=f"Anomaly #{anomaly.pk}: {description}",
            tenant=anomaly.tenant,
            workflow=anomaly.workflow,
            priorities=CONTROL_PRIORITIES,
            params=rung["params"],
            rung=f"anomaly:{anomaly.kind}",
            starts_at=now,
        )
        started.append(control)
    anomaly.controls.add(*started)
    return started


def _end_controls(anomaly: Anomaly, reason: str, *, actor: Actor, now: datetime) -> int:
    ended = 0
    for control in anomaly.controls.filter(active_controls_q(now)):
        control_end(control=control, reason=reason, actor=actor, now=now)
        ended += 1
    return ended


def _summary(anomaly: Anomaly) -> dict:
    return {
        "kind": anomaly.kind,
        "metric": anomaly.metric,
        "workflow": anomaly.workflow.slug if anomaly.workflow is not None else None,
        "subject": anomaly.subject_name,
        "status": anomaly.status,
        "opened_at": anomaly.opened_at.isoformat(),
        "observed": anomaly.observed,
        "expected": anomaly.expected,
        "band": [anomaly.low, anomaly.high],
        "score": anomaly.score,
    }


def _clear(anomaly: Anomaly, *, now: datetime, reason: str) -> bool:
    with transaction.atomic():
        updated = Anomaly.objects.filter(pk=anomaly.pk, status=Anomaly.Status.OPEN).update(
            status=Anomaly.Status.CLEARED, cleared_at=now
        )
        if not updated:
            return False
        anomaly.refresh_from_db()
        ended = _end_controls(anomaly, f"Anomaly #{anomaly.pk} cleared: {reason}", actor=Actor.system(), now=now)
        audit_record(
            action="anomaly.clear",
            tenant=anomaly.tenant,
            target=anomaly,
            after={**_summary(anomaly), "reason": reason, "controls_ended": ended},
        )
    return True


@dataclass
class DetectResult:
    hour: datetime | None = None
    tenants: int = 0
    skipped: int = 0
    opened: int = 0
    updated: int = 0
    cleared: int = 0


def anomalies_detect_tenant(*, tenant: Tenant, hour: datetime, now: datetime | None = None) -> DetectResult:
    """Score one tenant's last closed `hour` and open, update or clear its anomalies."""
    now = now or timezone.now()
    result = DetectResult(hour=hour, tenants=1)
    hours = tenant_hours(tenant=tenant, hour=hour)
    findings, in_range = _findings(tenant, hours, hour)
    findings += _new_things(tenant, hours, hour)
    open_now = {
        (a.workflow_id, a.kind, a.subject_name): a
        for a in Anomaly.objects.select_related("tenant", "workflow").filter(tenant=tenant, status=Anomaly.Status.OPEN)
    }
    explained = {(f.workflow_id) for f in findings if f.kind != Kind.SPIKE} | {
        k[0] for k in open_now if k[1] in (Kind.RUNAWAY_LOOP, Kind.PROMPT_BLOAT, Kind.TIER_SHIFT)
    }
    for f in findings:
        key = (f.workflow_id, f.kind, f.subject_name)
        current = open_now.get(key)
        if current is None:
            if f.kind == Kind.SPIKE and f.workflow_id in explained:
                continue
            if _open(tenant, f, hour=hour, now=now) is not None:
                result.opened += 1
        elif current.last_hour < hour and f.kind not in (Kind.NEW_MODEL, Kind.NEW_WORKFLOW):
            Anomaly.objects.filter(pk=current.pk, status=Anomaly.Status.OPEN).update(
                last_hour=hour,
                observed=f.observed,
                expected=f.expected,
                low=f.low,
                high=f.high,
                score=f.score,
                peak_score=max(current.peak_score or 0, f.score or 0),
                evidence=f.evidence,
            )
            result.updated += 1
    for key, anomaly in open_now.items():
        if anomaly.kind in (Kind.NEW_MODEL, Kind.NEW_WORKFLOW):
            if anomaly.opened_at <= hour - timedelta(hours=EVENT_OPEN_HOURS - 1):
                result.cleared += _clear(anomaly, now=now, reason="a day has passed since first use")
        elif key in in_range or anomaly.workflow_id not in hours.series:
            result.cleared += _clear(anomaly, now=now, reason="back in its expected band")
    return result


def anomalies_detect(*, now: datetime | None = None) -> DetectResult:
    """Score the last closed hour for every active tenant (the hourly job). A tenant whose rollups for
    that hour are still marked for recomputation is skipped and picked up by the next run."""
    now = now or timezone.now()
    hour = hour_floor(now) - timedelta(hours=1)
    total = DetectResult(hour=hour)
    dirty = set(
        RollupDirtyDay.objects.filter(day__gte=hour.date(), day__lte=now.date()).values_list("tenant_id", flat=True)
    )
    for tenant in Tenant.objects.filter(status=Tenant.Status.ACTIVE).order_by("pk"):
        if tenant.pk in dirty:
            total.skipped += 1
            continue
        step = anomalies_detect_tenant(tenant=tenant, hour=hour, now=now)
        total.tenants += 1
        total.opened += step.opened
        total.updated += step.updated
        total.cleared += step.cleared
    if total.opened or total.cleared:
        logger.info("anomalies %s: %s opened, %s cleared", hour, total.opened, total.cleared)
    return total


def anomaly_feedback(*, anomaly: Anomaly, feedback: str, actor: Actor, note: str = "", now=None) -> Anomaly:
    """Record what an anomaly was. Expected and false alarm end its controls now and keep its hours out of
    later baselines; giving the same feedback again changes nothing."""
    choices = [c for c in Anomaly.Feedback.values if c]
    if feedback not in choices:
        raise ApplicationError(
            "invalid",
            f"feedback must be one of {', '.join(choices)}.",
            details={"feedback": [f"One of {', '.join(choices)}."]},
            status_code=400,
        )
    if not isinstance(note, str) or len(note) > 2000:
        raise ApplicationError("invalid", "note must be text of at most 2000 characters.", status_code=400)
    now = now or timezone.now()
    with transaction.atomic():
        locked = Anomaly.objects.select_for_update(of=("self",)).select_related("tenant", "workflow").get(pk=anomaly.pk)
        if locked.feedback == feedback and locked.feedback_note == note:
            return locked
        before = {"feedback": locked.feedback, "note": locked.feedback_note}
        locked.feedback, locked.feedback_note = feedback, note
        locked.feedback_by, locked.feedback_at = actor.actor_user, now
        locked.save(update_fields=["feedback", "feedback_note", "feedback_by", "feedback_at"])
        ended = 0
        if feedback in FEEDBACK_EXCLUDED:
            label = locked.get_feedback_display().lower()
            ended = _end_controls(locked, f"Anomaly #{locked.pk} marked {label}", actor=actor, now=now)
        audit_record(
            action="anomaly.feedback",
            tenant=locked.tenant,
            actor=actor,
            target=locked,
            before=before,
            after={"feedback": feedback, "note": note, "controls_ended": ended},
        )
    return locked
