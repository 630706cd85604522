"""Period-end forecasts with the weekday pattern and a p10-p90 range: the pure function, a budget window
from the rollups, the budgets API, the budget page and the forecast alert."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from budgets.forecasting import forecast_period_end, window_forecast_weekday
from budgets.models import Alert
from budgets.periods import period_bounds
from budgets.services.ladder import budgets_evaluate
from budgets.services.windows import windows_open
from finops.models import UsageRollup
from tenants.models import Membership
from tests.budgets.factories import BudgetFactory
from tests.factories import MembershipFactory, UserFactory

USD = 1_000_000_000


def pattern(day: date) -> float:
    return 2.0 if day.weekday() >= 5 else 10.0  # USD: busy weekdays, quiet weekends


def test_the_weekday_pattern_forecasts_the_days_left_exactly_and_the_run_rate_does_not():
    start, end = date(2026, 3, 1), date(2026, 4, 1)  # March 2026 starts on a Sunday
    history = {start - timedelta(days=k): pattern(start - timedelta(days=k)) for k in range(1, 36)}
    history.update({start + timedelta(days=k): pattern(start + timedelta(days=k)) for k in range(7)})
    today = start + timedelta(days=7)
    actual = sum(pattern(start + timedelta(days=k)) for k in range(31))
    f = forecast_period_end(daily=history, period_start=start, period_end=end, today=today)
    assert f.method == "weekday" and f.expected == pytest.approx(actual)
    assert f.p10 <= f.expected <= f.p90
    assert abs(f.run_rate - actual) > 1  # a week with two weekend days extrapolated: wrong
    with pytest.raises(ValueError):
        forecast_period_end(daily=history, period_start=start, period_end=end, today=end)
    young = forecast_period_end(daily={}, period_start=start, period_end=end, today=start, today_spent=5.0)
    assert young.method == "run_rate"


@pytest.fixture
def spending(tenant_a, catalog):
    """Forty days of tenant A's spend in daily and hourly rollups, following `pattern`."""
    today = timezone.now().astimezone(UTC).date()
    rows = []
    for k in range(40, -1, -1):
        day = today - timedelta(days=k)
        start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
        per_hour = int(pattern(day) * USD / 24)
        hours = 24 if k else timezone.now().astimezone(UTC).hour  # today: the hours closed so far
        rows.append(
            UsageRollup(
                grain="day",
                bucket_start=start,
                tenant=tenant_a,
                environment="prod",
                calls=24,
                cost_nanos=per_hour * hours,
            )
        )
        rows += [
            UsageRollup(
                grain="hour",
                bucket_start=start + timedelta(hours=h),
                tenant=tenant_a,
                environment="prod",
                calls=1,
                cost_nanos=per_hour,
            )
            for h in range(hours)
        ]
    UsageRollup.objects.bulk_create(rows)
    return today


def _window(budget, now):
    start, end = period_bounds(budget.period, budget.time_zone, now)
    window = windows_open([(budget, start, end)])[(budget.pk, start)]
    window.spent = sum(
        UsageRollup.objects.filter(grain="hour", tenant=budget.tenant, bucket_start__gte=start).values_list(
            "cost_nanos", flat=True
        )
    )
    window.save(update_fields=["spent"])
    return window


def test_a_budget_window_forecast_follows_the_weekday_pattern(tenant_a, spending):
    budget = BudgetFactory(tenant=tenant_a, period="week", hard_limit=1000 * USD)
    now = timezone.now()
    window = _window(budget, now)
    f = window_forecast_weekday(budget=budget, window=window, now=now)
    days_left = [spending + timedelta(days=k) for k in range(1, (window.ends_at.date() - spending).days)]
    rest_today = pattern(spending) * (1 - (now.hour * 60 + now.minute) / 1440)
    expected = window.spent + (rest_today + sum(pattern(d) for d in days_left)) * USD
    assert f.method == "weekday"
    assert f.expected == pytest.approx(expected, rel=0.02)
    assert window.spent <= f.p10 <= f.expected <= f.p90


def test_the_api_and_the_page_give_the_forecast_and_its_range(tenant_a, api_a, api_b, spending):
    budget = BudgetFactory(tenant=tenant_a, period="month", hard_limit=10_000 * USD)
    _window(budget, timezone.now())
    body = api_a.client.get(f"/api/v1/budgets/{budget.pk}").json()
    forecast = body["forecast"]
    assert forecast["method"] == "weekday"
    assert float(forecast["p10"]) <= float(forecast["expected"]) <= float(forecast["p90"])
    assert api_b.client.get(f"/api/v1/budgets/{budget.pk}").status_code == 404
    user = UserFactory(username="viewer-fc")
    MembershipFactory(tenant=tenant_a, role=Membership.Role.VIEWER, user=user)
    client = Client()
    client.force_login(user)
    html = client.get(f"/budgets/{budget.pk}/").content.decode()
    assert "data-forecast-range" in html and "weekday pattern" in html


def test_the_forecast_alert_carries_the_weekday_forecast(tenant_a, spending):
    budget = BudgetFactory(tenant=tenant_a, period="month", hard_limit=USD)  # far over by any forecast
    now = timezone.now()
    _window(budget, now)
    budgets_evaluate(now=now)
    alert = Alert.objects.get(budget=budget, kind=Alert.Kind.FORECAST)
    assert "forecast with the weekday pattern" in alert.message  # 40 days of history: the ladder uses it
    assert "Forecast method: the weekday pattern" in alert.message and "p10" in alert.message and "p90" in alert.message


def _list_queries(client) -> tuple[list[dict], int]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/v1/budgets")
    assert response.status_code == 200, response.content
    return response.json()["results"], len(queries)


def test_the_list_gives_every_budgets_forecast_in_a_fixed_number_of_queries(tenant_a, api_a, api_b, spending):
    first = BudgetFactory(tenant=tenant_a, period="month", hard_limit=10_000 * USD)
    _window(first, timezone.now())
    _list_queries(api_a.client)  # the key's first use is recorded once: not part of the count
    one, queries_for_one = _list_queries(api_a.client)
    assert one[0]["forecast"]["method"] == "weekday" and one[0]["forecast"]["history_days"] >= 14
    # Nine more of every shape: weeks and days, prod only, tokens; one without a window yet (no forecast).
    for k in range(8):
        budget = BudgetFactory(
            tenant=tenant_a,
            period=("week", "day", "month")[k % 3],
            environment="prod" if k % 2 else "",
            metric="tokens" if k == 3 else "cost",
            hard_limit=10_000 * USD,
        )
        _window(budget, timezone.now())
    BudgetFactory(tenant=tenant_a, period="month", name="no window yet")
    BudgetFactory(tenant=None, period="month", name="all tenants")  # a platform budget: not tenant A's
    ten, queries_for_ten = _list_queries(api_a.client)
    assert len(ten) == 10
    assert queries_for_ten == queries_for_one, (queries_for_one, queries_for_ten)
    by_id = {b["id"]: b for b in ten}
    assert "forecast" not in next(b for b in ten if b["name"] == "no window yet")
    assert sum(1 for b in ten if "forecast" in b) == 9
    # The list says what the one-budget endpoint says (a few milliseconds later: the run-rate moves).
    for budget_id, row in by_id.items():
        if "forecast" in row:
            alone = api_a.client.get(f"/api/v1/budgets/{budget_id}").json()["forecast"]
            assert (alone["method"], alone["history_days"]) == (row["forecast"]["method"], 28)
            for field in ("expected", "p10", "p90", "run_rate"):
                assert float(alone[field]) == pytest.approx(float(row["forecast"][field]), rel=1e-4)
    assert api_b.client.get("/api/v1/budgets").json()["results"] == []  # tenant B sees none of them
