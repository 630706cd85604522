"""What preflight reads on every call, cached in process and checked with ONE fingerprint query.

The catalog, the budgets, the controls, the workflows and the learned safety factors change rarely and are read by every
decision. Each is rebuilt when its part of the fingerprint (row count and last change) moves, so
an edit anywhere is seen by every process on its next request, and a decision costs a single small
query for all five instead of one query (and ORM overhead) each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import connection

from budgets.estimates import SafetyFactor, safety_factors_stored
from budgets.models import Control, LearnedSafetyFactor
from budgets.policy import control_params_usable
from budgets.services import windows
from budgets.services.windows import BudgetSnapshot, get_budgets
from finops import catalog as catalog_module
from finops.catalog import CatalogSnapshot, get_catalog
from finops.models import TenantWorkflowPolicy, Workflow
from finops.snapshots import FingerprintSnapshot

_CONTROLS = Control._meta.db_table
_WORKFLOWS = Workflow._meta.db_table
_POLICIES = TenantWorkflowPolicy._meta.db_table
_FACTORS = LearnedSafetyFactor._meta.db_table
_STATE_SQL = (
    "SELECT "
    + catalog_module.FINGERPRINT_SELECT
    + ", "
    + windows.FINGERPRINT_SELECT
    + f", (SELECT COUNT(*) FROM {_CONTROLS}), (SELECT MAX(updated_at) FROM {_CONTROLS})"
    + f", (SELECT COUNT(*) FROM {_WORKFLOWS}), (SELECT MAX(updated_at) FROM {_WORKFLOWS})"
    + f", (SELECT COUNT(*) FROM {_POLICIES}), (SELECT MAX(updated_at) FROM {_POLICIES})"
    + f", (SELECT COUNT(*) FROM {_FACTORS}), (SELECT MAX(learned_at) FROM {_FACTORS})"
)


@dataclass(frozen=True, slots=True)
class ControlEntry:
    pk: int
    kind: str
    tenant_id: int | None
    workflow_id: int | None
    environment: str
    tier_id: int | None
    priorities: tuple[str, ...]
    params: dict
    source: str
    reason: str
    starts_at: datetime
    ends_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now and (self.ends_at is None or self.ends_at > now)


@dataclass(frozen=True, slots=True)
class WorkflowEntry:
    pk: int
    slug: str
    priority: str
    approval_threshold_usd: Decimal | None
    # Tenants' own thresholds (TenantWorkflowPolicy), never above the workflow's.
    tenant_thresholds: dict[int, Decimal] = field(default_factory=dict)

    def threshold_for(self, tenant_id: int) -> tuple[Decimal | None, str]:
        """The approval threshold a run of this tenant meets, and whose it is ("tenant" or "workflow")."""
        own = self.tenant_thresholds.get(tenant_id)
        if own is not None and (self.approval_threshold_usd is None or own < self.approval_threshold_usd):
            return own, "tenant"
        return self.approval_threshold_usd, "workflow"


@dataclass
class PreflightState:
    catalog: CatalogSnapshot
    budgets: BudgetSnapshot
    controls: list[ControlEntry] = field(default_factory=list)
    workflows: dict[str, WorkflowEntry] = field(default_factory=dict)
    # Input safety factors learned by the periodic task (budgets/estimates.py), per (tenant or None, family).
    safety_factors: dict[tuple[int | None, str], SafetyFactor] = field(default_factory=dict)


_controls = FingerprintSnapshot(None, lambda fingerprint: _load_controls())
_workflows = FingerprintSnapshot(None, lambda fingerprint: _load_workflows())
_safety_factors = FingerprintSnapshot(None, lambda fingerprint: safety_factors_stored())
_last: dict = {"row": None, "checked": 0.0}


def state_changed(**kwargs) -> None:
    """Make this process check the fingerprint on its next decision (wired to the models' signals and
    called by services that change rows with queryset.update())."""
    _last["checked"] = 0.0


def preflight_state() -> PreflightState:
    """The cached state; the fingerprint is checked at most every PREFLIGHT_STATE_TTL_SECONDS.

    Within this process a change is seen at once (state_changed); another process's change is seen
    within the TTL. Hard limits are never stale: the reservation reads them from the window rows.
    """
    now = time.monotonic()
    row = _last["row"]
    if row is None or now - _last["checked"] >= settings.PREFLIGHT_STATE_TTL_SECONDS:
        with connection.cursor() as cursor:
            cursor.execute(_STATE_SQL)
            row = tuple(cursor.fetchone())
        _last["row"], _last["checked"] = row, now
    n_catalog, n_budgets = catalog_module.FINGERPRINT_COLUMNS, windows.FINGERPRINT_COLUMNS
    budgets_end = n_catalog + n_budgets
    return PreflightState(
        catalog=get_catalog(fingerprint=row[:n_catalog]),
        budgets=get_budgets(fingerprint=row[n_catalog:budgets_end]),
        controls=_controls.get(row[budgets_end : budgets_end + 2]),
        workflows=_workflows.get(row[budgets_end + 2 : budgets_end + 6]),
        safety_factors=_safety_factors.get(row[budgets_end + 6 : budgets_end + 8]),
    )


def _load_controls() -> list[ControlEntry]:
    """Controls that have not ended (scheduled ones too); whether one is in force is decided per call."""
    from django.db.models import Q
    from django.utils import timezone

    rows = Control.objects.filter(Q(ends_at__isnull=True) | Q(ends_at__gt=timezone.now()))
    return [
        ControlEntry(
            pk=c.pk,
            kind=c.kind,
            tenant_id=c.tenant_id,
            workflow_id=c.workflow_id,
            environment=c.environment,
            tier_id=c.tier_id,
            priorities=tuple(c.priorities or ()),
            params=control_params_usable(c.params, control_id=c.pk),
            source=c.source,
            reason=c.reason,
            starts_at=c.starts_at,
            ends_at=c.ends_at,
        )
        for c in rows
    ]


def _load_workflows() -> dict[str, WorkflowEntry]:
    own: dict[int, dict[int, Decimal]] = {}
    for tenant_id, workflow_id, threshold in TenantWorkflowPolicy.objects.values_list(
        "tenant_id", "workflow_id", "approval_threshold_usd"
    ):
        if threshold is not None:
            own.setdefault(workflow_id, {})[tenant_id] = threshold
    return {
        slug: WorkflowEntry(
            pk=pk, slug=slug, priority=priority, approval_threshold_usd=threshold, tenant_thresholds=own.get(pk, {})
        )
        for pk, slug, priority, threshold in Workflow.objects.values_list(
            "id", "slug", "priority", "approval_threshold_usd"
        )
    }
