"""Budget alerts: the levels they are raised at, once per window and level, acknowledging them, and the
alerts and notification-channel APIs across the tenant boundary."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, transaction
from rest_framework.test import APIClient

from budgets.models import Alert, Notification, NotificationChannel
from budgets.periods import period_bounds
from budgets.services.alerts import alert_create, alert_levels
from budgets.services.ladder import budget_levels, budgets_evaluate
from budgets.services.windows import windows_open
from finops.pricing import NANOS_PER_USD
from tenants.models import AuditEvent, Membership

from ..factories import MembershipFactory, UserFactory
from .factories import BudgetFactory

USD = NANOS_PER_USD
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
ALERTS = "/api/v1/alerts"
CHANNELS = "/api/v1/notification-channels"


def _window(budget, spent, now=NOW):
    start, end = period_bounds(budget.period, budget.time_zone, now)
    window = windows_open([(budget, start, end)])[(budget.pk, start)]
    window.spent = spent
    window.save(update_fields=["spent"])
    return window


def _alerts(budget):
    return list(Alert.objects.filter(budget=budget).order_by("id").values_list("kind", "level"))


def _person(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def approver_a(tenant_a):
    user = UserFactory(username="approver-a")
    MembershipFactory(tenant=tenant_a, user=user, role=Membership.Role.APPROVER)
    return user


@pytest.fixture
def admin_a(tenant_a):
    user = UserFactory(username="admin-a")
    MembershipFactory(tenant=tenant_a, user=user, role=Membership.Role.ADMIN)
    return user


# --- Levels -----------------------------------------------------------------------------------------


def test_soft_limit_alerts_at_85_95_and_100_percent_once_each(tenant_a):
    budget = BudgetFactory(tenant=tenant_a, name="Acme monthly", soft_limit=100 * USD)
    for minute, spent in enumerate([84, 85, 90, 95, 99, 100, 110, 90, 100]):
        _window(budget, spent * USD)
        budgets_evaluate(now=NOW + timedelta(minutes=minute))

    assert _alerts(budget) == [("soft_limit", 85), ("soft_limit", 95), ("soft_limit", 100)]
    alert = Alert.objects.get(budget=budget, level=100)
    assert alert.tenant == tenant_a
    assert alert.subject == "[Tokenspend] Acme monthly: 100% of soft limit"
    assert "Budget 'Acme monthly' at 100% of its $100.00 soft limit ($100.00 spent)" in alert.message


def test_a_jump_past_several_levels_raises_only_the_highest(tenant_a):
    budget = BudgetFactory(tenant=tenant_a, soft_limit=100 * USD)
    _window(budget, 120 * USD)
    budgets_evaluate(now=NOW)
    # Spend falls back (a reconciliation): the lower levels are not raised afterwards.
    _window(budget, 90 * USD)
    budgets_evaluate(now=NOW + timedelta(minutes=1))

    assert _alerts(budget) == [("soft_limit", 100)]


def test_hard_limit_and_forecast_alerts(tenant_a):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=100 * USD)
    # Two thirds into November at 70% spent: forecast 105% of the hard limit.
    at = datetime(2026, 11, 21, tzinfo=UTC)
    window = _window(budget, 70 * USD, now=at)
    assert budget_levels(budget, window, now=at).forecast_pct == 105
    budgets_evaluate(now=at)
    assert _alerts(budget) == [("forecast", 100)]

    _window(budget, 100 * USD, now=at)
    budgets_evaluate(now=at + timedelta(minutes=1))
    assert _alerts(budget) == [("forecast", 100), ("hard_limit", 100)]


def test_new_window_alerts_again(tenant_a):
    budget = BudgetFactory(tenant=tenant_a, soft_limit=100 * USD)
    _window(budget, 100 * USD)
    budgets_evaluate(now=NOW)
    december = datetime(2026, 12, 3, tzinfo=UTC)
    _window(budget, 100 * USD, now=december)
    budgets_evaluate(now=december)

    assert Alert.objects.filter(budget=budget, level=100).count() == 2


def test_policy_alert_rungs_add_levels_and_the_standard_ones_stay(tenant_a):
    policy = [{"at": "soft", "percent": 50, "kind": "alert"}, {"at": "hard", "percent": 80, "kind": "alert"}]
    assert alert_levels(policy) == {"soft_limit": [50, 85, 95, 100], "hard_limit": [80, 100], "forecast": [100]}
    budget = BudgetFactory(tenant=tenant_a, soft_limit=100 * USD, policy=policy)
    _window(budget, 60 * USD)
    budgets_evaluate(now=NOW)
    _window(budget, 86 * USD)
    budgets_evaluate(now=NOW + timedelta(minutes=1))

    assert _alerts(budget) == [("soft_limit", 50), ("soft_limit", 85)]


def test_the_same_alert_twice_is_refused_by_the_database_and_handled(tenant_a):
    budget = BudgetFactory(tenant=tenant_a, soft_limit=100 * USD)
    window = _window(budget, 100 * USD)
    levels = budget_levels(budget, window, now=NOW)

    first = alert_create(levels, kind="soft_limit", level=100, current=levels.soft)
    second = alert_create(levels, kind="soft_limit", level=100, current=levels.soft)

    assert first is not None and second is None
    assert Alert.objects.filter(window=window).count() == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        Alert.objects.create(kind="soft_limit", level=100, window=window, subject="x", message="x", created_at=NOW)


def test_alert_notifies_matching_channels_after_commit(
    tenant_a, tenant_b, django_capture_on_commit_callbacks, mailoutbox
):
    mine = NotificationChannel.objects.create(tenant=tenant_a, kind="email", target="finops@acme.example")
    everyone = NotificationChannel.objects.create(tenant=None, kind="email", target="ops@platform.example")
    NotificationChannel.objects.create(tenant=tenant_b, kind="email", target="finops@globex.example")
    NotificationChannel.objects.create(tenant=tenant_a, kind="email", target="old@acme.example", is_active=False)
    budget = BudgetFactory(tenant=tenant_a, name="Acme monthly", soft_limit=100 * USD)
    _window(budget, 100 * USD)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        budgets_evaluate(now=NOW)

    assert len(callbacks) == 1
    notifications = Notification.objects.filter(alert__budget=budget)
    assert {n.channel_id for n in notifications} == {mine.pk, everyone.pk}
    assert {n.status for n in notifications} == {"sent"}
    assert sorted(m.to[0] for m in mailoutbox) == ["finops@acme.example", "ops@platform.example"]
    assert mailoutbox[0].subject == "[Tokenspend] Acme monthly: 100% of soft limit"


def test_all_tenant_budget_alerts_reach_only_all_tenant_channels(tenant_a):
    NotificationChannel.objects.create(tenant=tenant_a, kind="email", target="finops@acme.example")
    everyone = NotificationChannel.objects.create(tenant=None, kind="email", target="ops@platform.example")
    budget = BudgetFactory(tenant=None, soft_limit=100 * USD)
    _window(budget, 100 * USD)
    budgets_evaluate(now=NOW)

    assert list(Notification.objects.values_list("channel_id", flat=True)) == [everyone.pk]


# --- Alerts API ---------------------------------------------------------------------------------------


@pytest.fixture
def alerts(tenant_a, tenant_b):
    a = BudgetFactory(tenant=tenant_a, name="Budget marker-budget-a", soft_limit=100 * USD, hard_limit=100 * USD)
    b = BudgetFactory(tenant=tenant_b, name="Budget marker-budget-b", soft_limit=100 * USD)
    _window(a, 100 * USD)
    _window(b, 90 * USD)
    budgets_evaluate(now=NOW)
    return {"a": list(Alert.objects.filter(budget=a)), "b": Alert.objects.get(budget=b)}


def test_tenant_key_lists_its_alerts_only(api_a, alerts):
    response = api_a.client.get(ALERTS)

    assert response.status_code == 200
    body = response.json()
    assert sorted((r["kind"], r["level"]) for r in body["results"]) == [
        ("forecast", 100),
        ("hard_limit", 100),
        ("soft_limit", 100),
    ]
    assert all(r["tenant"] == "acme" for r in body["results"])
    assert "marker-budget-b" not in response.content.decode()
    assert "marker-tenant-b" not in response.content.decode()


def test_alert_list_filters(api_a, api_platform, alerts):
    hard = api_a.client.get(ALERTS, {"kind": "hard_limit"}).json()["results"]
    assert [r["kind"] for r in hard] == ["hard_limit"]
    assert api_a.client.get(ALERTS, {"acknowledged": "true"}).json()["results"] == []
    assert len(api_a.client.get(ALERTS, {"acknowledged": "false"}).json()["results"]) == 3
    assert api_a.client.get(ALERTS, {"kind": "nope"}).status_code == 400
    assert api_a.client.get(ALERTS, {"acknowledged": "maybe"}).status_code == 400
    # Platform keys see every tenant's alerts, or one tenant's.
    assert len(api_platform.client.get(ALERTS).json()["results"]) == 4
    only_b = api_platform.client.get(ALERTS, {"tenant": "globex"}).json()["results"]
    assert [r["tenant"] for r in only_b] == ["globex"]


def test_tenant_key_naming_another_tenant_gets_404(api_a, alerts):
    response = api_a.client.get(ALERTS, {"tenant": "globex"})

    assert response.status_code == 404
    assert "marker-budget-b" not in response.content.decode()


def test_approver_acknowledges_an_alert(approver_a, alerts):
    alert = alerts["a"][0]
    client = _person(approver_a)

    response = client.post(f"{ALERTS}/{alert.pk}/acknowledge?tenant=acme")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["acknowledged"] is True and body["acknowledged_by"] == "approver-a"
    alert.refresh_from_db()
    assert alert.acknowledged_by == approver_a and alert.acknowledged_at is not None
    event = AuditEvent.objects.get(action="alert.acknowledge", target_id=str(alert.pk))
    assert event.actor_user == approver_a and event.tenant == alert.tenant
    # Twice: same answer, no second audit row, the first acknowledgement stands.
    first_at = alert.acknowledged_at
    assert client.post(f"{ALERTS}/{alert.pk}/acknowledge?tenant=acme").status_code == 200
    alert.refresh_from_db()
    assert alert.acknowledged_at == first_at
    assert AuditEvent.objects.filter(action="alert.acknowledge").count() == 1


def test_viewer_cannot_acknowledge(viewer_a, alerts):
    response = _person(viewer_a).post(f"{ALERTS}/{alerts['a'][0].pk}/acknowledge?tenant=acme")

    assert response.status_code == 403
    assert Alert.objects.filter(acknowledged_at__isnull=False).count() == 0


def test_key_with_manage_scope_acknowledges_and_is_audited(api_a, alerts):
    alert = alerts["a"][0]
    response = api_a.client.post(f"{ALERTS}/{alert.pk}/acknowledge")

    assert response.status_code == 200
    event = AuditEvent.objects.get(action="alert.acknowledge")
    assert event.actor_key == api_a.key


def test_acknowledging_another_tenants_alert_is_404(api_a, approver_a, alerts):
    other = alerts["b"]

    by_key = api_a.client.post(f"{ALERTS}/{other.pk}/acknowledge")
    by_person = _person(approver_a).post(f"{ALERTS}/{other.pk}/acknowledge?tenant=acme")
    missing = api_a.client.post(f"{ALERTS}/999999/acknowledge")

    for response in (by_key, by_person):
        assert response.status_code == 404
        assert response.json() == missing.json()
        assert "marker-budget-b" not in response.content.decode()
    other.refresh_from_db()
    assert other.acknowledged_at is None


# --- Notification channels API -----------------------------------------------------------------------


def test_tenant_admin_manages_their_tenants_channels(admin_a, tenant_a, tenant_b):
    theirs = NotificationChannel.objects.create(tenant=tenant_b, kind="email", target="marker-b@globex.example")
    client = _person(admin_a)

    created = client.post(
        f"{CHANNELS}?tenant=acme", {"kind": "webhook", "target": "https://hooks.acme.example/t"}, format="json"
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["tenant"] == "acme" and len(body["secret"]) >= 32
    channel = NotificationChannel.objects.get(pk=body["id"])
    assert channel.tenant == tenant_a and channel.secret == body["secret"]
    assert AuditEvent.objects.filter(action="notification_channel.create", tenant=tenant_a).exists()

    listed = client.get(f"{CHANNELS}?tenant=acme")
    assert [c["id"] for c in listed.json()["results"]] == [channel.pk]
    assert "secret" not in listed.json()["results"][0]
    assert "marker-b" not in listed.content.decode()

    # Another tenant's channel answers like a missing one.
    gone = client.delete(f"{CHANNELS}/{theirs.pk}?tenant=acme")
    assert gone.status_code == 404 and "marker-b" not in gone.content.decode()
    assert NotificationChannel.objects.filter(pk=theirs.pk).exists()
    assert client.get(f"{CHANNELS}?tenant=globex").status_code == 404

    assert client.delete(f"{CHANNELS}/{channel.pk}?tenant=acme").status_code == 204
    assert not NotificationChannel.objects.filter(pk=channel.pk).exists()
    assert AuditEvent.objects.filter(action="notification_channel.delete").exists()


def test_tenant_admin_needs_https_and_a_valid_target(admin_a, tenant_a):
    client = _person(admin_a)

    plain = client.post(
        f"{CHANNELS}?tenant=acme", {"kind": "webhook", "target": "http://127.0.0.1:6379/"}, format="json"
    )
    email = client.post(f"{CHANNELS}?tenant=acme", {"kind": "email", "target": "not-an-address"}, format="json")

    assert plain.status_code == 400 and "https" in plain.json()["error"]["message"]
    assert email.status_code == 400
    assert NotificationChannel.objects.count() == 0


def test_tenant_body_value_is_ignored(admin_a, tenant_a, tenant_b):
    response = _person(admin_a).post(
        f"{CHANNELS}?tenant=acme", {"kind": "email", "target": "a@acme.example", "tenant": "globex"}, format="json"
    )

    assert response.status_code == 201
    assert NotificationChannel.objects.get().tenant == tenant_a


def test_viewer_and_tenant_keys_cannot_manage_channels(viewer_a, api_a, tenant_a):
    assert _person(viewer_a).get(f"{CHANNELS}?tenant=acme").status_code == 403
    assert api_a.client.get(CHANNELS).status_code == 403
    assert api_a.client.post(CHANNELS, {"kind": "email", "target": "x@acme.example"}, format="json").status_code == 403


def test_platform_key_and_operator_manage_all_channels(api_platform, operator, tenant_a, tenant_b):
    everyone = api_platform.client.post(
        CHANNELS, {"kind": "webhook", "target": "http://receiver.internal/hook"}, format="json"
    )
    for_b = _person(operator).post(
        f"{CHANNELS}?tenant=globex", {"kind": "email", "target": "ops@globex.example"}, format="json"
    )

    assert everyone.status_code == 201 and everyone.json()["tenant"] is None
    assert for_b.status_code == 201 and for_b.json()["tenant"] == "globex"
    assert len(api_platform.client.get(CHANNELS).json()["results"]) == 2
    # Naming a tenant keeps the platform-wide channels, which receive its alerts too (the pages' rule).
    assert [c["tenant"] for c in api_platform.client.get(CHANNELS, {"tenant": "globex"}).json()["results"]] == [
        None,
        "globex",
    ]
    assert api_platform.client.delete(f"{CHANNELS}/{for_b.json()['id']}").status_code == 204
