"""Budgets and what enforces them: windows, reservations, controls, approvals, alerts (DESIGN.md 4, 8).

Amounts are integers in the budget's unit: nano-USD for cost budgets, tokens for token budgets.
"""

import uuid

from django.conf import settings
from django.db import models

from finops.models import Environment, LlmModel, ModelTier, PromptVersion, Workflow
from tenants.models import ApiKey, Tenant


class Metric(models.TextChoices):
    COST = "cost"
    TOKENS = "tokens"


class Period(models.TextChoices):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class HardAction(models.TextChoices):
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"
    DOWNGRADE = "downgrade"


class ControlKind(models.TextChoices):
    # Listed from least to most restrictive; preflight applies them most restrictive first.
    CAP_OUTPUT_TOKENS = "cap_output_tokens"
    COMPRESS_CONTEXT = "compress_context"
    DOWNGRADE_TIER = "downgrade_tier"
    REQUIRE_APPROVAL = "require_approval"
    DENY = "deny"


class Scope(models.Model):
    """What a budget or control covers: every empty field means "all"."""

    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    workflow = models.ForeignKey(Workflow, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    environment = models.CharField(max_length=8, choices=Environment.choices, blank=True)
    tier = models.ForeignKey(ModelTier, null=True, blank=True, on_delete=models.CASCADE, related_name="+")

    class Meta:
        abstract = True

    def scope_label(self) -> str:
        parts = [
            f"tenant {self.tenant.slug}" if self.tenant is not None else "all tenants",
            f"workflow {self.workflow.slug}" if self.workflow is not None else "",
            f"{self.environment}" if self.environment else "",
            f"{self.tier.slug} tier" if self.tier is not None else "",
        ]
        return ", ".join(p for p in parts if p)


class Budget(Scope):
    """A spending limit over a calendar period. Every usage record whose scope matches counts against it."""

    name = models.CharField(max_length=200)
    metric = models.CharField(max_length=8, choices=Metric.choices, default=Metric.COST)
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.MONTH)
    time_zone = models.CharField(max_length=64, default="UTC", help_text="Periods start at midnight here.")
    soft_limit = models.BigIntegerField(null=True, blank=True, help_text="nano-USD or tokens; alerts and early rungs.")
    hard_limit = models.BigIntegerField(null=True, blank=True, help_text="nano-USD or tokens; never exceeded.")
    hard_action = models.CharField(max_length=20, choices=HardAction.choices, default=HardAction.DENY)
    policy = models.JSONField(default=list, blank=True, help_text="Ladder rungs; empty = the default policy.")
    unreserved_alert_pct = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        null=True,
        blank=True,
        default=5,
        db_default=5,
        help_text="Alert when spend without a preflight reservation passes this percent of the window's spend "
        "(hard-limited budgets only); empty = never.",
    )
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["is_active", "tenant"], name="budget_active_tenant")]

    def __str__(self) -> str:
        return self.name


class BudgetWindow(models.Model):
    """One period of a budget: what was spent and what preflights hold. Limits are copied from the
    budget (and kept in step by budget edits) so a reservation is a single conditional UPDATE."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="windows")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    spent = models.BigIntegerField(default=0)
    reserved = models.BigIntegerField(default=0)
    soft_limit = models.BigIntegerField(null=True, blank=True)
    hard_limit = models.BigIntegerField(null=True, blank=True)
    reconciled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Spend that bypassed preflight (issue 11): usage without a reservation_id counted on a window with a
    # hard limit, in the budget's unit, as charged at ingest. Part of `spent`, never in addition to it.
    unreserved_spent = models.BigIntegerField(default=0, db_default=0)
    unreserved_calls = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        ordering = ["budget", "-starts_at"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "starts_at"], name="budgetwindow_unique_start"),
            models.CheckConstraint(condition=models.Q(reserved__gte=0), name="budgetwindow_reserved_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.budget} {self.starts_at:%Y-%m-%d}"


class Reservation(models.Model):
    """A preflight's hold on the windows with hard limits, released when its usage arrives or it expires."""

    class Status(models.TextChoices):
        HELD = "held"
        SETTLED = "settled"
        RELEASED = "released"
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    workflow = models.ForeignKey(Workflow, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    model = models.ForeignKey(LlmModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    environment = models.CharField(max_length=8, choices=Environment.choices)
    estimated_cost_nanos = models.BigIntegerField(null=True, blank=True)
    estimated_tokens = models.BigIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.HELD)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    usage_record_id = models.BigIntegerField(null=True, blank=True, help_text="The usage record that settled it.")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Estimate against actual (issue 11): what preflight counted before its safety factor, for models
    # tiktoken does not count exactly, and what the settling usage record reported. budgets_reserve()
    # does not write these (database defaults), preflight adds the estimate after the hold.
    input_count_estimated = models.BooleanField(default=False, db_default=False)
    estimated_input_tokens = models.BigIntegerField(
        null=True, blank=True, help_text="Input tokens as counted by tiktoken, before the safety factor."
    )
    safety_factor = models.DecimalField(max_digits=6, decimal_places=3, null=True, blank=True)
    estimate_family = models.CharField(
        max_length=120,
        blank=True,
        default="",
        db_default="",
        help_text="provider/model family, e.g. anthropic/claude-sonnet.",
    )
    actual_cost_nanos = models.BigIntegerField(null=True, blank=True, help_text="Cost of the usage that settled it.")
    requested_cost_nanos = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="The estimate at the requested model and output limit, when controls changed them (savings).",
    )
    actual_input_tokens = models.BigIntegerField(
        null=True, blank=True, help_text="Prompt tokens the settling usage reported (uncached + cached + written)."
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "expires_at"], name="reservation_status_expiry")]

    def __str__(self) -> str:
        return f"reservation {self.id} ({self.status})"


class ReservationHold(models.Model):
    """The amount one reservation holds on one window, in the window's unit."""

    reservation = models.ForeignKey(Reservation, on_delete=models.CASCADE, related_name="holds")
    window = models.ForeignKey(BudgetWindow, on_delete=models.CASCADE, related_name="+")
    amount = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.reservation_id} holds {self.amount} on window {self.window_id}"


class Control(Scope):
    """A rung of the ladder in force: preflight applies every active control whose scope matches."""

    class Source(models.TextChoices):
        BUDGET = "budget"
        ANOMALY = "anomaly"
        MANUAL = "manual"

    kind = models.CharField(max_length=20, choices=ControlKind.choices)
    priorities = models.JSONField(
        default=list, blank=True, help_text="Workflow priorities it applies to (low, normal, …); empty = all."
    )
    params = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    budget = models.ForeignKey(Budget, null=True, blank=True, on_delete=models.CASCADE, related_name="controls")
    window = models.ForeignKey(BudgetWindow, null=True, blank=True, on_delete=models.CASCADE, related_name="controls")
    rung = models.CharField(max_length=40, blank=True, help_text="The policy rung that started it.")
    reason = models.TextField()
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True, help_text="Empty = until someone ends it.")
    ended_reason = models.TextField(blank=True)
    end_audited = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Preflight caches controls in process and rebuilds when count or last change moves (set it in
    # every queryset .update(), which auto_now does not touch).
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-starts_at", "-id"]
        indexes = [models.Index(fields=["ends_at"], name="control_ends")]

    def __str__(self) -> str:
        return f"{self.kind} ({self.scope_label()})"


class ApprovalRequest(models.Model):
    """A person's go-ahead for one expensive run (or a prompt change, or a budget increase)."""

    class Kind(models.TextChoices):
        WORKFLOW_RUN = "workflow_run"
        PROMPT_CHANGE = "prompt_change"
        BUDGET_INCREASE = "budget_increase"

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        EXPIRED = "expired"
        CONSUMED = "consumed"
        CANCELLED = "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.WORKFLOW_RUN)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    workflow = models.ForeignKey(Workflow, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    model = models.ForeignKey(LlmModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    environment = models.CharField(max_length=8, choices=Environment.choices, blank=True)
    # The binding: a preflight presenting the approval must stay within these (cost when priced,
    # tokens otherwise), on the same workflow and environment and the same model or a cheaper tier.
    estimated_cost_nanos = models.BigIntegerField(null=True, blank=True)
    estimated_tokens = models.BigIntegerField(null=True, blank=True)
    reasons = models.JSONField(default=list, blank=True)
    justification = models.TextField(blank=True)
    requested_by_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The person behind the request (the signed-in person, or whoever created the requesting key),
    # fixed when it opens: four eyes means this person never decides it.
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # budget_increase: the budget, the limits asked for, and whether only its current window gets them.
    budget = models.ForeignKey("Budget", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    window = models.ForeignKey(BudgetWindow, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    new_soft_limit = models.BigIntegerField(null=True, blank=True)
    new_hard_limit = models.BigIntegerField(null=True, blank=True)
    current_window_only = models.BooleanField(default=False)
    # The rules in force when it opened (the threshold that held it and where it came from, who may
    # decide): what the request page shows and what decisions follow, whatever changes later.
    rules = models.JSONField(default=dict, blank=True)
    # prompt_change: the version under review.
    prompt_version = models.ForeignKey(PromptVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "status"], name="approval_tenant_status")]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"


class Alert(models.Model):
    """A budget level crossed (or an anomaly, or an approval request opened or decided). At most one per
    window, kind and level."""

    class Kind(models.TextChoices):
        SOFT_LIMIT = "soft_limit"
        HARD_LIMIT = "hard_limit"
        FORECAST = "forecast"
        ANOMALY = "anomaly"
        APPROVAL = "approval"  # a request opened or decided: the notice goes through the same channels
        UNRESERVED = "unreserved"  # spend that bypassed preflight above the budget's share

    kind = models.CharField(max_length=12, choices=Kind.choices)
    level = models.PositiveSmallIntegerField(help_text="Percent of the limit crossed.")
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    budget = models.ForeignKey(Budget, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts")
    window = models.ForeignKey(BudgetWindow, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts")
    subject = models.CharField(max_length=300)
    message = models.TextField()
    created_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["window", "kind", "level"], name="alert_once_per_window_level"),
        ]

    def __str__(self) -> str:
        return self.subject


class NotificationChannel(models.Model):
    """Where alerts go: an email address or a webhook URL, for one tenant's alerts or (empty) all."""

    class Kind(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"

    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    target = models.CharField(max_length=500, help_text="Email address or https:// URL.")
    secret = models.CharField(max_length=200, blank=True, help_text="Webhook signing secret (HMAC-SHA256).")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["kind", "target"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.target}"


class Notification(models.Model):
    """One alert's delivery to one channel, retried with backoff until sent or out of attempts."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="notifications")
    channel = models.ForeignKey(NotificationChannel, on_delete=models.CASCADE, related_name="notifications")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="notification_due")]
        constraints = [models.UniqueConstraint(fields=["alert", "channel"], name="notification_once_per_channel")]

    def __str__(self) -> str:
        return f"{self.alert_id} -> {self.channel} ({self.status})"


class NotificationAttempt(models.Model):
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField()
    ok = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["notification", "at"]

    def __str__(self) -> str:
        return f"{self.notification_id} at {self.at:%Y-%m-%d %H:%M:%S}: {'ok' if self.ok else 'failed'}"


class Anomaly(models.Model):
    """A tenant x workflow's hourly usage out of its expected band (budgets.services.anomalies).

    Opened by the hourly job from `finops.anomalies.score_series`, with the evidence it saw; it may start
    controls (the anomaly policy) that end when it clears. People say what it was: `feedback`. Periods
    marked expected or false alarm are left out of later baselines.
    """

    class Kind(models.TextChoices):
        SPIKE = "spike", "Spend spike"
        RUNAWAY_LOOP = "runaway_loop", "Call volume spike (runaway loop)"
        PROMPT_BLOAT = "prompt_bloat", "Tokens per call up (prompt bloat)"
        TIER_SHIFT = "tier_shift", "Model mix moved to a pricier tier"
        NEW_MODEL = "new_model", "Model never seen for this tenant"
        NEW_WORKFLOW = "new_workflow", "Workflow never seen for this tenant"

    class Status(models.TextChoices):
        OPEN = "open"
        CLEARED = "cleared"

    class Feedback(models.TextChoices):
        NONE = "", "No feedback"
        CONFIRMED = "confirmed", "Confirmed"
        EXPECTED = "expected", "Expected (planned activity)"
        FALSE_ALARM = "false_alarm", "False alarm"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    workflow = models.ForeignKey(Workflow, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    metric = models.CharField(max_length=20, help_text="The hourly series that was out of range.")
    subject_name = models.CharField(max_length=200, blank=True, help_text="The new model's name, for new_model.")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    opened_at = models.DateTimeField(help_text="First hour of the episode.")
    last_hour = models.DateTimeField(help_text="Latest hour scored while open.")
    cleared_at = models.DateTimeField(null=True, blank=True)
    observed = models.FloatField()
    expected = models.FloatField(null=True, blank=True)
    low = models.FloatField(null=True, blank=True)
    high = models.FloatField(null=True, blank=True)
    score = models.FloatField(null=True, blank=True)
    peak_score = models.FloatField(null=True, blank=True)
    evidence = models.JSONField(default=dict, blank=True, help_text="Unit and the hourly series around it.")
    alert = models.ForeignKey(Alert, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    controls = models.ManyToManyField(Control, blank=True, related_name="anomalies")
    feedback = models.CharField(max_length=12, choices=Feedback.choices, blank=True, default="")
    feedback_note = models.TextField(blank=True)
    feedback_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    feedback_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-opened_at", "-id"]
        indexes = [models.Index(fields=["tenant", "status", "opened_at"], name="anomaly_tenant_status")]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "workflow", "kind", "subject_name"],
                condition=models.Q(status="open"),
                name="anomaly_open_once",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.tenant_id}, {self.opened_at:%Y-%m-%d %H:%M})"


class LearnedSafetyFactor(models.Model):
    """A safety factor on tiktoken's input count, learned from settled reservations (budgets/estimates.py).

    Written by a periodic task (budgets.tasks.learn_safety_factors) that replaces every row at once;
    preflight reads them in process, checked by its state fingerprint (budgets/state.py), and never
    reads the reservations themselves. `tenant` NULL: the factor of all tenants for the family.
    """

    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    family = models.CharField(max_length=120, help_text="provider/model family, e.g. anthropic/claude-sonnet.")
    factor = models.DecimalField(max_digits=6, decimal_places=3)
    samples = models.PositiveIntegerField()
    learned_at = models.DateTimeField()

    class Meta:
        ordering = ["family", "tenant_id"]

    def __str__(self) -> str:
        return f"{self.family} x{self.factor}"
