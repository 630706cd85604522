"""Reads for the budget, control and alert pages: what a person may see, burn and forecast per budget.

Every selector takes the caller's `TenantScope` (pages and APIs alike). Platform-wide rows (tenant
empty) are the platform callers' (`TenantScope.filter(platform_rows=True)`): shown to operators and
platform keys whatever tenant they picked, because they apply to every tenant, and never to tenants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, TypedDict

from django.db.models import Case, Count, IntegerField, Prefetch, Q, QuerySet, Value, When
from django.utils import timezone

from budgets.forecasting import WindowForecast
from budgets.models import (
    Alert,
    Anomaly,
    ApprovalRequest,
    Budget,
    BudgetWindow,
    Control,
    Metric,
    Notification,
    NotificationChannel,
    Reservation,
)
from budgets.periods import period_bounds
from budgets.services.controls import active_controls_q
from budgets.services.ladder import budget_levels, levels_forecasts
from finops.models import Workflow
from finops.selectors.spend import SpendGroup, SpendQuery, spend_query
from finops.selectors.spend_totals import spend_series
from tenants.models import AuditEvent
from tenants.scope import TenantScope

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

WINDOW_HISTORY = 12
BUDGET_HISTORY = 50


class BurnStatus:
    OK = "ok"
    OVER_SOFT = "over_soft"
    FORECAST_OVER_HARD = "forecast_over_hard"
    AT_HARD = "at_hard"

    LABELS = {
        OK: "ok",
        OVER_SOFT: "over soft",
        FORECAST_OVER_HARD: "forecast over hard",
        AT_HARD: "at hard",
    }


def _scoped(qs: QuerySet, scope: TenantScope) -> QuerySet:
    return scope.filter(qs, platform_rows=True)


# --- Budgets and their burn --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Burn:
    """A budget's current period: what is spent and held, its limits, and where the ladder's forecast ends."""

    budget: Budget
    starts_at: datetime
    ends_at: datetime
    spent: int
    reserved: int
    soft_limit: int | None
    hard_limit: int | None
    forecast: int
    status: str
    unreserved_spent: int = 0  # part of spent that arrived without a preflight reservation
    unreserved_calls: int = 0
    forecast_method: str = "run_rate"  # "weekday" (the pattern, with the history for it) or "run_rate"

    @property
    def forecast_method_label(self) -> str:
        return "with the weekday pattern" if self.forecast_method == "weekday" else "at the run-rate so far"

    @property
    def unreserved_share(self) -> Decimal | None:
        return (Decimal(self.unreserved_spent) * 100 / self.spent).quantize(Decimal("0.1")) if self.spent else None

    @property
    def is_cost(self) -> bool:
        return self.budget.metric == Metric.COST

    @property
    def used(self) -> int:
        return self.spent + self.reserved

    @property
    def scale(self) -> int:
        """What the burn bar's full width stands for: the hard limit, or the soft one when there is no hard."""
        return max(self.hard_limit or self.soft_limit or 0, self.used, 1)

    def _share(self, amount: int | None) -> float | None:
        if amount is None:
            return None
        return round(min(amount, self.scale) * 100 / self.scale, 1)

    @property
    def spent_pct(self) -> float:
        return self._share(self.spent) or 0.0

    @property
    def reserved_pct(self) -> float:
        return round(min(self._share(self.used) or 0.0, 100.0) - self.spent_pct, 1)

    @property
    def soft_pct(self) -> float | None:
        return self._share(self.soft_limit)

    @property
    def forecast_pct(self) -> float:
        return self._share(self.forecast) or 0.0

    @property
    def hard_used(self) -> float | None:
        """Spent and reserved as a fraction of the hard limit (for "87% of hard")."""
        return self.used / self.hard_limit if self.hard_limit else None

    @property
    def status_label(self) -> str:
        return BurnStatus.LABELS[self.status]


def window_forecast(window: BudgetWindow, now: datetime, weekday: WindowForecast | None = None) -> int:
    """The period-end forecast the ladder acts on (the weekday pattern with enough history, else the linear
    run-rate; see services/ladder.py), so the page and the controls never disagree about whether a budget
    is forecast over its hard limit. `weekday` comes from `levels_forecasts` (None: the run-rate)."""
    return budget_levels(window.budget, window, now=now, weekday=weekday).forecast


def burn_status(*, spent: int, forecast: int, soft: int | None, hard: int | None) -> str:
    """Judged on what was spent, like the ladder: reservations are estimates that mostly settle for less."""
    if hard is not None and spent >= hard:
        return BurnStatus.AT_HARD
    if hard is not None and forecast > hard:
        return BurnStatus.FORECAST_OVER_HARD
    if soft is not None and spent >= soft:
        return BurnStatus.OVER_SOFT
    return BurnStatus.OK


def _burns(budgets: list[Budget], current: dict[int, BudgetWindow], now: datetime) -> list[Burn]:
    """Each budget's burn, its forecast the ladder's: the weekday ones read together (fixed query count)."""
    weekday = levels_forecasts([(b, current[b.pk]) for b in budgets if b.pk in current], now=now)
    return [_burn(b, current.get(b.pk), now, weekday.get(b.pk)) for b in budgets]


def _burn(budget: Budget, window: BudgetWindow | None, now: datetime, weekday: WindowForecast | None = None) -> Burn:
    if window is None:
        # No call counted yet this period (windows open lazily): an empty window with the budget's limits.
        starts_at, ends_at = period_bounds(budget.period, budget.time_zone, now)
        window = BudgetWindow(
            budget=budget,
            starts_at=starts_at,
            ends_at=ends_at,
            soft_limit=budget.soft_limit,
            hard_limit=budget.hard_limit,
        )
    window.budget = budget
    levels = budget_levels(budget, window, now=now, weekday=weekday)
    forecast = levels.forecast
    return Burn(
        budget=budget,
        starts_at=window.starts_at,
        ends_at=window.ends_at,
        spent=window.spent,
        reserved=window.reserved,
        soft_limit=window.soft_limit,
        hard_limit=window.hard_limit,
        forecast=forecast,
        status=burn_status(spent=window.spent, forecast=forecast, soft=window.soft_limit, hard=window.hard_limit),
        unreserved_spent=window.unreserved_spent,
        unreserved_calls=window.unreserved_calls,
        forecast_method=levels.forecast_method,
    )


def budgets_visible(*, scope: TenantScope) -> QuerySet[Budget]:
    qs = Budget.objects.select_related("tenant", "workflow", "tier")
    return _scoped(qs, scope)


def budget_get(*, budget_id: int, scope: TenantScope) -> Budget | None:
    """The budget if the person may see it; another tenant's budget is None, exactly like a missing one."""
    return budgets_visible(scope=scope).filter(pk=budget_id).first()


def budget_burns(*, scope: TenantScope, now: datetime | None = None) -> list[Burn]:
    """Every visible budget with its current period's burn, active ones first (two queries)."""
    now = now or timezone.now()
    budgets = list(budgets_visible(scope=scope).order_by("-is_active", "name", "id"))
    current = {
        w.budget_id: w
        for w in BudgetWindow.objects.filter(budget_id__in=[b.pk for b in budgets], starts_at__lte=now, ends_at__gt=now)
    }
    return _burns(budgets, current, now)


def budget_current_windows(budgets: list[Budget], now: datetime | None = None) -> dict[int, BudgetWindow]:
    """The current period's window of each budget (already visible to the caller), by budget id."""
    now = now or timezone.now()
    windows = BudgetWindow.objects.filter(budget__in=budgets, starts_at__lte=now, ends_at__gt=now)
    return {w.budget_id: w for w in windows}


def budget_burn(*, budget: Budget, now: datetime | None = None) -> Burn:
    now = now or timezone.now()
    window = BudgetWindow.objects.filter(budget=budget, starts_at__lte=now, ends_at__gt=now).first()
    return _burns([budget], {budget.pk: window} if window is not None else {}, now)[0]


@dataclass(frozen=True, slots=True)
class WindowRow:
    window: BudgetWindow
    status: str

    @property
    def status_label(self) -> str:
        return BurnStatus.LABELS[self.status]


def budget_windows(*, budget: Budget, now: datetime | None = None) -> list[WindowRow]:
    """The budget's periods, newest first, each judged by where it ended (or stands now)."""
    now = now or timezone.now()
    rows = []
    windows = list(BudgetWindow.objects.filter(budget=budget).order_by("-starts_at")[:WINDOW_HISTORY])
    current = [w for w in windows if w.starts_at <= now < w.ends_at]
    weekday = levels_forecasts([(budget, current[0])], now=now).get(budget.pk) if current else None
    for w in windows:
        w.budget = budget
        status = burn_status(
            spent=w.spent,
            forecast=window_forecast(w, now, weekday if w in current else None),
            soft=w.soft_limit,
            hard=w.hard_limit,
        )
        rows.append(WindowRow(window=w, status=status))
    return rows


@dataclass(frozen=True, slots=True)
class BurnPoint:
    at: datetime  # the end of the bucket: spend is cumulative up to here
    cumulative: int


def burn_series(*, budget: Budget, starts_at: datetime, now: datetime) -> list[BurnPoint]:
    """Cumulative spend of the budget's scope since `starts_at`, from rollups (`spend_series`).

    The recent days come in hours; before them, in whole UTC days, so a window that starts mid-day
    in its own time zone counts the whole first UTC day there.
    """
    buckets = spend_series(
        scope=TenantScope.for_tenant(budget.tenant) if budget.tenant is not None else TenantScope.system(),
        start=starts_at,
        end=now,
        metric=budget.metric,
        workflow_id=budget.workflow_id,
        environment=budget.environment,
        tier_id=budget.tier_id,
    )
    points = [BurnPoint(at=starts_at, cumulative=0)]
    total = 0
    for bucket in buckets:
        total += bucket.amount
        points.append(BurnPoint(at=min(max(bucket.end, starts_at), now), cumulative=total))
    return points


# --- Controls -----------------------------------------------------------------------------------------


def controls_visible(*, scope: TenantScope) -> QuerySet[Control]:
    qs = Control.objects.select_related("tenant", "workflow", "tier", "budget", "created_by")
    return _scoped(qs, scope)


@dataclass(frozen=True)
class ControlLists:
    active: list[Control]
    ended: list[Control]
    scheduled: list[Control]


def control_lists(
    *, scope: TenantScope, now: datetime | None = None, ended_limit: int = BUDGET_HISTORY
) -> ControlLists:
    now = now or timezone.now()
    qs = controls_visible(scope=scope)
    return ControlLists(
        active=list(qs.filter(active_controls_q(now)).order_by("-starts_at", "-id")),
        ended=list(qs.filter(ends_at__lte=now).order_by("-ends_at", "-id")[:ended_limit]),
        scheduled=list(qs.filter(starts_at__gt=now).order_by("starts_at", "id")),
    )


def control_get(*, control_id: int, scope: TenantScope) -> Control | None:
    return controls_visible(scope=scope).filter(pk=control_id).first()


def budget_controls(*, budget: Budget) -> list[Control]:
    rows = Control.objects.filter(budget=budget).select_related("tenant", "workflow", "tier")
    return list(rows.order_by("-starts_at", "-id")[:BUDGET_HISTORY])


# --- Alerts -------------------------------------------------------------------------------------------


def alerts_visible(*, scope: TenantScope) -> QuerySet[Alert]:
    """Unacknowledged first, newest first within each group; deliveries prefetched."""
    qs = (
        Alert.objects.select_related("tenant", "budget", "acknowledged_by")
        .prefetch_related(_deliveries(scope))
        .annotate(
            unacknowledged=Case(
                When(acknowledged_at__isnull=True, then=Value(0)), default=Value(1), output_field=IntegerField()
            )
        )
        .order_by("unacknowledged", "-created_at", "-id")
    )
    return _scoped(qs, scope)


def alert_get(*, alert_id: int, scope: TenantScope) -> Alert | None:
    return _scoped(Alert.objects.select_related("tenant"), scope).filter(pk=alert_id).first()


def alerts_unacknowledged_count(*, scope: TenantScope) -> int:
    qs = _scoped(Alert.objects.filter(acknowledged_at__isnull=True), scope)
    return qs.count()


def _deliveries(scope: TenantScope) -> Prefetch:
    """An alert's deliveries as the scope may see them: a tenant never sees the operators' platform-wide
    channels (their targets and delivery errors), only deliveries to its own channels."""
    deliveries = Notification.objects.select_related("channel").order_by("id")
    return Prefetch("notifications", queryset=scope.filter(deliveries, field="channel__tenant", platform_rows=True))


def budget_alerts(*, budget: Budget, scope: TenantScope) -> list[Alert]:
    return list(
        Alert.objects.filter(budget=budget)
        .select_related("acknowledged_by")
        .prefetch_related(_deliveries(scope))
        .order_by("-created_at", "-id")[:BUDGET_HISTORY]
    )


# --- Approval requests --------------------------------------------------------------------------------


def _open_approval_q(now: datetime) -> Q:
    """Pending and not yet expired: what a person can still decide (the expiry beat marks the rest)."""
    return Q(status=ApprovalRequest.Status.PENDING, expires_at__gt=now)


class _ApprovalClosed(TypedDict):
    """What `approvals_visible` annotates: 0 while the request is open, 1 once closed."""

    closed: int


def approvals_visible(
    *, scope: TenantScope, now: datetime | None = None
) -> QuerySet[WithAnnotations[ApprovalRequest, _ApprovalClosed]]:
    """Open requests first, newest first within each group (like the alerts)."""
    now = now or timezone.now()
    qs = (
        ApprovalRequest.objects.select_related(
            "tenant", "workflow", "model", "decided_by", "requested_by", "requested_by_key", "budget", "prompt_version"
        )
        .annotate(
            closed=Case(When(_open_approval_q(now), then=Value(0)), default=Value(1), output_field=IntegerField())
        )
        .order_by("closed", "-created_at", "-id")
    )
    return _scoped(qs, scope)


def approval_get(*, approval_id, scope: TenantScope) -> ApprovalRequest | None:
    """The request if the person may see it; another tenant's request is None, exactly like a missing one."""
    qs = ApprovalRequest.objects.select_related("tenant", "workflow", "model")
    return _scoped(qs, scope).filter(pk=approval_id).first()


def approvals_pending_count(*, scope: TenantScope, now: datetime | None = None) -> int:
    qs = ApprovalRequest.objects.filter(_open_approval_q(now or timezone.now()))
    return _scoped(qs, scope).count()


@dataclass(frozen=True)
class ApprovalFilters:
    """What the approvals queue narrows to; empty values filter nothing."""

    kind: str = ""
    workflow: str = ""  # a slug
    status: str = ""  # a status as the page shows it: a pending request past its expiry counts as expired
    older_than: timedelta | None = None

    @property
    def any(self) -> bool:
        return bool(self.kind or self.workflow or self.status or self.older_than)


def approvals_queue(
    *, scope: TenantScope, filters: ApprovalFilters, now: datetime | None = None
) -> QuerySet[WithAnnotations[ApprovalRequest, _ApprovalClosed]]:
    """`approvals_visible` narrowed by the queue's filters: still open requests first, newest first."""
    now = now or timezone.now()
    qs = approvals_visible(scope=scope, now=now)
    if filters.kind:
        qs = qs.filter(kind=filters.kind)
    if filters.workflow:
        qs = qs.filter(workflow__slug=filters.workflow)
    if filters.status == ApprovalRequest.Status.PENDING:
        qs = qs.filter(_open_approval_q(now))
    elif filters.status == ApprovalRequest.Status.EXPIRED:
        # The expiry beat marks them within a minute; until then the page already calls them expired.
        qs = qs.filter(
            Q(status=ApprovalRequest.Status.EXPIRED) | Q(status=ApprovalRequest.Status.PENDING, expires_at__lte=now)
        )
    elif filters.status:
        qs = qs.filter(status=filters.status)
    if filters.older_than is not None:
        qs = qs.filter(created_at__lte=now - filters.older_than)
    return qs


def approval_workflows(*, scope: TenantScope) -> QuerySet[Workflow]:
    """The workflows the scope's approval requests name (the queue's workflow filter offers these only)."""
    named = _scoped(ApprovalRequest.objects.filter(workflow__isnull=False), scope).values("workflow_id")
    return Workflow.objects.filter(pk__in=named).order_by("name", "slug")


def approval_budget_burns(*, approval: ApprovalRequest, scope: TenantScope, now: datetime | None = None) -> list[Burn]:
    """The active budgets the request's calls count against, as far as the scope sees them (a tenant
    never sees platform-wide ones), with their current period; the tenant's own first. A budget
    applies when each of its scope fields is empty or matches the request: its workflow, its
    environment (any, for a request that names none) and its model's tier (any, without a model)."""
    now = now or timezone.now()
    qs = budgets_visible(scope=scope).filter(Q(tenant_id=approval.tenant_id) | Q(tenant__isnull=True), is_active=True)
    if approval.workflow_id is not None:
        qs = qs.filter(Q(workflow__isnull=True) | Q(workflow_id=approval.workflow_id))
    else:
        qs = qs.filter(workflow__isnull=True)
    if approval.environment:
        qs = qs.filter(Q(environment="") | Q(environment=approval.environment))
    if approval.model is not None:
        qs = qs.filter(Q(tier__isnull=True) | Q(tier_id=approval.model.tier_id))
    budgets = sorted(qs, key=lambda b: (b.tenant_id is None, b.name, b.pk))
    current = budget_current_windows(budgets, now)
    return _burns(budgets, current, now)


def workflow_recent_usage(
    *, scope: TenantScope, workflow: Workflow, days: int, now: datetime | None = None
) -> SpendGroup:
    """The scope's calls of the workflow and their cost over the last `days` UTC days, today included,
    from the daily (tenant, workflow) rollups (`spend_query`), never raw usage."""
    today = (now or timezone.now()).astimezone(UTC).date()
    query = SpendQuery(
        start=datetime.combine(today - timedelta(days=days - 1), time.min, tzinfo=UTC),
        end=datetime.combine(today + timedelta(days=1), time.min, tzinfo=UTC),
        filters={"workflow": (workflow.slug,)},
    )
    return spend_query(scope=scope, query=query).totals


# The audit actions that make up a request's history, as the page words them.
APPROVAL_EVENTS = {
    "approval.open": "opened",
    "approval.approved": "approved",
    "approval.rejected": "rejected",
    "approval.consume": "used by a preflight",
    "approval.cancel": "cancelled",
    "approval.expire": "expired",
}


def approval_history(*, approval: ApprovalRequest, scope: TenantScope) -> list[AuditEvent]:
    """The request's own audit events, oldest first. Whoever sees the request sees who opened, decided,
    used, cancelled or let it expire (facts the request shows anyway); the rest of the audit log stays
    the admins' (`Operation.READ_AUDIT`)."""
    events = AuditEvent.objects.filter(
        target_type=ApprovalRequest.__name__,
        target_id=str(approval.pk),
        action__in=list(APPROVAL_EVENTS),
        # Nothing happens to a request before it opens: the range keeps the read on the `at` index
        # (target ids are not indexed); the minute allows for the two clocks of one transaction.
        at__gte=approval.created_at - timedelta(minutes=1),
    )
    return list(scope.filter(events).select_related("actor_user", "actor_key").order_by("at", "id"))


# --- The API's plain reads (their own ordering and pagination) ------------------------------------------


def alerts_scoped(*, scope: TenantScope) -> QuerySet[Alert]:
    return _scoped(Alert.objects.select_related("tenant", "budget", "window", "acknowledged_by"), scope)


def approvals_scoped(*, scope: TenantScope) -> QuerySet[ApprovalRequest]:
    return _scoped(
        ApprovalRequest.objects.select_related(
            "tenant", "workflow", "model", "decided_by", "requested_by", "requested_by_key", "budget", "prompt_version"
        ),
        scope,
    )


def channels_visible(*, scope: TenantScope) -> QuerySet[NotificationChannel]:
    """Notification channels: a tenant's own; platform callers also the platform-wide ones (which
    receive every tenant's alerts)."""
    return _scoped(NotificationChannel.objects.select_related("tenant"), scope).order_by("id")


def reservations_scoped(*, scope: TenantScope) -> QuerySet[Reservation]:
    return scope.filter(Reservation.objects.all())


# --- Anomalies ----------------------------------------------------------------------------------------


def anomalies_scoped(*, scope: TenantScope) -> QuerySet[Anomaly]:
    """The anomalies of the tenants the scope covers, newest first, with their controls."""
    return scope.filter(
        Anomaly.objects.select_related("tenant", "workflow", "alert", "feedback_by").prefetch_related("controls")
    )


def anomaly_get(*, anomaly_id: int, scope: TenantScope) -> Anomaly | None:
    return anomalies_scoped(scope=scope).filter(pk=anomaly_id).first()


def anomaly_feedback_counts(*, scope: TenantScope) -> dict[str, int]:
    """How many anomalies got each feedback (and none yet), over the scope."""
    rows = scope.filter(Anomaly.objects.all()).order_by().values("feedback").annotate(n=Count("id"))
    counts = {value: 0 for value in Anomaly.Feedback.values}
    for row in rows:
        counts[row["feedback"]] = row["n"]
    return counts
