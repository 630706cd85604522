"""Budget, control and alert pages: what they show, to whom, and who may change what.

Tenant a (acme) and tenant b (globex, whose rows carry "marker-tenant-b") each have a monthly
budget; usage goes in through the ingest service, which charges the budgets' windows. Prices
(tests/conftest.py `catalog`): 400,000 gpt-4o input tokens cost exactly $1.00.
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import timedelta

import plotly.graph_objects as go
import pytest
from django.test import Client
from django.utils import timezone

from budgets.models import Alert, Budget, BudgetWindow, Control, Metric, Notification, NotificationChannel
from budgets.services.budgets import budget_create
from budgets.services.controls import control_start
from finops.services.ingest import usage_ingest
from finops.services.rollups import rollups_refresh
from tenants.models import AuditEvent, Membership
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db
_ids = itertools.count(1)
DOLLAR_OF_INPUT = 400_000
USD = 10**9
MARKER_B = "marker-tenant-b"


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def get(client, url, status=200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.content.decode()


def spend(tenant, dollars: float, **extra) -> None:
    record = {
        "request_id": f"req-{next(_ids)}",
        "model": "gpt-4o",
        "environment": "prod",
        "workflow": "ticket-summary",
        "input_tokens": int(dollars * DOLLAR_OF_INPUT),
        "output_tokens": 0,
        "occurred_at": (timezone.now() - timedelta(minutes=5)).isoformat(),
        **extra,
    }
    result = usage_ingest(records=[record], bound_tenant=tenant)
    assert result.all_stored
    rollups_refresh()


def figure(body: str, element_id: str) -> dict:
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', body, re.S)
    assert match is not None, element_id
    payload = json.loads(match.group(1))["figure"]
    go.Figure(payload)  # built by hand: it must still be a valid Plotly figure
    return payload


@pytest.fixture
def admin_a(tenant_a):
    return MembershipFactory(tenant=tenant_a, role=Membership.Role.ADMIN, user=UserFactory(username="admin-a")).user


@pytest.fixture
def approver_a(tenant_a):
    user = UserFactory(username="approver-a")
    return MembershipFactory(tenant=tenant_a, role=Membership.Role.APPROVER, user=user).user


@pytest.fixture
def budgets(catalog, tenant_a, tenant_b) -> dict[str, Budget]:
    """A monthly $10 / $20 budget per tenant and a platform-wide one, charged by $2 (a) and $40 (b)."""
    made = {
        "a": budget_create(
            name="Acme monthly", tenant=tenant_a, soft_limit=10 * USD, hard_limit=20 * USD, time_zone="UTC"
        ),
        "b": budget_create(
            name=f"Globex monthly {MARKER_B}", tenant=tenant_b, soft_limit=10 * USD, hard_limit=20 * USD
        ),
        "platform": budget_create(name="Platform-wide cap", tenant=None, hard_limit=1000 * USD),
    }
    spend(tenant_a, 2)
    spend(tenant_b, 40)
    return made


def _alert(budget: Budget, *, kind=Alert.Kind.SOFT_LIMIT, level=85, subject="", acknowledged=False) -> Alert:
    window = BudgetWindow.objects.filter(budget=budget).first()
    alert = Alert.objects.create(
        kind=kind,
        level=level,
        tenant=budget.tenant,
        budget=budget,
        window=window,
        subject=subject or f"[Tokenspend] {budget.name}: {level}% of soft limit",
        message="Spent a lot.",
        created_at=timezone.now() - timedelta(minutes=level),
        acknowledged_at=timezone.now() if acknowledged else None,
    )
    # The tenant's own channel: a platform-wide channel's deliveries are the operators' (never shown to tenants).
    channel, _ = NotificationChannel.objects.get_or_create(kind="email", target="ops@example.com", tenant=budget.tenant)
    Notification.objects.create(
        alert=alert, channel=channel, status=Notification.Status.SENT, next_attempt_at=alert.created_at
    )
    return alert


# --- Budgets list --------------------------------------------------------------------------------------


def test_budgets_list_shows_burn_of_the_members_tenant_only(viewer_a, budgets):
    body = get(client_for(viewer_a), "/budgets/")
    assert "Acme monthly" in body
    assert "$2.00" in body  # spent, charged by ingest
    assert "$10.00" in body and "$20.00" in body
    assert 'class="burn burn--' in body
    assert MARKER_B not in body
    assert "Platform-wide cap" not in body, "platform-wide budgets are the operators'"
    assert "New budget" not in body, "a viewer cannot create budgets"


def test_budgets_list_for_an_operator_has_every_budget_and_the_status(operator, budgets):
    body = get(client_for(operator), "/budgets/")
    assert "Acme monthly" in body and MARKER_B in body and "Platform-wide cap" in body
    # b spent $40 of a $20 hard limit
    row = re.search(rf'<tr data-budget="{budgets["b"].pk}">.*?</tr>', body, re.S).group(0)
    assert "at hard" in row and "$40.00" in row
    row = re.search(rf'<tr data-budget="{budgets["a"].pk}">.*?</tr>', body, re.S).group(0)
    assert 'badge--ok">ok' in row
    # the operator picking tenant a sees a's budgets and the platform-wide ones, not b's
    body = get(client_for(operator), "/budgets/?tenant=acme")
    assert "Acme monthly" in body and "Platform-wide cap" in body and "Globex monthly" not in body


def test_budgets_list_empty_state_invites_the_admin_to_create_one(admin_a, viewer_a):
    body = get(client_for(admin_a), "/budgets/")
    assert "No budgets yet — create one" in body
    assert 'href="/budgets/add/' in body
    body = get(client_for(viewer_a), "/budgets/")
    assert "No budgets yet" in body and "Operators and your tenant's admins create budgets." in body


def test_token_budget_reads_in_tokens(viewer_a, tenant_a, catalog):
    budget_create(name="Acme tokens", tenant=tenant_a, metric=Metric.TOKENS, soft_limit=1_000_000, hard_limit=2_000_000)
    spend(tenant_a, 1)  # 400,000 tokens
    body = get(client_for(viewer_a), "/budgets/")
    assert "400K tokens" in body and "1M tokens" in body and "2M tokens" in body


# --- Budget page ---------------------------------------------------------------------------------------


def test_budget_page_draws_the_burn_down_with_limits_and_forecast(viewer_a, budgets):
    budget = budgets["a"]
    control_start(
        tenant=budget.tenant,
        kind="cap_output_tokens",
        params={"max_output_tokens": 512},
        source=Control.Source.BUDGET,
        budget=budget,
        reason="Acme monthly at 100% of soft",
    )
    _alert(budget, subject="Acme monthly crossed 85%")
    body = get(client_for(viewer_a), f"/budgets/{budget.pk}/")
    assert "Acme monthly" in body
    fig = figure(body, "burn-down-figure")
    traces = {t["name"]: t for t in fig["data"]}
    assert set(traces) >= {"Spent", "Soft limit", "Hard limit"}
    assert traces["Spent"]["y"][-1] == pytest.approx(2.0)
    assert traces["Soft limit"]["y"] == [10.0, 10.0] and traces["Hard limit"]["y"] == [20.0, 20.0]
    if "Forecast" in traces:
        assert traces["Forecast"]["y"][0] == pytest.approx(2.0)
        assert traces["Forecast"]["y"][1] >= 2.0
    # the period history, and the controls and alerts of this budget
    assert "Periods" in body and "current" in body
    assert "Acme monthly at 100% of soft" in body and "max_output_tokens=512" in body
    assert "Acme monthly crossed 85%" in body and "ops@example.com" in body
    assert "Edit budget" not in body


def test_budget_page_of_a_budget_with_no_spend_yet(viewer_a, tenant_a, catalog):
    budget = budget_create(name="Quiet budget", tenant=tenant_a, hard_limit=5 * USD)
    body = get(client_for(viewer_a), f"/budgets/{budget.pk}/")
    assert "No period has started yet" in body
    assert "None yet: the ladder starts controls" in body
    assert "No alerts: this budget has not reached an alert level." in body
    fig = figure(body, "burn-down-figure")
    assert fig["data"][0]["y"] == [0.0]


def test_another_tenants_budget_answers_404_like_a_missing_one(viewer_a, operator, budgets):
    client = client_for(viewer_a)
    body = get(client, f"/budgets/{budgets['b'].pk}/", status=404)
    assert MARKER_B not in body
    get(client, f"/budgets/{budgets['platform'].pk}/", status=404)
    get(client, "/budgets/999999/", status=404)
    get(client, f"/budgets/{budgets['b'].pk}/edit/", status=404)
    get(client_for(operator), f"/budgets/{budgets['b'].pk}/")


# --- Budget form ---------------------------------------------------------------------------------------


def _form(**overrides) -> dict:
    data = {
        "name": "Acme daily",
        "tenant": "acme",
        "workflow": "",
        "environment": "prod",
        "tier": "",
        "metric": "cost",
        "period": "day",
        "time_zone": "Europe/Berlin",
        "soft_limit": "100",
        "hard_limit": "250.10",
        "hard_action": "deny",
    }
    data.update(overrides)
    return data


def test_tenant_admin_creates_a_budget_for_their_tenant_only(admin_a, tenant_a, tenant_b, catalog):
    client = client_for(admin_a)
    body = get(client, "/budgets/add/")
    assert "globex" not in body.lower(), "the tenant choice holds the admin's tenants only"
    response = client.post("/budgets/add/", _form(tenant="globex", hard_limit="$1,250.123456789"))
    assert response.status_code == 302
    budget = Budget.objects.get(name="Acme daily")
    assert budget.tenant == tenant_a, "a tenant admin's tenant is fixed; a posted tenant is ignored"
    assert budget.hard_limit == 1_250_123_456_789  # exact nano-USD
    assert budget.soft_limit == 100 * USD
    assert (budget.environment, budget.period, budget.time_zone) == ("prod", "day", "Europe/Berlin")
    assert response["Location"] == f"/budgets/{budget.pk}/"
    event = AuditEvent.objects.get(action="budget.create")
    assert event.actor_user == admin_a and event.tenant == tenant_a


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"soft_limit": "300", "hard_limit": "200"}, "soft_limit", "must not be above the hard limit"),
        ({"hard_limit": "-5"}, "hard_limit", "greater than zero"),
        ({"hard_limit": "0.0000000001"}, "hard_limit", "at most 9 decimal places"),
        ({"soft_limit": "", "hard_limit": ""}, "hard_limit", "Set a soft limit, a hard limit, or both."),
        ({"metric": "tokens", "soft_limit": "1.5", "hard_limit": "10"}, "soft_limit", "whole number"),
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone", "Select a valid choice"),
    ],
)
def test_budget_form_refuses_bad_limits_and_zones(admin_a, catalog, overrides, field, message):
    response = client_for(admin_a).post("/budgets/add/", _form(**overrides))
    assert response.status_code == 200
    assert message in response.context["form"].errors[field][0]
    assert not Budget.objects.exists()


def test_operator_creates_a_platform_wide_token_budget(operator, catalog):
    response = client_for(operator).post(
        "/budgets/add/", _form(tenant="", metric="tokens", soft_limit="1000000", hard_limit="2,000,000")
    )
    assert response.status_code == 302
    budget = Budget.objects.get()
    assert budget.tenant is None and budget.metric == "tokens" and budget.hard_limit == 2_000_000


def test_tenant_admin_edits_limits_and_the_open_window_follows(admin_a, budgets):
    budget = budgets["a"]
    client = client_for(admin_a)
    body = get(client, f"/budgets/{budget.pk}/edit/")
    assert 'value="10.00"' in body and 'value="20.00"' in body
    response = client.post(
        f"/budgets/{budget.pk}/edit/",
        _form(name="Acme monthly", period="month", time_zone="UTC", environment="", soft_limit="15", hard_limit="30",
              is_active="on"),
    )  # fmt: skip
    assert response.status_code == 302
    budget.refresh_from_db()
    assert (budget.soft_limit, budget.hard_limit, budget.is_active) == (15 * USD, 30 * USD, True)
    window = BudgetWindow.objects.get(budget=budget)
    assert (window.soft_limit, window.hard_limit, window.spent) == (15 * USD, 30 * USD, 2 * USD)
    assert AuditEvent.objects.filter(action="budget.update", actor_user=admin_a).exists()


def test_viewer_cannot_create_or_edit_budgets(viewer_a, budgets):
    client = client_for(viewer_a)
    assert client.get("/budgets/add/").status_code == 403
    assert client.post("/budgets/add/", _form()).status_code == 403
    assert client.get(f"/budgets/{budgets['a'].pk}/edit/").status_code == 403
    assert client.post(f"/budgets/{budgets['a'].pk}/edit/", _form()).status_code == 403
    assert Budget.objects.count() == 3


# --- Controls ------------------------------------------------------------------------------------------


@pytest.fixture
def controls(budgets, tenant_a, tenant_b) -> dict[str, Control]:
    now = timezone.now()
    return {
        "a": control_start(
            tenant=tenant_a,
            kind="downgrade_tier",
            priorities=["low"],
            params={"steps": 1},
            source=Control.Source.BUDGET,
            budget=budgets["a"],
            rung="forecast-100-downgrade_tier",
            reason="Acme forecast over hard",
        ),
        "a_ended": control_start(
            tenant=tenant_a,
            kind="deny",
            source=Control.Source.MANUAL,
            reason="Acme incident last week",
            starts_at=now - timedelta(days=7),
            ends_at=now - timedelta(days=6),
        ),
        "b": control_start(
            tenant=tenant_b, kind="deny", source=Control.Source.MANUAL, reason=f"Globex frozen {MARKER_B}"
        ),
    }


def test_controls_page_lists_active_and_ended_controls_of_the_members_tenant(viewer_a, controls):
    body = get(client_for(viewer_a), "/controls/")
    active = body.split('id="active-controls"')[1].split('id="ended-controls"')[0]
    ended = body.split('id="ended-controls"')[1]
    assert "Acme forecast over hard" in active and "priorities: low" in active and "steps=1" in active
    assert "Acme monthly" in active, "the source links the budget"
    assert "Acme incident last week" in ended
    assert MARKER_B not in body
    assert "Add a manual control" not in body and 'action="/controls/' not in body


def test_controls_page_empty_state(viewer_a, tenant_b):
    body = get(client_for(viewer_a), "/controls/")
    assert "No active controls" in body and "No control has ended yet." in body


def test_operator_adds_and_ends_a_manual_control_both_audited(operator, tenant_a, catalog):
    client = client_for(operator)
    get(client, "/controls/add/")
    response = client.post(
        "/controls/add/",
        {
            "kind": "cap_output_tokens",
            "tenant": "acme",
            "environment": "prod",
            "priorities": ["low", "normal"],
            "params": '{"max_output_tokens": 256}',
            "reason": "Runaway prompt in prod",
        },
    )
    assert response.status_code == 302
    control = Control.objects.get()
    assert (control.source, control.tenant, control.environment) == ("manual", tenant_a, "prod")
    assert control.priorities == ["low", "normal"] and control.params == {"max_output_tokens": 256}
    assert control.created_by == operator and control.ends_at is None
    body = get(client, "/controls/")
    assert "Runaway prompt in prod" in body and f'action="/controls/{control.pk}/end/' in body

    response = client.post(f"/controls/{control.pk}/end/", {"reason": "Prompt fixed"})
    assert response.status_code == 302
    control.refresh_from_db()
    assert control.ends_at is not None and control.ended_reason == "Prompt fixed"
    actions = list(
        AuditEvent.objects.filter(target_type="Control", target_id=str(control.pk)).values_list("action", flat=True)
    )
    assert sorted(actions) == ["control.end", "control.start"]
    assert all(e.actor_user == operator for e in AuditEvent.objects.filter(target_type="Control"))


def test_manual_control_form_refuses_bad_params(operator, catalog):
    response = client_for(operator).post("/controls/add/", {"kind": "deny", "params": "[1, 2]", "reason": "x"})
    assert response.status_code == 200
    assert "JSON object" in response.context["form"].errors["params"][0]
    assert not Control.objects.exists()


def test_ending_a_control_needs_a_reason(operator, controls):
    response = client_for(operator).post(f"/controls/{controls['a'].pk}/end/", {"reason": "  "})
    assert response.status_code == 302
    controls["a"].refresh_from_db()
    assert controls["a"].ends_at is None


def test_viewer_and_tenant_admin_cannot_add_or_end_controls(viewer_a, admin_a, controls):
    for user in (viewer_a, admin_a):
        client = client_for(user)
        assert client.get("/controls/add/").status_code == 403
        assert client.post("/controls/add/", {"kind": "deny", "reason": "no"}).status_code == 403
        assert client.post(f"/controls/{controls['a'].pk}/end/", {"reason": "no"}).status_code == 403
    controls["a"].refresh_from_db()
    assert controls["a"].ends_at is None
    assert Control.objects.count() == 3


# --- Alerts --------------------------------------------------------------------------------------------


def test_alerts_page_lists_unacknowledged_first_with_delivery(approver_a, budgets):
    _alert(budgets["a"], level=85, subject="Acme old acknowledged", acknowledged=True)
    _alert(budgets["a"], level=100, subject="Acme newest open")
    _alert(budgets["b"], level=100, subject=f"Globex open {MARKER_B}")
    body = get(client_for(approver_a), "/alerts/")
    assert body.index("Acme newest open") < body.index("Acme old acknowledged")
    assert MARKER_B not in body
    assert "ops@example.com" in body and 'badge--ok">sent' in body
    assert body.count('action="/alerts/') == 1, "only the open alert has an acknowledge button"
    assert re.search(r'Alerts <span class="badge badge--warn nav-count"[^>]*>1</span>', body)


def test_approver_acknowledges_an_alert_and_it_is_audited(approver_a, budgets):
    alert = _alert(budgets["a"], level=100)
    response = client_for(approver_a).post(f"/alerts/{alert.pk}/acknowledge/")
    assert response.status_code == 302 and response["Location"] == "/alerts/"
    alert.refresh_from_db()
    assert alert.acknowledged_by == approver_a and alert.acknowledged_at is not None
    assert AuditEvent.objects.filter(action="alert.acknowledge", actor_user=approver_a).count() == 1


def test_viewer_cannot_acknowledge_and_another_tenants_alert_is_404(viewer_a, approver_a, budgets):
    alert_a = _alert(budgets["a"])
    alert_b = _alert(budgets["b"], subject=f"Globex {MARKER_B}")
    body = get(client_for(viewer_a), "/alerts/")
    assert "Acknowledge</button>" not in body
    assert client_for(viewer_a).post(f"/alerts/{alert_a.pk}/acknowledge/").status_code == 403
    response = client_for(approver_a).post(f"/alerts/{alert_b.pk}/acknowledge/")
    assert response.status_code == 404 and MARKER_B not in response.content.decode()
    alert_a.refresh_from_db()
    alert_b.refresh_from_db()
    assert alert_a.acknowledged_at is None and alert_b.acknowledged_at is None


def test_alerts_page_empty_state(viewer_a):
    body = get(client_for(viewer_a), "/alerts/")
    assert "No alerts" in body and "badge--warn nav-count" not in body


# --- Navigation ----------------------------------------------------------------------------------------


def test_navigation_links_the_new_pages_keeping_the_tenant(operator, tenant_a, tenant_b):
    body = get(client_for(operator), "/budgets/?tenant=acme")
    for path in ("/budgets/", "/controls/", "/alerts/"):
        assert f'href="{path}?tenant=acme"' in body
    assert 'href="/budgets/?tenant=acme" aria-current="page"' in body
