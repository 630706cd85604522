"""The control ladder's forecast rung acts on the weekday-pattern forecast where the budget has the history
for it (at least PATTERN_MIN_DAYS days with spend in the four weeks before today), on the linear run-rate
otherwise, and the forecast alert says which one it used.

A week budget evaluated on Friday 2026-03-13 at noon UTC (weeks start on Monday), from daily rollups:

- weekday-heavy tenant A (10 USD a weekday, 2 a weekend day): 45 spent; the run-rate extrapolates the
  busy days over the weekend (45 / 4.5 days x 7 = 70), the weekday pattern does not (45 + 5 + 2 + 2 = 54);
- weekend-heavy tenant B (2 a weekday, 10 a weekend day): 9 spent; run-rate 14, weekday pattern
  9 + 1 + 10 + 10 = 30.
"""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from budgets.models import Alert, Control
from budgets.periods import period_bounds
from budgets.selectors import budget_burn
from budgets.services.ladder import budgets_evaluate
from budgets.services.windows import windows_open
from finops.models import UsageRollup
from tests.budgets.factories import BudgetFactory
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

USD = 1_000_000_000
FRIDAY_NOON = datetime(2026, 3, 13, 12, 0, tzinfo=UTC)
FORECAST_RUNG = "forecast-100-downgrade_tier"  # the default policy's forecast rung


def weekday_heavy(day: date) -> int:
    return 2 * USD if day.weekday() >= 5 else 10 * USD


def weekend_heavy(day: date) -> int:
    return 10 * USD if day.weekday() >= 5 else 2 * USD


def put_days(tenant, amount, *, days: int) -> int:
    """`days` whole days of daily rollups before Friday, and Friday's first half; returns this week's spend."""
    today = FRIDAY_NOON.date()
    rows, week = [], 0
    for k in range(days, -1, -1):
        day = today - timedelta(days=k)
        cost = amount(day) if k else amount(day) // 2
        start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
        rows.append(UsageRollup(grain="day", bucket_start=start, tenant=tenant, environment="prod", calls=100,
                                cost_nanos=cost))  # fmt: skip
        if day >= date(2026, 3, 9):
            week += cost
    UsageRollup.objects.bulk_create(rows)
    return week


def week_budget(tenant, *, hard_usd: int, spent: int):
    budget = BudgetFactory(tenant=tenant, period="week", hard_limit=hard_usd * USD)
    start, end = period_bounds(budget.period, budget.time_zone, FRIDAY_NOON)
    window = windows_open([(budget, start, end)])[(budget.pk, start)]
    window.spent = spent
    window.save(update_fields=["spent"])
    return budget


def forecast_controls(budget) -> list[Control]:
    return list(Control.objects.filter(budget=budget, rung=FORECAST_RUNG))


def forecast_alert(budget) -> Alert | None:
    return Alert.objects.filter(budget=budget, kind=Alert.Kind.FORECAST).first()


@pytest.fixture
def weekly(tenant_a, tenant_b):
    """Tenant A weekday-heavy with a 60 USD week, tenant B weekend-heavy with a 20 USD week: 40 days of history."""
    a = week_budget(tenant_a, hard_usd=60, spent=put_days(tenant_a, weekday_heavy, days=40))
    b = week_budget(tenant_b, hard_usd=20, spent=put_days(tenant_b, weekend_heavy, days=40))
    return a, b


def test_a_weekday_heavy_friday_does_not_trip_the_rung_the_run_rate_would(weekly):
    a, _ = weekly
    budgets_evaluate(now=FRIDAY_NOON)
    assert forecast_controls(a) == [] and forecast_alert(a) is None
    burn = budget_burn(budget=a, now=FRIDAY_NOON)  # the page agrees with the ladder
    assert burn.forecast == 54 * USD and burn.status == "ok" and burn.forecast_method == "weekday"


def test_a_weekend_heavy_friday_trips_the_rung_the_run_rate_would_not(weekly):
    _, b = weekly
    budgets_evaluate(now=FRIDAY_NOON)
    [control] = forecast_controls(b)
    assert control.kind == "downgrade_tier" and "forecast with the weekday pattern" in control.reason
    alert = forecast_alert(b)
    assert alert is not None and alert.level == 100
    assert "$30.00 forecast with the weekday pattern" in alert.message
    assert "Forecast method: the weekday pattern (28 days with spend in the last four weeks)" in alert.message
    assert "the linear run-rate would say $14.00" in alert.message
    assert budget_burn(budget=b, now=FRIDAY_NOON).status == "forecast_over_hard"


def test_without_enough_history_the_rung_falls_back_to_the_run_rate_and_says_so(db):
    newcomer = TenantFactory(slug="newcomer", name="Newcomer")
    budget = week_budget(newcomer, hard_usd=60, spent=put_days(newcomer, weekday_heavy, days=10))  # 10 days
    budgets_evaluate(now=FRIDAY_NOON)
    [control] = forecast_controls(budget)
    assert "$70.00 forecast at the linear run-rate" in control.reason
    alert = forecast_alert(budget)
    assert alert is not None and "$70.00 forecast at the linear run-rate" in alert.message
    assert "Forecast method: the linear run-rate, $70.00 by the period end" in alert.message
    assert "10 days with spend in the last four weeks, 14 needed" in alert.message
    burn = budget_burn(budget=budget, now=FRIDAY_NOON)
    assert abs(burn.forecast - 70 * USD) <= 1  # the run-rate, to the nano-USD
    assert (burn.forecast_method, burn.status) == ("run_rate", "forecast_over_hard")


def _rollup_reads(queries: CaptureQueriesContext) -> int:
    return sum(1 for q in queries.captured_queries if "finops_usagerollup" in q["sql"])


def test_the_ladder_reads_every_budgets_forecast_in_a_fixed_number_of_queries(weekly, tenant_a):
    """The minute run reads the rollups for all budgets at once: one daily and one hourly query per time
    zone, for 2 budgets as for 10 (the rest of its queries are per budget, as before)."""
    budgets_evaluate(now=FRIDAY_NOON)  # controls and alerts of the first run out of the way
    with CaptureQueriesContext(connection) as two:
        budgets_evaluate(now=FRIDAY_NOON)
    for _ in range(8):
        week_budget(tenant_a, hard_usd=1000, spent=45 * USD)  # far from every rung
    budgets_evaluate(now=FRIDAY_NOON)
    with CaptureQueriesContext(connection) as ten:
        budgets_evaluate(now=FRIDAY_NOON)
    assert _rollup_reads(two) == _rollup_reads(ten) == 2


def test_a_platform_wide_budget_forecasts_from_every_tenants_history(weekly):
    """A budget of all tenants sums A and B: 12 USD every day, so both methods agree on 84."""
    budget = week_budget(None, hard_usd=1000, spent=54 * USD)
    burn = budget_burn(budget=budget, now=FRIDAY_NOON)
    assert burn.forecast_method == "weekday" and burn.forecast == 84 * USD
