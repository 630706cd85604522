"""Prompt versions: the ones a scope sees, the active version a new one is compared with, what a change
is projected to cost at the current call volume, and what calls naming each version actually cost."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, F, Q, QuerySet, Sum
from django.utils import timezone

from finops.measures import COST
from finops.models import PromptVersion, TenantWorkflowRollup, UsageRecord, Workflow
from finops.selectors.spend_totals import spend_total
from tenants.scope import TenantScope

RECENT_DAYS = 30  # "the current call volume" and "the last 30 days of spend" both mean this window


def prompt_versions_visible(*, scope: TenantScope) -> QuerySet[PromptVersion]:
    return scope.filter(
        PromptVersion.objects.select_related("tenant", "workflow", "created_by", "created_by_key")
    ).order_by("-created_at", "-id")


def prompt_versions_of(*, scope: TenantScope, workflow: Workflow) -> QuerySet[PromptVersion]:
    """The workflow's versions of every tenant the scope sees, newest first."""
    return prompt_versions_visible(scope=scope).filter(workflow=workflow)


def prompt_version_get(*, scope: TenantScope, workflow: Workflow, label: str) -> PromptVersion | None:
    """The version with this label if the scope sees it; another tenant's answers like a missing one.
    A scope spanning several tenants that each have the label gets the first tenant's (pages link with
    `?tenant=`)."""
    return prompt_versions_of(scope=scope, workflow=workflow).filter(label=label).order_by("tenant_id").first()


def prompt_version_baseline(
    *, scope: TenantScope, workflow: Workflow, before: PromptVersion | None = None
) -> PromptVersion | None:
    """The active version a version is compared with: the tenant's newest active one of the workflow
    (registered before `before`, when given). The scope must be about one tenant, or `before` names it."""
    qs = prompt_versions_of(scope=scope, workflow=workflow).filter(status=PromptVersion.Status.ACTIVE)
    if before is not None:
        qs = qs.filter(tenant_id=before.tenant_id).filter(
            Q(created_at__lt=before.created_at) | Q(created_at=before.created_at, id__lt=before.pk)
        )
    elif scope.tenant is None:
        raise ValueError("prompt_version_baseline needs a scope about one tenant or a version")
    return qs.first()


def prompt_version_text(version: PromptVersion) -> str:
    """The prompt as lines a person reads and diffs: the text, or each chat message under its role."""
    if version.messages is None:
        return version.text
    blocks = []
    for message in version.messages if isinstance(version.messages, list) else []:
        if not isinstance(message, dict):
            continue
        head = f"[{message.get('role', '?')}" + (f" {message['name']}" if message.get("name") else "") + "]"
        content = message.get("content")
        if isinstance(content, list):
            parts = [
                p.get("text", "") if isinstance(p, dict) and p.get("type") == "text" else f"<{p.get('type', '?')} part>"
                for p in content
                if isinstance(p, dict)
            ]
            content = "\n".join(parts)
        extra = {k: v for k, v in message.items() if k not in ("role", "name", "content")}
        lines = [head, content if isinstance(content, str) else ""]
        if extra:
            lines.append(json.dumps(extra, ensure_ascii=False, sort_keys=True))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# --- the projection ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptProjection:
    """A version against the active one it replaces, at the tenant's current call volume."""

    old_tokens: int | None
    new_tokens: int
    old_cost_nanos: int | None
    new_cost_nanos: int | None
    calls_per_month: int
    calls_basis: str  # "usage" (the last 30 days), "envelope" (expected calls per day x 30) or "none"

    @property
    def token_change(self) -> int | None:
        return None if self.old_tokens is None else self.new_tokens - self.old_tokens

    @property
    def token_change_fraction(self) -> Decimal | None:
        if self.old_tokens is None or self.old_tokens == 0:
            return None
        return Decimal(self.new_tokens - self.old_tokens) / Decimal(self.old_tokens)

    @property
    def cost_change_per_call_nanos(self) -> int | None:
        if self.old_cost_nanos is None or self.new_cost_nanos is None:
            return None
        return self.new_cost_nanos - self.old_cost_nanos

    @property
    def monthly_cost_change_nanos(self) -> int | None:
        per_call = self.cost_change_per_call_nanos
        return None if per_call is None else per_call * self.calls_per_month


def workflow_calls_per_month(*, scope: TenantScope, workflow: Workflow, now: datetime) -> tuple[int, str]:
    """The scope's calls of the workflow over the last 30 days (daily rollups), or, without any, the
    workflow's envelope (expected calls per day and tenant x 30); (0, "none") without either."""
    start = (now - timedelta(days=RECENT_DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
    calls = (
        scope.filter(TenantWorkflowRollup.objects.filter(workflow=workflow, bucket_start__gte=start)).aggregate(
            calls=Sum("calls")
        )["calls"]
        or 0
    )
    if calls:
        return int(calls), "usage"
    if workflow.expected_calls_per_day:
        return workflow.expected_calls_per_day * RECENT_DAYS, "envelope"
    return 0, "none"


def prompt_projection(
    *,
    scope: TenantScope,
    workflow: Workflow,
    baseline: PromptVersion | None,
    new_tokens: int,
    new_cost_nanos: int | None,
    now: datetime | None = None,
) -> PromptProjection:
    calls, basis = workflow_calls_per_month(scope=scope, workflow=workflow, now=now or timezone.now())
    return PromptProjection(
        old_tokens=baseline.input_tokens if baseline is not None else None,
        new_tokens=new_tokens,
        old_cost_nanos=baseline.estimated_cost_per_call_nanos if baseline is not None else None,
        new_cost_nanos=new_cost_nanos,
        calls_per_month=calls,
        calls_basis=basis,
    )


def workflow_spend_share(*, scope: TenantScope, workflow: Workflow, now: datetime) -> tuple[int, int]:
    """(the workflow's spend, the scope's whole spend) over the last 30 days, nano-USD, exact."""
    start = now - timedelta(days=RECENT_DAYS)
    whole = spend_total(scope=scope, start=start, end=now, metric=COST)
    if not whole:
        return 0, 0
    return spend_total(scope=scope, start=start, end=now, metric=COST, workflow_id=workflow.pk), whole


# --- what usage naming a version cost ---------------------------------------------------------------


@dataclass(frozen=True)
class PromptVersionUsage:
    tenant_id: int
    label: str
    calls: int
    priced_calls: int
    cost_nanos: int
    input_tokens: int  # everything sent: uncached, cache reads and cache writes

    @property
    def cost_per_call_nanos(self) -> int | None:
        return self.cost_nanos // self.priced_calls if self.priced_calls else None

    @property
    def input_tokens_per_call(self) -> int | None:
        return self.input_tokens // self.calls if self.calls else None


def prompt_version_usage(
    *, scope: TenantScope, workflow: Workflow, now: datetime | None = None
) -> dict[tuple[int, str], PromptVersionUsage]:
    """Calls of the workflow over the last 30 days by (tenant, prompt version they named).

    Rollups carry no prompt version, so this one reads raw usage records: an aggregate over the
    `usage_tenant_time` index, limited to the scope's tenants, the workflow and the last 30 days.
    Records naming no version are left out.
    """
    since = (now or timezone.now()) - timedelta(days=RECENT_DAYS)
    rows = (
        scope.filter(UsageRecord.objects.filter(workflow=workflow, occurred_at__gte=since))
        .exclude(prompt_version="")
        .order_by()
        .values("tenant_id", "prompt_version")
        .annotate(
            n=Count("id"),
            priced_n=Count("id", filter=Q(priced=True)),
            cost=Sum("cost_nanos"),
            sent=Sum(F("input_tokens") + F("cached_input_tokens") + F("cache_write_tokens")),
        )
    )
    return {
        (r["tenant_id"], r["prompt_version"]): PromptVersionUsage(
            tenant_id=r["tenant_id"],
            label=r["prompt_version"],
            calls=r["n"],
            priced_calls=r["priced_n"],
            cost_nanos=int(r["cost"] or 0),
            input_tokens=int(r["sent"] or 0),
        )
        for r in rows
    }
