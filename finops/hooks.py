"""Hooks through which a higher app takes part in finops' work without finops importing it.

Imports run budgets -> finops -> tenants (DESIGN.md section 3). Where finops must trigger work in
budgets (ingest charging budget windows, the demo data set seeding demo budgets, a grown prompt
opening a review), budgets registers a function here from its `AppConfig.ready()`, and finops calls
whatever is registered. With nothing registered finops works on its own: ingest stores and prices
records, the demo seeds spend only, and a new prompt version is active at once.

The hot path reads `usage_charger` as a plain module attribute: one lookup, no signal dispatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from finops.models import PromptVersion
    from tenants.scope import Actor


@dataclass(slots=True)
class Charge:
    """One newly stored usage record, as the app charging budget windows sees it."""

    tenant_id: int
    workflow_id: int | None
    environment: str
    tier_id: int | None
    occurred_at: datetime
    cost_nanos: int | None
    tokens: int
    reservation_id: str | None = None
    usage_id: int | None = None
    input_tokens: int = 0  # every prompt token (uncached + cache reads + writes): what preflight estimated


class UsageCharger(Protocol):
    """Counts a batch of new records against budgets; runs inside the ingest transaction."""

    def __call__(self, charges: list[Charge], *, now: datetime) -> None: ...


class DemoSeeder(Protocol):
    """Adds an app's part of the demo data set once finops has seeded its own (tenants, usage, rollups)."""

    def __call__(self, *, now: datetime) -> Any: ...


@dataclass(frozen=True, slots=True)
class PromptReview:
    """The request a prompt version waits on (or waited on), as finops shows it."""

    id: str
    status: str


class PromptReviewer(Protocol):
    """Opens and finds the reviews of prompt versions (budgets: `prompt_change` approval requests)."""

    def open(self, *, version: PromptVersion, reasons: list[str], actor: Actor) -> PromptReview:
        """Open a review of `version` (stored `under_review`), inside the registration's transaction."""
        ...

    def latest(self, *, version_ids: list[int]) -> dict[int, PromptReview]:
        """The newest review of each of these versions that has one."""
        ...


usage_charger: UsageCharger | None = None
demo_seeders: list[DemoSeeder] = []
prompt_reviewer: PromptReviewer | None = None


class EstimatesReport(Protocol):
    """What the models page shows about preflight's estimates (budgets: safety factors per provider family
    and how often calls of the scope's tenants settled above their hold)."""

    def __call__(self, *, scope: Any, providers: dict[str, list[str]]) -> dict[str, Any]: ...


estimates_report: EstimatesReport | None = None


def estimates_report_register(report: EstimatesReport) -> None:
    global estimates_report
    estimates_report = report


def usage_charger_register(charger: UsageCharger) -> None:
    """Make `charger` the one function ingest calls with every batch it stores.

    There is one slot: two apps charging the same records would count them twice. Registering the
    same function again (a second `ready()` call) is a no-op.
    """
    global usage_charger
    if usage_charger is not None and usage_charger is not charger:
        raise RuntimeError(f"A usage charger is already registered ({usage_charger!r}); cannot add {charger!r}.")
    usage_charger = charger


def demo_seeder_register(seeder: DemoSeeder) -> None:
    """Add `seeder` to the demo seeders, which `demo_seed` calls in registration order."""
    if seeder not in demo_seeders:
        demo_seeders.append(seeder)


def prompt_reviewer_register(reviewer: PromptReviewer) -> None:
    """Make `reviewer` the one that reviews grown prompt versions; one slot, like `usage_charger`."""
    global prompt_reviewer
    if prompt_reviewer is not None and prompt_reviewer is not reviewer:
        raise RuntimeError(f"A prompt reviewer is already registered ({prompt_reviewer!r}); cannot add {reviewer!r}.")
    prompt_reviewer = reviewer
