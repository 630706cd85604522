"""The demo data set leaves one approval request of each kind waiting, each one a real request that a
demo approver can decide (not its requester), and a rerun opens no duplicates."""

from datetime import UTC, datetime

from budgets.models import ApprovalRequest
from finops.models import PromptVersion
from finops.services import seed

NOW = datetime(2026, 3, 4, 15, 37, 12, tzinfo=UTC)


def test_the_demo_has_one_request_of_each_kind_waiting(db):
    seed.catalog_seed()
    seed.demo_seed(days=2, now=NOW)
    seed.demo_seed(days=2, now=NOW)  # idempotent: no second request of any kind

    pending = ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING)
    assert sorted(pending.values_list("kind", flat=True)) == ["budget_increase", "prompt_change", "workflow_run"]
    assert {a.tenant.slug for a in pending} == {"northwind"}

    run = pending.get(kind="workflow_run")
    assert run.estimated_cost_nanos and run.estimated_tokens and run.rules["held_by"]
    increase = pending.get(kind="budget_increase")
    assert increase.requested_by.username == "northwind-admin" and increase.new_hard_limit
    change = pending.get(kind="prompt_change")
    version = change.prompt_version
    assert version.label == "assistant-v3" and version.status == PromptVersion.Status.UNDER_REVIEW
    active = PromptVersion.objects.get(label="assistant-v2")
    assert active.status == PromptVersion.Status.ACTIVE and version.input_tokens > active.input_tokens
    # The approver of the demo may decide every one of them: none was asked for by northwind-approver.
    assert not pending.filter(requested_by__username="northwind-approver").exists()
