"""What the demo data set holds: its tenants, workflows, people, keys and the shape of their traffic.

Tabular data only; `demo.py` creates the rows and `demo_usage.py` draws the usage from these specs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from finops.models import Environment
from tenants.models import Membership

DEMO_TENANT_SLUG = "northwind"
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password"  # noqa: S105 - the demo's published password
# Fixed on purpose so the README and scripts can use them. They are public: never seed a real deployment.
DEMO_API_KEY = "tsk_de0000000a_demo-tenant-key-northwind-public-not-secret"
DEMO_PLATFORM_KEY = "tsk_de0000000b_demo-platform-key-public-on-purpose-0000000"
DEMO_REQUEST_PREFIX = "demo-"
DEMO_UNKNOWN_MODEL = "mistral-large-2411"

SPIKE_TENANT = DEMO_TENANT_SLUG
SPIKE_WORKFLOW = "chat-assistant"
RELEASE_DAYS_AGO = 12


@dataclass(frozen=True)
class WorkflowSpec:
    slug: str
    name: str
    owner: str
    priority: str
    tier: str
    models: tuple[tuple[str, float], ...]  # name as the service sends it, weight
    calls_per_day: int  # weekday calls of one tenant at scale 1.0
    input_p50: int
    input_p95: int
    output_p50: int
    output_p95: int
    approval_threshold_usd: str | None = None
    envelope: bool = True  # False: the owners have not set the envelope yet
    cache_share: float = 0.0  # share of calls whose prompt prefix is served from (or written to) a cache
    batch: bool = False  # nightly job: runs 01:00-05:00 local time, weekends included
    flags: tuple[str, ...] = ("default",)
    flags_after_release: tuple[str, ...] = ()


@dataclass(frozen=True)
class TenantSpec:
    slug: str
    name: str
    external_id: str
    region: str
    utc_offset: int  # hours; shifts the business-day curve
    scale: float
    workflows: tuple[str, ...]
    models: dict[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)  # per-workflow override


# The demo's customers and features. Tabular data: kept aligned by hand.
# fmt: off
WORKFLOWS = (
    WorkflowSpec(
        slug="support-ticket-summary", name="Support ticket summary", owner="support-platform",
        priority="normal", tier="economy",
        models=(("gpt-4.1-mini-2025-04-14", 0.7), ("claude-haiku-4-5-20251001", 0.3)),
        calls_per_day=80, input_p50=1800, input_p95=5200, output_p50=220, output_p95=480,
        approval_threshold_usd="0.05", cache_share=0.3, flags=("summary_v2", "summary_v2", "summary_v1"),
    ),
    WorkflowSpec(
        slug="chat-assistant", name="In-app chat assistant", owner="assistant-team",
        priority="high", tier="standard",
        models=(("claude-sonnet-4-5-20250929", 0.6), ("gpt-5-mini", 0.4)),
        calls_per_day=90, input_p50=3500, input_p95=12000, output_p50=450, output_p95=1400,
        approval_threshold_usd="0.50", cache_share=0.7,
        flags=("assistant_v2",), flags_after_release=("assistant_v3",),
    ),
    WorkflowSpec(
        slug="contract-review", name="Contract review", owner="legal-ai",
        priority="critical", tier="premium",
        models=(("claude-opus-4-1-20250805", 0.5), ("gpt-5", 0.5)),
        calls_per_day=10, input_p50=24000, input_p95=90000, output_p50=1800, output_p95=5000,
        approval_threshold_usd="2.00", cache_share=0.2, flags=("clause_extraction", "redline"),
    ),
    WorkflowSpec(
        slug="code-review-bot", name="Pull request review bot", owner="developer-experience",
        priority="high", tier="premium",
        models=(("o3", 0.6), ("claude-sonnet-4-5", 0.4)),
        calls_per_day=30, input_p50=9000, input_p95=40000, output_p50=900, output_p95=3000,
        approval_threshold_usd="1.00", cache_share=0.4, flags=("pr_review", "security_scan"),
    ),
    WorkflowSpec(
        slug="email-drafting", name="Email reply drafting", owner="growth",
        priority="normal", tier="economy",
        models=(("gpt-4o-mini", 0.6), ("gemini-2.0-flash", 0.4)),
        calls_per_day=60, input_p50=800, input_p95=2000, output_p50=300, output_p95=700,
        approval_threshold_usd="0.02", flags=("tone_formal", "tone_friendly"),
    ),
    WorkflowSpec(
        slug="sql-copilot", name="SQL copilot", owner="data-platform",
        priority="normal", tier="standard",
        models=(("gpt-4.1", 0.7), ("o4-mini-2025-04-16", 0.3)),
        calls_per_day=40, input_p50=2500, input_p95=8000, output_p50=350, output_p95=1200,
        approval_threshold_usd="0.20", cache_share=0.5, flags=("schema_rag",),
    ),
    WorkflowSpec(
        slug="meeting-notes", name="Meeting notes", owner="collaboration",
        priority="low", tier="standard",
        models=(("gemini-2.5-flash", 0.7), ("claude-3-5-haiku-latest", 0.3)),
        calls_per_day=20, input_p50=7000, input_p95=20000, output_p50=600, output_p95=1500,
        approval_threshold_usd="0.10", cache_share=0.1, flags=("transcript_v1",),
    ),
    WorkflowSpec(
        slug="catalog-enrichment", name="Nightly catalog enrichment", owner="commerce-data",
        priority="low", tier="economy",
        models=(("gemini-2.5-flash-lite", 0.8), ("gpt-4.1-nano", 0.2)),
        calls_per_day=160, input_p50=1200, input_p95=3000, output_p50=250, output_p95=600,
        cache_share=0.6, batch=True, flags=("attributes", "seo_copy"),
    ),
    WorkflowSpec(
        slug="review-sentiment", name="Review sentiment tagging", owner="insights",
        priority="low", tier="economy",
        models=(("gpt-5-nano", 0.5), ("gemini-2.5-flash-lite", 0.5)),
        calls_per_day=120, input_p50=400, input_p95=1200, output_p50=30, output_p95=80,
        approval_threshold_usd="0.01", flags=("sentiment_v1",),
    ),
    WorkflowSpec(
        slug="research-agent", name="Account research agent", owner="sales-ai",
        priority="high", tier="premium",
        models=(("gemini-2.5-pro", 0.6), ("gpt-5", 0.4)),
        calls_per_day=6, input_p50=30000, input_p95=110000, output_p50=2500, output_p95=8000,
        envelope=False, cache_share=0.3, flags=("agent_beta",),
    ),
)

TENANTS = (
    TenantSpec(
        slug=DEMO_TENANT_SLUG, name="Northwind Traders", external_id="cus_NW482113",
        region="us-east-1", utc_offset=-5, scale=1.5,
        workflows=("support-ticket-summary", "chat-assistant", "email-drafting", "sql-copilot", "meeting-notes",
                   "review-sentiment"),
    ),
    TenantSpec(
        slug="initech", name="Initech", external_id="cus_IN100237",
        region="us-west-2", utc_offset=-8, scale=1.0,
        workflows=("code-review-bot", "sql-copilot", "chat-assistant", "research-agent", "meeting-notes"),
        # An engineer trying a model the catalog does not know yet: stored unpriced, never priced at zero.
        models={"sql-copilot": (("gpt-4.1", 0.62), ("o4-mini-2025-04-16", 0.3), (DEMO_UNKNOWN_MODEL, 0.08))},
    ),
    TenantSpec(
        slug="umbrella-health", name="Umbrella Health", external_id="cus_UH730045",
        region="eu-central-1", utc_offset=1, scale=0.8,
        workflows=("contract-review", "support-ticket-summary", "meeting-notes", "email-drafting"),
        # Healthcare: Anthropic models through Amazon Bedrock only, sent with Bedrock model ids.
        models={
            "contract-review": (("anthropic.claude-opus-4-1-20250805-v1:0", 1.0),),
            "support-ticket-summary": (("anthropic.claude-haiku-4-5-20251001-v1:0", 1.0),),
            "meeting-notes": (("anthropic.claude-3-5-haiku-20241022-v1:0", 1.0),),
            "email-drafting": (("anthropic.claude-3-5-haiku-20241022-v1:0", 1.0),),
        },
    ),
    TenantSpec(
        slug="stark-logistics", name="Stark Logistics", external_id="cus_SL559102",
        region="us-east-1", utc_offset=-6, scale=1.2,
        workflows=("catalog-enrichment", "support-ticket-summary", "chat-assistant", "review-sentiment",
                   "sql-copilot", "email-drafting", "contract-review"),
    ),
    TenantSpec(
        slug="wayne-media", name="Wayne Media", external_id="cus_WM204871",
        region="eu-west-1", utc_offset=0, scale=0.7,
        workflows=("email-drafting", "review-sentiment", "meeting-notes", "research-agent", "chat-assistant"),
    ),
    TenantSpec(
        slug="hooli-retail", name="Hooli Retail", external_id="cus_HR918334",
        region="ap-southeast-2", utc_offset=10, scale=0.9,
        workflows=("catalog-enrichment", "review-sentiment", "chat-assistant", "support-ticket-summary",
                   "code-review-bot"),
    ),
)
# fmt: on

# (username, tenant, role); every demo user signs in with DEMO_PASSWORD.
DEMO_MEMBERS = (
    ("northwind-viewer", DEMO_TENANT_SLUG, Membership.Role.VIEWER),
    ("northwind-approver", DEMO_TENANT_SLUG, Membership.Role.APPROVER),
    ("northwind-admin", DEMO_TENANT_SLUG, Membership.Role.ADMIN),
    ("initech-admin", "initech", Membership.Role.ADMIN),
    ("stark-approver", "stark-logistics", Membership.Role.APPROVER),
    ("umbrella-viewer", "umbrella-health", Membership.Role.VIEWER),
)

# Reasoning tokens per visible output token (low, high) for the models that think before answering.
REASONING = {
    "o3": (0.8, 3.0),
    "o3-mini": (0.6, 2.5),
    "o4-mini": (0.6, 2.5),
    "gpt-5.1": (0.2, 1.5),
    "gpt-5": (0.3, 2.0),
    "gpt-5-mini": (0.3, 1.5),
    "gpt-5-nano": (0.2, 1.0),
    "gemini-3-pro-preview": (0.3, 1.5),
    "gemini-2.5-pro": (0.3, 1.5),
    "gemini-2.5-flash": (0.1, 0.8),
}


def _normalised(weights: tuple[float, ...]) -> tuple[float, ...]:
    total = sum(weights)
    return tuple(w / total for w in weights)


# Share of a day's calls per local hour: a business day, and a nightly batch window.
DAY_CURVE = _normalised(
    (0.10, 0.07, 0.05, 0.05, 0.07, 0.12, 0.25, 0.55, 0.95, 1.15, 1.20, 1.15,
     0.95, 1.05, 1.15, 1.10, 0.95, 0.75, 0.50, 0.38, 0.30, 0.24, 0.18, 0.13)
)  # fmt: skip
BATCH_CURVE = _normalised(tuple(1.0 if 1 <= h <= 4 else 0.0 for h in range(24)))
WEEKEND_FACTOR = 0.4
ENVIRONMENTS = (Environment.PROD.value, Environment.STAGE.value, Environment.DEV.value)
ENVIRONMENT_CUM = (0.86, 0.97, 1.0)
