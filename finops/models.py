from django.conf import settings
from django.db import models

from tenants.models import ApiKey, Tenant


class Environment(models.TextChoices):
    DEV = "dev"
    STAGE = "stage"
    PROD = "prod"


class ModelTier(models.Model):
    """A price/quality class. Higher rank = more expensive (economy 1 < standard 2 < premium 3)."""

    slug = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    rank = models.PositiveSmallIntegerField(unique=True)

    class Meta:
        ordering = ["rank"]

    def __str__(self) -> str:
        return self.name


class LlmModel(models.Model):
    class Encoding(models.TextChoices):
        O200K = "o200k_base"
        CL100K = "cl100k_base"

    name = models.CharField(max_length=200, unique=True, help_text="Canonical model name, e.g. gpt-4o.")
    display_name = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=50, help_text="openai, anthropic, google, …")
    tier = models.ForeignKey(ModelTier, on_delete=models.PROTECT, related_name="models")
    aliases = models.JSONField(default=list, blank=True, help_text="Other exact names: snapshots, deployments.")
    match_pattern = models.CharField(
        max_length=300,
        blank=True,
        help_text="Regex (full match) for versioned or deployment names, e.g. gpt-4o-\\d{4}-\\d{2}-\\d{2}.",
    )
    encoding = models.CharField(
        max_length=32, choices=Encoding.choices, blank=True, help_text="tiktoken encoding; empty = nearest, estimated."
    )
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    downgrade_to = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The cheaper-tier model of the same provider that a downgrade control substitutes for this one.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider", "name"]
        verbose_name = "LLM model"

    def __str__(self) -> str:
        return self.name


class Channel(models.TextChoices):
    API = "api", "Provider API"
    VERTEX = "vertex", "Google Vertex AI"
    BEDROCK = "bedrock", "AWS Bedrock"
    AZURE = "azure", "Azure"


class ServiceTier(models.TextChoices):
    STANDARD = "standard"
    BATCH = "batch"
    FLEX = "flex"
    PRIORITY = "priority"


class ModelPrice(models.Model):
    """List price in USD per 1M tokens, in force from `effective_from` until the next row's start."""

    model = models.ForeignKey(LlmModel, on_delete=models.CASCADE, related_name="prices")
    effective_from = models.DateTimeField()
    input = models.DecimalField(max_digits=14, decimal_places=6, help_text="USD per 1M uncached input tokens.")
    cached_input = models.DecimalField(max_digits=14, decimal_places=6, help_text="USD per 1M cache-read tokens.")
    cache_write = models.DecimalField(max_digits=14, decimal_places=6, help_text="USD per 1M cache-write tokens.")
    output = models.DecimalField(max_digits=14, decimal_places=6, help_text="USD per 1M output tokens.")
    reasoning = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, help_text="USD per 1M reasoning tokens; empty = output."
    )
    # How providers bill beyond the five buckets (issue 11). `cache_write` above is the 5-minute write price.
    cache_write_1h = models.DecimalField(
        max_digits=14,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="USD per 1M tokens written to a 1-hour cache (Anthropic: 2x input); empty = the cache write price.",
    )
    channel = models.CharField(
        max_length=16,
        choices=Channel.choices,
        default=Channel.API,
        help_text="Where the model is called: the provider's own API or a cloud that resells it at its own price.",
    )
    service_tier = models.CharField(
        max_length=16,
        choices=ServiceTier.choices,
        default=ServiceTier.STANDARD,
        help_text="The service tier these prices are for; other tiers use their own row or a multiplier of standard.",
    )
    tier_multipliers = models.JSONField(
        default=dict,
        blank=True,
        help_text='On a standard row: tiers billed as a multiple of it, e.g. {"batch": "0.5", "priority": "2"}.',
    )
    long_context_threshold = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Input tokens (uncached + cache reads + writes) above which the whole request costs the "
        "long-context prices.",
    )
    long_context_input = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    long_context_cached_input = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    long_context_cache_write = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    long_context_cache_write_1h = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    long_context_output = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    long_context_reasoning = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    source = models.CharField(max_length=300, blank=True, help_text="Where the price was read.")
    price_taken_on = models.DateField(null=True, blank=True, help_text="Date the public list price was read.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "channel", "service_tier", "effective_from"], name="modelprice_unique_start"
            )
        ]

    def __str__(self) -> str:
        default = (self.channel, self.service_tier) == ("api", "standard")
        qualifier = "" if default else f" ({self.channel}, {self.service_tier})"
        return f"{self.model}{qualifier} from {self.effective_from:%Y-%m-%d}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from finops.pricing import SERVICE_TIERS, multiplier_to_permille

        errors: dict[str, str] = {}
        if not isinstance(self.tier_multipliers, dict):
            errors["tier_multipliers"] = "An object of service tier to multiplier."
        else:
            for tier, value in self.tier_multipliers.items():
                if tier not in SERVICE_TIERS or tier == "standard":
                    errors["tier_multipliers"] = f"Unknown service tier {tier!r}: batch, flex or priority."
                    break
                try:
                    multiplier_to_permille(value)
                except (ValueError, ArithmeticError):
                    errors["tier_multipliers"] = f"{tier}: {value!r} is not a multiplier with at most 3 decimals."
                    break
            if self.tier_multipliers and self.service_tier != "standard":
                errors["tier_multipliers"] = "Only a standard-tier row gives multipliers for other tiers."
        if self.long_context_threshold is not None and (
            self.long_context_input is None or self.long_context_output is None
        ):
            errors["long_context_input"] = "A long-context rule needs at least its input and output prices."
        if errors:
            raise ValidationError(errors)

    @property
    def reasoning_or_output(self):
        return self.output if self.reasoning is None else self.reasoning


class Workflow(models.Model):
    """A product feature that calls LLMs (ticket summary, chat assistant, …), shared across tenants."""

    class Priority(models.TextChoices):
        LOW = "low"
        NORMAL = "normal"
        HIGH = "high"
        CRITICAL = "critical"

    class Status(models.TextChoices):
        REGISTERED = "registered"
        AUTO_DISCOVERED = "auto_discovered"

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    owner = models.CharField(max_length=200, blank=True, help_text="Team or person responsible.")
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.NORMAL)
    default_tier = models.ForeignKey(ModelTier, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.REGISTERED)
    # Envelope: what a call is expected to use. Empty until someone sets it.
    expected_input_tokens_p50 = models.PositiveIntegerField(null=True, blank=True)
    expected_input_tokens_p95 = models.PositiveIntegerField(null=True, blank=True)
    expected_output_tokens_p50 = models.PositiveIntegerField(null=True, blank=True)
    expected_output_tokens_p95 = models.PositiveIntegerField(null=True, blank=True)
    expected_calls_per_day = models.PositiveIntegerField(null=True, blank=True)
    approval_threshold_usd = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, help_text="A run estimated above this needs approval."
    )
    prompt_review_threshold_pct = models.DecimalField(
        max_digits=6,
        decimal_places=2,
        default=10,
        help_text="Percent of input growth above which a new prompt version of a high-cost workflow is reviewed.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name or self.slug


class TenantWorkflowPolicy(models.Model):
    """A tenant's own rules for a shared workflow. Its approval threshold can only be stricter than the
    workflow's: preflight holds a run above the lower of the two (budgets.state reads both)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="tenant_policies")
    approval_threshold_usd = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="A run of this tenant estimated above this needs approval.",
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "workflow"], name="tenant_workflow_policy_once"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.workflow_id}: {self.approval_threshold_usd}"


class PromptVersion(models.Model):
    """A workflow's prompt as one tenant's service sends it, versioned. Its input tokens and cost per call
    are counted when it is registered, so that a version growing a high-cost workflow's input waits for
    a review (a `prompt_change` approval request) and the projection can be checked against usage."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        UNDER_REVIEW = "under_review"
        REJECTED = "rejected"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="prompt_versions")
    label = models.CharField(max_length=100, help_text="What usage records and preflights name, e.g. v7 or a date.")
    text = models.TextField(blank=True)
    messages = models.JSONField(null=True, blank=True, help_text="Chat messages, when the prompt is a conversation.")
    model_name = models.CharField(max_length=200, help_text="The model the tokens and cost were counted for.")
    encoding = models.CharField(max_length=32, blank=True)
    input_tokens = models.BigIntegerField()
    tokens_estimated = models.BooleanField(default=False)
    estimated_cost_per_call_nanos = models.BigIntegerField(null=True, blank=True)
    git_commit = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "workflow", "label"], name="promptversion_unique_label")
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} {self.label} ({self.status})"


class UsageRecord(models.Model):
    """One LLM call as reported by a service. Token buckets do not overlap; cost is nano-USD."""

    # This is the hottest table, so two costs per inserted row are avoided on purpose:
    # - single-column FK indexes where nothing reads by the column alone (tenant reads use the
    #   composite indexes that lead with tenant);
    # - database FK constraints on the catalog-side references: PostgreSQL checks each deferred
    #   constraint per row at commit, which took a third of ingest time (docs/performance.md).
    #   Ingest only writes ids it has just read in the same transaction, and Django's on_delete
    #   (PROTECT / SET_NULL) still guards deletes. The tenant reference keeps its constraint.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="usage_records", db_index=False)
    workflow = models.ForeignKey(
        Workflow,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    model = models.ForeignKey(
        LlmModel, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    model_name = models.CharField(max_length=200, help_text="The model name exactly as sent.")
    environment = models.CharField(max_length=8, choices=Environment.choices, default=Environment.PROD)
    input_tokens = models.BigIntegerField(default=0, help_text="Uncached input tokens.")
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0, help_text="Visible output tokens, reasoning excluded.")
    reasoning_tokens = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(null=True, blank=True, help_text="Cost in nano-USD; empty while unpriced.")
    priced = models.BooleanField(default=False)
    price = models.ForeignKey(
        ModelPrice,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    tokens_counted = models.BooleanField(default=False, help_text="Tokens counted here from text, not reported.")
    tokens_estimated = models.BooleanField(default=False, help_text="Counted with a non-native encoding.")
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    request_id = models.CharField(max_length=200)
    content_hash = models.CharField(max_length=32)
    reservation_id = models.UUIDField(null=True, blank=True)
    api_key = models.ForeignKey(
        ApiKey,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    tags = models.JSONField(default=dict, blank=True)
    # The PromptVersion label the call used, as sent; the database default keeps COPY of older shapes working.
    prompt_version = models.CharField(max_length=100, blank=True, default="", db_default="")
    # How the call was billed (issue 11); database defaults keep COPY of older shapes working.
    cache_write_1h_tokens = models.BigIntegerField(
        default=0, db_default=0, help_text="The part of cache_write_tokens written to a 1-hour cache."
    )
    service_tier = models.CharField(
        max_length=16, choices=ServiceTier.choices, default=ServiceTier.STANDARD, db_default=ServiceTier.STANDARD
    )
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.API, db_default=Channel.API)
    price_rule = models.CharField(
        max_length=100, blank=True, default="", db_default="", help_text="Which rule of the price row applied."
    )

    class Meta:
        # Also indexed on occurred_at alone (migration 0002): BRIN on PostgreSQL, which is enough to
        # rebuild a time range and costs almost nothing per insert; a B-tree elsewhere.
        constraints = [
            models.UniqueConstraint(fields=["tenant", "request_id"], name="usage_unique_tenant_request"),
        ]
        indexes = [
            models.Index(fields=["tenant", "occurred_at", "id"], name="usage_tenant_time"),
            models.Index(fields=["model_name"], condition=models.Q(priced=False), name="usage_unpriced"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} ({self.model_name})"


class UsageKey(models.Model):
    """Ingest's idempotency key on PostgreSQL: one row per stored usage record, (tenant, request_id) unique.

    The usage table is partitioned by month there (finops/services/partitions.py), and a unique constraint on a
    partitioned table must include the partition key, so (tenant, request_id, occurred_at) is all the
    usage table itself could promise: a retry carrying another occurred_at (a record sent without one
    gets the time of arrival) would be stored twice. This table is not partitioned and holds the key.
    Triggers on the usage table (migration 0016) write it: an insert adds the keys in the same statement
    (a duplicate raises the unique violation ingest already handles), a delete removes them, an update
    of a key column moves them, a TRUNCATE empties it. No code writes it; on SQLite it stays empty and
    the usage table's own unique constraint holds the key.
    """

    pk = models.CompositePrimaryKey("tenant_id", "request_id")
    tenant = models.ForeignKey(
        Tenant, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False, db_index=False
    )
    request_id = models.CharField(max_length=200)
    usage_id = models.BigIntegerField()
    occurred_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.request_id} -> {self.usage_id}"


class RollupMeasures(models.Model):
    """What every rollup row sums: calls, each token bucket, priced cost and unpriced calls (its fields
    are `finops.measures.MEASURES`, in that order: rollups insert and read them by that list)."""

    calls = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0, help_text="Sum over priced records, nano-USD.")
    unpriced_calls = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


class UsageRollup(RollupMeasures):
    """Usage summed per time bucket and (tenant, workflow, model, environment).

    Two grains: `day` for all time (what most pages read) and `hour` for the recent
    ROLLUP_HOURLY_RETENTION_DAYS. A bucket is always recomputed from raw records and replaced,
    never incremented, so recomputing it twice gives the same row. Dashboards read these rows,
    never raw usage.
    """

    class Grain(models.TextChoices):
        HOUR = "hour"
        DAY = "day"

    grain = models.CharField(max_length=4, choices=Grain.choices)
    bucket_start = models.DateTimeField()
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    workflow = models.ForeignKey(
        Workflow, null=True, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    model = models.ForeignKey(
        LlmModel, null=True, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    unknown_model_name = models.CharField(max_length=200, blank=True, help_text="Raw name when model is unknown.")
    environment = models.CharField(max_length=8, choices=Environment.choices)
    token_hist = models.JSONField(
        null=True, blank=True, help_text="Daily rows: cumulative calls below each edge of finops.envelopes.EDGES."
    )

    class Meta:
        indexes = [
            models.Index(fields=["grain", "tenant", "bucket_start"], name="rollup_tenant_time"),
            models.Index(fields=["grain", "bucket_start"], name="rollup_time"),
        ]

    def __str__(self) -> str:
        return f"{self.grain} {self.bucket_start:%Y-%m-%d %H:%M} tenant {self.tenant_id}"


class TenantWorkflowRollup(RollupMeasures):
    """Daily usage per (tenant, workflow): the daily `UsageRollup` rows summed over model and environment.

    A quarter of the daily rows. Totals and breakdowns by tenant or workflow read it instead of the
    daily rows; it is rewritten with them for each recomputed tenant-day (services/rollups.py).
    """

    bucket_start = models.DateTimeField()
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    workflow = models.ForeignKey(
        Workflow, null=True, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "bucket_start"], name="tw_rollup_tenant_time"),
            models.Index(fields=["bucket_start"], name="tw_rollup_time"),
        ]

    def __str__(self) -> str:
        return f"{self.bucket_start:%Y-%m-%d} tenant {self.tenant_id} workflow {self.workflow_id}"


class AllTenantsRollup(RollupMeasures):
    """Daily usage of every tenant together per (workflow, model, environment).

    What the all-tenant views read (operators' overview, explorer and spend API without a tenant):
    a fifth of the daily rows. A day is recomputed from that day's daily `UsageRollup` rows of all
    tenants whenever one tenant-day of it is, under a lock per day (services/rollups.py).
    """

    bucket_start = models.DateTimeField()
    workflow = models.ForeignKey(
        Workflow, null=True, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    model = models.ForeignKey(
        LlmModel, null=True, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    unknown_model_name = models.CharField(max_length=200, blank=True, help_text="Raw name when model is unknown.")
    environment = models.CharField(max_length=8, choices=Environment.choices)

    class Meta:
        indexes = [models.Index(fields=["bucket_start"], name="alltenants_rollup_time")]

    def __str__(self) -> str:
        return f"{self.bucket_start:%Y-%m-%d} workflow {self.workflow_id} model {self.model_id}"


class AllTenantsWorkflowRollup(RollupMeasures):
    """Daily usage of every tenant together per workflow: `AllTenantsRollup` summed over model and
    environment, a fifth of its rows. The all-tenant spend by workflow (the explorer's and the spend
    API's usual query) reads it; it is rewritten with `AllTenantsRollup`, under the same lock."""

    bucket_start = models.DateTimeField()
    workflow = models.ForeignKey(
        Workflow, null=True, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )

    class Meta:
        indexes = [models.Index(fields=["bucket_start"], name="alltenants_wf_rollup_time")]

    def __str__(self) -> str:
        return f"{self.bucket_start:%Y-%m-%d} workflow {self.workflow_id}"


class AllTenantsHourRollup(RollupMeasures):
    """Hourly usage of every tenant together: the hourly `UsageRollup` rows summed per hour, for the
    hourly retention window. The all-tenant variance series (overview, 14 days of hours) reads it:
    ~900,000 hourly rows at 100M records to sum, against 336 rows here. Rewritten per day with the other
    all-tenant tables, under the same lock."""

    bucket_start = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["bucket_start"], name="alltenants_hour_rollup_time")]

    def __str__(self) -> str:
        return f"{self.bucket_start:%Y-%m-%d %H:00}"


class TenantDayRollup(RollupMeasures):
    """Daily usage per tenant: one row per tenant-day, the daily rows summed. Totals of one tenant and
    spend by tenant read it; it is rewritten with `TenantWorkflowRollup`."""

    bucket_start = models.DateTimeField()
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)

    class Meta:
        indexes = [models.Index(fields=["tenant", "bucket_start"], name="tenantday_rollup_tenant_time")]

    def __str__(self) -> str:
        return f"{self.bucket_start:%Y-%m-%d} tenant {self.tenant_id}"


class AllTenantsModelRollup(RollupMeasures):
    """Daily usage of every tenant together per (model, environment): about 70 rows a day. The
    overview's chart by tier and environment reads it; it is rewritten with `AllTenantsRollup`."""

    bucket_start = models.DateTimeField()
    model = models.ForeignKey(
        LlmModel, null=True, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    unknown_model_name = models.CharField(max_length=200, blank=True, help_text="Raw name when model is unknown.")
    environment = models.CharField(max_length=8, choices=Environment.choices)

    class Meta:
        indexes = [models.Index(fields=["bucket_start"], name="alltenants_model_rollup_time")]

    def __str__(self) -> str:
        return f"{self.bucket_start:%Y-%m-%d} model {self.model_id} {self.environment}"


class UsageTagRollup(RollupMeasures):
    """Daily usage per tag key and value, with the dimensions tags are usually crossed with."""

    bucket_start = models.DateTimeField()
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    workflow = models.ForeignKey(
        Workflow, null=True, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    environment = models.CharField(max_length=8, choices=Environment.choices)
    tag_key = models.CharField(max_length=64)
    tag_value = models.CharField(max_length=256)

    class Meta:
        indexes = [models.Index(fields=["tag_key", "tenant", "bucket_start"], name="tagrollup_key_tenant_time")]

    def __str__(self) -> str:
        return f"{self.bucket_start:%Y-%m-%d} {self.tag_key}={self.tag_value}"


class RollupDirtyDay(models.Model):
    """A (tenant, UTC day) whose rollups must be recomputed: written with the usage that touched it."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    marked_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "day"], name="rollupdirty_unique")]

    def __str__(self) -> str:
        return f"tenant {self.tenant_id} {self.day}"


class EnvelopeProposal(models.Model):
    """An expected envelope for a workflow proposed from what every tenant used over the last weeks
    (finops.services.envelopes, a daily job); an operator accepts it on the workflow page or edits it."""

    class Status(models.TextChoices):
        PENDING = "pending"
        ACCEPTED = "accepted"
        SUPERSEDED = "superseded"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="envelope_proposals")
    values = models.JSONField(help_text="The proposed expected_* fields of the workflow.")
    observed = models.JSONField(default=dict, help_text="What was observed: percentiles, calls, cost per call.")
    basis_days = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow"], condition=models.Q(status="pending"), name="envelope_proposal_one_pending"
            )
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} {self.status} {self.created_at:%Y-%m-%d}"


class TenantWorkflowEnvelope(models.Model):
    """A tenant's own expected envelope for a shared workflow, set by its admins; the anomaly job reads it
    before the workflow's (a tenant whose calls are larger by design says so here)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="tenant_envelopes")
    expected_input_tokens_p50 = models.PositiveIntegerField(null=True, blank=True)
    expected_input_tokens_p95 = models.PositiveIntegerField(null=True, blank=True)
    expected_output_tokens_p50 = models.PositiveIntegerField(null=True, blank=True)
    expected_output_tokens_p95 = models.PositiveIntegerField(null=True, blank=True)
    expected_calls_per_day = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "workflow"], name="tenant_workflow_envelope_once")]

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.workflow_id} envelope"


class PendingJob(models.Model):
    """A background job recorded in the same transaction as the change that needs it (transactional
    outbox, finops.services.outbox): queued on commit, marked done by the task, re-queued by the beat
    sweeper while the broker was unreachable or a worker died, so the job is never lost."""

    task = models.CharField(max_length=200, help_text="The Celery task's registered name.")
    kwargs = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="A worker runs it since then.")
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["created_at"], condition=models.Q(done_at__isnull=True), name="pendingjob_open_by_age")
        ]

    def __str__(self) -> str:
        return f"{self.task} #{self.pk} {'done' if self.done_at else 'pending'}"
