"""The control ladder: budget evaluation starts each rung's control at its level, preflight applies it,
hysteresis keeps it from flapping, and controls end (audited) when the window resets."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from budgets.models import Control, ControlKind, HardAction, Period
from budgets.periods import period_bounds
from budgets.services.ladder import budget_levels, budgets_evaluate
from budgets.services.windows import windows_open
from finops.models import Workflow
from finops.pricing import NANOS_PER_USD
from tenants.models import AuditEvent

from ..factories import WorkflowFactory
from .factories import BudgetFactory

USD = NANOS_PER_USD
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)  # a month window from Nov 1 to Dec 1 (UTC)


def _window(budget, now, spent):
    start, end = period_bounds(budget.period, budget.time_zone, now)
    window = windows_open([(budget, start, end)])[(budget.pk, start)]
    window.spent = spent
    window.save(update_fields=["spent"])
    return window


def _active(budget, now):
    return list(
        Control.objects.filter(budget=budget, starts_at__lte=now, ends_at__gt=now)
        .order_by("rung")
        .values_list("rung", "kind")
    )


def _ask(api, **body):
    body.setdefault("input_tokens", 1000)
    body.setdefault("max_output_tokens", 4000)
    response = api.client.post("/api/v1/preflight", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def workflows(db):
    return {
        "low": WorkflowFactory(slug="batch-tagging", priority=Workflow.Priority.LOW),
        "normal": WorkflowFactory(slug="ticket-summary", priority=Workflow.Priority.NORMAL),
        "critical": WorkflowFactory(slug="fraud-check", priority=Workflow.Priority.CRITICAL),
    }


# --- Each rung of the default policy, applied by preflight through the API --------------------------


def test_soft_limit_caps_output_of_low_and_normal_workflows(api_a, tenant_a, catalog, workflows):
    budget = BudgetFactory(tenant=tenant_a, name="Acme monthly", soft_limit=500 * USD)
    now = timezone.now()
    _window(budget, now, spent=int(515.20 * USD))

    summary = budgets_evaluate(now=now)

    assert summary["controls_started"] == 1
    control = Control.objects.get(budget=budget)
    assert (control.kind, control.rung, control.priorities) == (
        ControlKind.CAP_OUTPUT_TOKENS,
        "soft-100-cap_output_tokens",
        ["low", "normal"],
    )
    assert control.reason == "Budget 'Acme monthly' at 103% of its $500.00 soft limit ($515.20 spent)"
    assert control.tenant == tenant_a and control.source == Control.Source.BUDGET
    assert control.ends_at == control.window.ends_at

    capped = _ask(api_a, model="gpt-4o", workflow="ticket-summary")
    assert capped["max_output_tokens"] == 1024
    assert any("Output capped at 1,024 tokens" in r for r in capped["reasons"])
    critical = _ask(api_a, model="gpt-4o", workflow="fraud-check")
    assert critical["max_output_tokens"] == 4000


def test_forecast_over_hard_downgrades_low_priority_one_tier(api_a, tenant_a, catalog, workflows):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=100 * USD)
    start, _ = period_bounds(budget.period, budget.time_zone, timezone.now())
    # One second into the window the run rate counts a tenth of the window as elapsed: 20% spent
    # forecasts about 220% of the hard limit by the period end, while spent is far below 95%.
    at = start + timedelta(seconds=1)
    window = _window(budget, at, spent=20 * USD)
    assert 200 < budget_levels(budget, window, now=at).forecast_pct < 230

    budgets_evaluate(now=at)

    assert _active(budget, timezone.now()) == [("forecast-100-downgrade_tier", ControlKind.DOWNGRADE_TIER)]
    low = _ask(api_a, model="o3", workflow="batch-tagging")
    assert low["decision"] == "allow"
    assert low["model"] == "gpt-4o"
    assert any(r.startswith("Downgraded o3 to gpt-4o: Budget") for r in low["reasons"])
    no_substitute = _ask(api_a, model="gemini-2.5-flash-lite", workflow="batch-tagging")
    assert no_substitute["model"] == "gemini-2.5-flash-lite"
    assert any("marks no cheaper substitute for gemini-2.5-flash-lite" in r for r in no_substitute["reasons"])
    normal = _ask(api_a, model="o3", workflow="ticket-summary")
    assert normal["model"] == "o3"


def test_95_percent_of_hard_compresses_context_and_requires_approval(api_a, tenant_a, catalog, workflows):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=100 * USD)
    now = timezone.now()
    _window(budget, now, spent=96 * USD)

    budgets_evaluate(now=now)

    rungs = dict(_active(budget, now))
    assert rungs["hard-95-compress_context"] == ControlKind.COMPRESS_CONTEXT
    assert rungs["hard-95-require_approval"] == ControlKind.REQUIRE_APPROVAL
    assert "hard-100-hard_action" not in rungs
    out = _ask(api_a, model="gpt-4o", workflow="ticket-summary", max_output_tokens=100)
    assert out["decision"] == "needs_approval"
    assert out["compress_context"] is True
    assert out["target_input_tokens"] == 500
    assert out["approval_id"] and out["reservation_id"] is None


def test_hard_limit_starts_the_budgets_hard_action(api_a, tenant_a, catalog, workflows):
    budget = BudgetFactory(tenant=tenant_a, name="Acme hard", hard_limit=100 * USD)
    now = timezone.now()
    _window(budget, now, spent=100 * USD)

    budgets_evaluate(now=now)

    assert ("hard-100-hard_action", ControlKind.DENY) in _active(budget, now)
    out = _ask(api_a, model="gpt-4o", workflow="fraud-check")
    assert out["decision"] == "deny"
    assert any(r.startswith("Denied by a control: Budget 'Acme hard' at 100%") for r in out["reasons"])


@pytest.mark.parametrize(
    "hard_action,kind",
    [(HardAction.REQUIRE_APPROVAL, ControlKind.REQUIRE_APPROVAL), (HardAction.DOWNGRADE, ControlKind.DOWNGRADE_TIER)],
)
def test_hard_action_rung_follows_the_budgets_hard_action(tenant_a, hard_action, kind):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=100 * USD, hard_action=hard_action)
    _window(budget, NOW, spent=100 * USD)

    budgets_evaluate(now=NOW)

    assert ("hard-100-hard_action", kind) in _active(budget, NOW)


def test_other_tenants_calls_are_untouched_by_a_tenant_budgets_controls(api_b, tenant_a, catalog, workflows):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=100 * USD)
    now = timezone.now()
    _window(budget, now, spent=100 * USD)
    budgets_evaluate(now=now)

    out = _ask(api_b, model="gpt-4o", workflow="ticket-summary")
    assert out["decision"] == "allow" and out["controls"] == []


# --- Levels, once per rung, hysteresis, window reset ------------------------------------------------


def test_rung_starts_at_its_level_and_only_once_per_window(tenant_a):
    budget = BudgetFactory(tenant=tenant_a, soft_limit=100 * USD)
    _window(budget, NOW, spent=int(99.99 * USD))
    budgets_evaluate(now=NOW)
    assert _active(budget, NOW) == []

    _window(budget, NOW, spent=100 * USD)
    budgets_evaluate(now=NOW)
    budgets_evaluate(now=NOW + timedelta(minutes=1))

    assert Control.objects.filter(budget=budget).count() == 1


def test_no_flapping_around_a_threshold(tenant_a):
    budget = BudgetFactory(tenant=tenant_a, soft_limit=100 * USD)
    window = _window(budget, NOW, spent=101 * USD)
    budgets_evaluate(now=NOW)
    control = Control.objects.get(budget=budget)

    # Wobbling just under the threshold (above 95%, the rung's 100% less 5% hysteresis): stays on.
    for minutes, spent in [(1, 99), (2, 101), (3, 97), (30, 96)]:
        _window(budget, NOW, spent=spent * USD)
        budgets_evaluate(now=NOW + timedelta(minutes=minutes))
        assert _active(budget, NOW + timedelta(minutes=minutes)) == [
            ("soft-100-cap_output_tokens", "cap_output_tokens")
        ]
    # Below 95% but the control has run less than CONTROL_MIN_SECONDS (15 minutes): stays on.
    fresh = BudgetFactory(tenant=tenant_a, soft_limit=100 * USD)
    _window(fresh, NOW, spent=100 * USD)
    budgets_evaluate(now=NOW)
    _window(fresh, NOW, spent=90 * USD)
    budgets_evaluate(now=NOW + timedelta(minutes=14))
    assert len(_active(fresh, NOW + timedelta(minutes=14))) == 1

    # Below 95% after 15 minutes (a reconciliation took spend down): ends, with the numbers.
    _window(budget, NOW, spent=94 * USD)
    ended_at = NOW + timedelta(minutes=31)
    summary = budgets_evaluate(now=ended_at)
    control.refresh_from_db()
    assert control.ends_at == ended_at
    assert "at 94% of its $100.00 soft limit" in control.ended_reason
    assert "below 95%" in control.ended_reason
    assert summary["controls_ended"] >= 1
    assert Control.objects.filter(window=window).count() == 1

    # Back at 96%: under the threshold, so no new control; at 100% a new one starts.
    _window(budget, NOW, spent=96 * USD)
    budgets_evaluate(now=ended_at + timedelta(minutes=1))
    assert _active(budget, ended_at + timedelta(minutes=1)) == []
    _window(budget, NOW, spent=100 * USD)
    budgets_evaluate(now=ended_at + timedelta(minutes=2))
    assert Control.objects.filter(window=window).count() == 2


def test_controls_end_when_the_window_resets_and_both_ends_are_audited(tenant_a):
    budget = BudgetFactory(tenant=tenant_a, soft_limit=100 * USD, period=Period.MONTH, time_zone="Europe/Berlin")
    _window(budget, NOW, spent=120 * USD)
    budgets_evaluate(now=NOW)
    control = Control.objects.get(budget=budget)
    # Berlin's December starts at 23:00 UTC on Nov 30.
    assert control.ends_at == datetime(2026, 11, 30, 23, tzinfo=UTC)
    start = AuditEvent.objects.get(action="control.start", target_id=str(control.pk))
    assert start.tenant == tenant_a and start.after["reason"] == control.reason

    next_month = datetime(2026, 11, 30, 23, 1, tzinfo=UTC)
    summary = budgets_evaluate(now=next_month)

    control.refresh_from_db()
    assert control.end_audited is True
    assert control.ended_reason == "The budget window ended."
    assert summary["lapsed_audited"] == 1
    end = AuditEvent.objects.get(action="control.end", target_id=str(control.pk))
    assert end.after["ended_at"] == "2026-11-30T23:00:00+00:00"
    # The new window starts empty: nothing is active and nothing new started.
    assert _active(budget, next_month) == []
    assert Control.objects.filter(budget=budget).count() == 1
    # Running again audits nothing twice.
    assert budgets_evaluate(now=next_month + timedelta(minutes=1))["lapsed_audited"] == 0
    assert AuditEvent.objects.filter(action="control.end", target_id=str(control.pk)).count() == 1


def test_early_end_is_audited_with_its_reason(tenant_a):
    budget = BudgetFactory(tenant=tenant_a, soft_limit=100 * USD)
    _window(budget, NOW, spent=100 * USD)
    budgets_evaluate(now=NOW)
    control = Control.objects.get(budget=budget)
    _window(budget, NOW, spent=50 * USD)
    budgets_evaluate(now=NOW + timedelta(hours=1))

    end = AuditEvent.objects.get(action="control.end", target_id=str(control.pk))
    assert "at 50%" in end.after["reason"]


def test_deactivated_budget_ends_its_controls(tenant_a):
    budget = BudgetFactory(tenant=tenant_a, soft_limit=100 * USD)
    _window(budget, NOW, spent=100 * USD)
    budgets_evaluate(now=NOW)
    budget.is_active = False
    budget.save()

    budgets_evaluate(now=NOW + timedelta(minutes=1))

    control = Control.objects.get(budget=budget)
    assert control.ends_at == NOW + timedelta(minutes=1)
    assert control.ended_reason == "The budget was deactivated."
    assert AuditEvent.objects.filter(action="control.end", target_id=str(control.pk)).exists()


def test_policy_edit_replaces_a_control_that_no_longer_matches(tenant_a):
    budget = BudgetFactory(tenant=tenant_a, soft_limit=100 * USD)
    _window(budget, NOW, spent=100 * USD)
    budgets_evaluate(now=NOW)
    budget.policy = [
        {
            "at": "soft",
            "percent": 100,
            "kind": "cap_output_tokens",
            "priorities": [],
            "params": {"max_output_tokens": 256},
        }
    ]
    budget.save()

    budgets_evaluate(now=NOW + timedelta(minutes=1))

    old, new = Control.objects.filter(budget=budget).order_by("id")
    assert old.ended_reason == "The budget's policy or scope changed."
    assert new.params == {"max_output_tokens": 256} and new.priorities == []
    assert _active(budget, NOW + timedelta(minutes=1)) == [("soft-100-cap_output_tokens", "cap_output_tokens")]


def test_token_budget_reason_counts_tokens(tenant_a):
    budget = BudgetFactory(tenant=tenant_a, name="Tokens", metric="tokens", soft_limit=1_000_000)
    _window(budget, NOW, spent=1_250_000)
    budgets_evaluate(now=NOW)

    control = Control.objects.get(budget=budget)
    assert control.reason == "Budget 'Tokens' at 125% of its 1,000,000 tokens soft limit (1,250,000 tokens spent)"


def test_forecast_uses_a_minimum_elapsed_time(tenant_a):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=1000 * USD, period=Period.DAY)
    start = datetime(2026, 11, 20, tzinfo=UTC)
    window = _window(budget, start, spent=10 * USD)

    # One minute in: the rate is taken over 2.4 hours (a tenth of the day), not one minute.
    early = budget_levels(budget, window, now=start + timedelta(minutes=1))
    assert 109 * USD < early.forecast < 110 * USD  # 10 + 10 / 2.4 h × 23.98 h
    # Half way: plain linear extrapolation, spent doubles by the end.
    half = budget_levels(budget, window, now=start + timedelta(hours=12))
    assert half.forecast == 20 * USD
    assert half.hard == 1 and half.forecast_pct == 2
