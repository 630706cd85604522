"""Amounts below a cent keep their significant digits in sentences (control reasons, alerts, preflight
reasons) as in tables: a $0.0008 limit never reads "$0.00"."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from budgets.models import Alert, Control
from budgets.periods import period_bounds
from budgets.services.ladder import amount_label, budgets_evaluate
from budgets.services.windows import windows_open
from finops.templatetags.money import usd_sentence

from .factories import BudgetFactory

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (800_000, "$0.0008"),
        (100_000_000, "$0.10"),
        (4_200_000, "$0.0042"),
        (12_000, "$0.000012"),
        (1_234_560_000_000, "$1,234.56"),
        (12_345_000_000, "$12.35"),
        (0, "$0.00"),
    ],
)
def test_usd_sentence(nanos, text):
    assert usd_sentence(nanos) == text
    assert amount_label("cost", nanos) == text


@pytest.mark.django_db
def test_a_sub_cent_hard_limit_reads_with_its_digits_in_the_control_and_the_alert(tenant_a):
    budget = BudgetFactory(tenant=tenant_a, name="Tiny", metric="cost", soft_limit=None, hard_limit=800_000)
    start, end = period_bounds(budget.period, budget.time_zone, NOW)
    window = windows_open([(budget, start, end)])[(budget.pk, start)]
    window.spent = 770_000
    window.save(update_fields=["spent"])
    budgets_evaluate(now=NOW)
    reasons = " ".join(Control.objects.filter(budget=budget).values_list("reason", flat=True))
    assert "at 96% of its $0.0008 hard limit ($0.0008 spent)" in reasons, reasons
    assert "$0.00 " not in reasons
    messages = " ".join(Alert.objects.filter(budget=budget).values_list("message", flat=True))
    assert "$0.00 " not in messages and "$0.00)" not in messages
