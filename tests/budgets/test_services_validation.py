"""Control params and budget policies are checked by the services, the only write path: whatever the
API, a page form or a caller in code sends, a control or policy that preflight could not apply is
refused with a clear 400 (or form error) and nothing is stored; and a policy that was accepted never
makes preflight fail."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from budgets.models import Budget, Control, ControlKind
from budgets.periods import period_bounds
from budgets.services.budgets import budget_create, budget_update
from budgets.services.controls import control_start
from budgets.services.ladder import budgets_evaluate
from budgets.services.windows import windows_open
from budgets.state import state_changed
from finops.models import Workflow
from finops.pricing import NANOS_PER_USD
from tenants.errors import ApplicationError
from tenants.models import AuditEvent, Membership
from tenants.scope import Actor

from ..factories import MembershipFactory, UserFactory, WorkflowFactory
from .factories import BudgetFactory

pytestmark = pytest.mark.django_db
USD = NANOS_PER_USD

# (params, the words the error must contain)
BAD_PARAMS = [
    ({"max_output_tokens": "abc"}, "max_output_tokens must be a whole number of at least 1"),
    ({"max_output_tokens": 0}, "max_output_tokens must be a whole number of at least 1"),
    ({"max_output_tokens": 1.5}, "max_output_tokens must be a whole number"),
    ({"max_output_tokens": True}, "max_output_tokens must be a whole number"),
    ({"target_input_tokens": -3}, "target_input_tokens must be a whole number"),
    ({"target_input_tokens": None}, "target_input_tokens must be a whole number"),
    ({"steps": "1"}, "steps must be a whole number"),
    ({"steps": [1]}, "steps must be a whole number"),
    ({"ratio": 0}, "ratio must be a number greater than 0 and at most 1"),
    ({"ratio": "1.5"}, "ratio must be a number greater than 0 and at most 1"),
    ({"ratio": "half"}, "ratio must be a number"),
    ({"ratio": "NaN"}, "ratio must be a number"),
    ({"ratio": True}, "ratio must be a number"),
    ({"ratio": {"value": 0.5}}, "ratio must be a number"),
    ({"above_usd": "ten dollars"}, "above_usd must be an amount in USD"),
    ({"above_usd": -1}, "above_usd must be an amount in USD of at least 0"),
]

BAD_POLICIES = [
    ([{"at": "soft", "percent": 100, "kind": "cap_output_tokens", "params": {"max_output_tokens": "abc"}}],
     "policy[0].params.max_output_tokens must be a whole number"),
    ([{"at": "hard", "percent": 95, "kind": "compress_context", "params": {"ratio": "2"}}],
     "policy[0].params.ratio must be a number"),
    ([{"at": "soft", "percent": 85, "kind": "alert"},
      {"at": "forecast", "percent": 100, "kind": "downgrade_tier", "params": {"steps": 0}}],
     "policy[1].params.steps must be a whole number"),
    ([{"at": "hard", "percent": 90, "kind": "require_approval", "params": {"above_usd": "lots"}}],
     "policy[0].params.above_usd must be an amount in USD"),
    ([{"at": "hard", "percent": 90, "kind": "deny", "params": "none"}], "policy[0].params must be an object"),
    ({"at": "soft", "percent": 100, "kind": "alert"}, "policy must be a list of rungs"),
    (["deny"], "policy[0] must be an object"),
    ([{"at": "soon", "percent": 100, "kind": "alert"}], "policy[0].at must be one of soft, hard, forecast"),
    ([{"at": "soft", "percent": "100", "kind": "alert"}], "policy[0].percent must be a whole number"),
    ([{"at": "soft", "percent": 0, "kind": "alert"}], "policy[0].percent must be a whole number from 1 to 1000"),
    ([{"at": "soft", "percent": 100, "kind": "explode"}], "policy[0].kind must be one of"),
    ([{"at": "soft", "percent": 100, "kind": "deny", "priorities": ["urgent"]}], "policy[0].priorities"),
    ([{"at": "soft", "percent": 100, "kind": "deny", "when": "always"}], "policy[0] has unknown keys: when"),
]  # fmt: skip


def _nothing_stored() -> None:
    assert not Budget.objects.exists()
    assert not Control.objects.exists()
    assert not AuditEvent.objects.filter(action__in=["budget.create", "budget.update", "control.start"]).exists()


def _person(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_a(tenant_a):
    return MembershipFactory(tenant=tenant_a, role=Membership.Role.ADMIN, user=UserFactory(username="admin-a")).user


# --- Through the services -------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "message"), BAD_PARAMS)
def test_control_start_refuses_params_preflight_cannot_apply(tenant_a, params, message):
    with pytest.raises(ApplicationError) as caught:
        control_start(
            kind=ControlKind.CAP_OUTPUT_TOKENS, tenant=tenant_a, params=params, source="manual", reason="test"
        )

    assert caught.value.code == "invalid" and caught.value.status_code == 400
    assert message in caught.value.message
    assert list(caught.value.details) == ["params"] and message in caught.value.details["params"][0]
    _nothing_stored()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"params": [1, 2]}, "params"),
        ({"kind": "explode"}, "kind"),
        ({"priorities": ["urgent"]}, "priorities"),
        ({"environment": "moon"}, "environment"),
        ({"reason": "   "}, "reason"),
        ({"ends_at": "past"}, "ends_at"),
    ],
)
def test_control_start_refuses_other_bad_input_naming_the_field(tenant_a, fields, field):
    if fields.get("ends_at") == "past":
        fields["ends_at"] = timezone.now() - timedelta(minutes=1)
    arguments = {"kind": "deny", "tenant": tenant_a, "source": "manual", "reason": "test", **fields}

    with pytest.raises(ApplicationError) as caught:
        control_start(**arguments)

    assert caught.value.code == "invalid" and list(caught.value.details) == [field]
    _nothing_stored()


def test_control_start_keeps_good_params_and_records_the_actor(tenant_a, operator):
    params = {"max_output_tokens": 1, "ratio": "0.25", "steps": 2, "above_usd": "0", "note": "kept as before"}

    control = control_start(
        kind="compress_context", tenant=tenant_a, params=params, source="manual", reason="ok",
        actor=Actor(user=operator),
    )  # fmt: skip

    control.refresh_from_db()
    assert control.params == params and control.created_by == operator
    event = AuditEvent.objects.get(action="control.start")
    assert event.actor_user == operator and event.actor_key is None and event.after["params"] == params


@pytest.mark.parametrize(("policy", "message"), BAD_POLICIES)
def test_budget_create_refuses_policies_the_ladder_or_preflight_cannot_read(tenant_a, policy, message):
    with pytest.raises(ApplicationError) as caught:
        budget_create(name="Acme", tenant=tenant_a, hard_limit=10 * USD, policy=policy)

    assert caught.value.code == "invalid"
    assert list(caught.value.details) == ["policy"]
    assert message in caught.value.details["policy"][0] and message in caught.value.message
    _nothing_stored()


def test_budget_update_refuses_a_bad_policy_and_keeps_the_budget_as_it_was(tenant_a):
    good = [{"at": "soft", "percent": 100, "kind": "cap_output_tokens", "params": {"max_output_tokens": 512}}]
    budget = budget_create(name="Acme", tenant=tenant_a, soft_limit=5 * USD, hard_limit=10 * USD, policy=good)

    with pytest.raises(ApplicationError) as caught:
        budget_update(
            budget=budget,
            hard_limit=20 * USD,
            policy=[{"at": "soft", "percent": 100, "kind": "cap_output_tokens", "params": {"max_output_tokens": "x"}}],
        )

    assert list(caught.value.details) == ["policy"]
    budget.refresh_from_db()
    assert budget.policy == [{**good[0], "priorities": []}] and budget.hard_limit == 10 * USD
    assert not AuditEvent.objects.filter(action="budget.update").exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"metric": "euros"}, "metric"),
        ({"period": "fortnight"}, "period"),
        ({"hard_action": "explode"}, "hard_action"),
        ({"hard_limit": -5}, "hard_limit"),
        ({"hard_limit": 2**63}, "hard_limit"),
        ({"soft_limit": 20 * USD}, "soft_limit"),
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone"),
    ],
)
def test_budget_create_refuses_other_bad_fields_naming_them(tenant_a, fields, field):
    with pytest.raises(ApplicationError) as caught:
        budget_create(**{"name": "Acme", "tenant": tenant_a, "hard_limit": 10 * USD, **fields})

    assert caught.value.code == "invalid" and list(caught.value.details) == [field]
    _nothing_stored()


# --- Through the API ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "message"), BAD_PARAMS)
def test_controls_api_answers_400_for_bad_params_and_starts_nothing(api_platform, params, message):
    response = api_platform.client.post(
        "/api/v1/controls",
        {"kind": "cap_output_tokens", "tenant": "acme", "params": params, "reason": "INC-7"},
        format="json",
    )

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid" and message in error["message"]
    assert list(error["details"]) == ["params"] and message in error["details"]["params"][0]
    _nothing_stored()


@pytest.mark.parametrize(("policy", "message"), BAD_POLICIES)
def test_budgets_api_answers_400_for_a_bad_policy_and_creates_nothing(api_a, policy, message):
    response = api_a.client.post(
        "/api/v1/budgets", {"name": "Acme monthly", "hard_limit": "500.00", "policy": policy}, format="json"
    )

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid" and list(error["details"]) == ["policy"]
    assert message in error["details"]["policy"][0]
    _nothing_stored()


def test_budgets_api_patch_with_a_bad_policy_answers_400_and_changes_nothing(api_a, tenant_a):
    budget = budget_create(name="Acme", tenant=tenant_a, hard_limit=10 * USD)

    response = api_a.client.patch(
        f"/api/v1/budgets/{budget.pk}",
        {"hard_limit": "99.00", "policy": [{"at": "hard", "percent": 95, "kind": "downgrade_tier",
                                           "params": {"steps": "two"}}]},
        format="json",
    )  # fmt: skip

    assert response.status_code == 400, response.content
    assert "policy[0].params.steps" in response.json()["error"]["details"]["policy"][0]
    budget.refresh_from_db()
    assert budget.policy == [] and budget.hard_limit == 10 * USD
    assert not AuditEvent.objects.filter(action="budget.update").exists()


def test_api_writes_are_audited_with_the_key_that_made_them(api_a, api_platform):
    created = api_a.client.post("/api/v1/budgets", {"name": "Acme", "hard_limit": "5.00"}, format="json")
    started = api_platform.client.post(
        "/api/v1/controls", {"kind": "deny", "tenant": "acme", "reason": "INC-8"}, format="json"
    )

    assert created.status_code == 201 and started.status_code == 201
    budget_event = AuditEvent.objects.get(action="budget.create")
    control_event = AuditEvent.objects.get(action="control.start")
    assert (budget_event.actor_key, budget_event.actor_user) == (api_a.key, None)
    assert (control_event.actor_key, control_event.actor_user) == (api_platform.key, None)
    assert Control.objects.get().created_by is None


# --- Through the page forms -----------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "message"), BAD_PARAMS)
def test_control_form_shows_the_services_refusal_on_the_params_field(operator, tenant_a, catalog, params, message):
    response = _person(operator).post(
        "/controls/add/",
        {"kind": "cap_output_tokens", "tenant": "acme", "params": json.dumps(params), "reason": "Runaway"},
    )

    assert response.status_code == 200
    form = response.context["form"]
    assert list(form.errors) == ["params"] and message in form.errors["params"][0]
    assert message in response.content.decode()
    _nothing_stored()


def test_control_form_shows_a_past_end_and_a_blank_reason_on_their_fields(operator, tenant_a, catalog):
    client = _person(operator)
    past = (timezone.localtime() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")

    ended = client.post("/controls/add/", {"kind": "deny", "tenant": "acme", "reason": "x", "ends_at": past})
    blank = client.post("/controls/add/", {"kind": "deny", "tenant": "acme", "reason": "   "})

    assert ended.context["form"].errors == {"ends_at": ["The end must be in the future."]}
    assert blank.context["form"].errors == {"reason": ["Say why: the reason is shown with the control."]}
    _nothing_stored()


def test_budget_form_shows_a_stored_bad_policy_above_the_form_and_saves_nothing(admin_a, tenant_a, catalog):
    # A row written before the services checked policies (the page form has no policy field).
    budget = BudgetFactory(
        tenant=tenant_a,
        name="Legacy",
        hard_limit=10 * USD,
        policy=[{"at": "soft", "percent": 100, "kind": "cap_output_tokens", "params": {"max_output_tokens": "abc"}}],
    )

    response = _person(admin_a).post(
        f"/budgets/{budget.pk}/edit/",
        {"name": "Legacy renamed", "tenant": "acme", "workflow": "", "environment": "", "tier": "",
         "metric": "cost", "period": "month", "time_zone": "UTC", "soft_limit": "", "hard_limit": "20",
         "hard_action": "deny", "is_active": "on"},
    )  # fmt: skip

    assert response.status_code == 200
    errors = response.context["form"].non_field_errors()
    assert len(errors) == 1 and "policy[0].params.max_output_tokens must be a whole number" in errors[0]
    budget.refresh_from_db()
    assert (budget.name, budget.hard_limit) == ("Legacy", 10 * USD)


# --- An accepted policy never makes preflight fail -------------------------------------------------------

# Per param: values preflight can apply, and values it cannot.
_PARAM_VALUES = {
    "max_output_tokens": ([1, 64, 100_000], [0, "abc", 2.5, None]),
    "target_input_tokens": ([1, 500, 10**12], [-1, "500"]),
    "steps": ([1, 3, 50], [0, "1", True]),
    "ratio": (["0.5", "1", 0.001, 1], ["0", "1.01", "x", False]),
    "above_usd": (["0", "0.01", 5, "12.5", None], ["-1", "ten"]),
}
_KINDS = ["alert", "hard_action", *ControlKind.values]


def _random_policy(rng: random.Random) -> list[dict]:
    policy = []
    for _ in range(rng.randint(1, 4)):
        params = {
            key: rng.choice(bad if rng.random() < 0.1 else good)
            for key, (good, bad) in _PARAM_VALUES.items()
            if rng.random() < 0.4
        }
        rung = {"at": rng.choice(["soft", "hard", "forecast"]), "percent": rng.choice([1, 50, 100]),
                "kind": rng.choice(_KINDS), "params": params}  # fmt: skip
        if rng.random() < 0.5:
            rung["priorities"] = rng.sample(["low", "normal", "high", "critical"], rng.randint(0, 2))
        policy.append(rung)
    return policy


def test_a_policy_the_service_accepts_never_makes_preflight_fail(api_a, tenant_a, catalog):
    """Random policies, good and bad, through budget_create: the refused ones store nothing; for every
    accepted one the ladder starts its controls and preflight, with each control in force, answers 200."""
    WorkflowFactory(slug="batch-tagging", priority=Workflow.Priority.LOW)
    rng = random.Random(20261120)
    accepted = refused = applied = 0
    for attempt in range(50):
        policy = _random_policy(rng)
        try:
            budget = budget_create(
                name=f"Fuzz {attempt}", tenant=tenant_a, soft_limit=1 * USD, hard_limit=2 * USD,
                hard_action=rng.choice(["deny", "require_approval", "downgrade"]), policy=policy,
            )  # fmt: skip
        except ApplicationError as error:
            assert list(error.details) == ["policy"], error.details
            assert not Budget.objects.filter(name=f"Fuzz {attempt}").exists()
            refused += 1
            continue
        accepted += 1
        now = timezone.now()
        start, end = period_bounds(budget.period, budget.time_zone, now)
        window = windows_open([(budget, start, end)])[(budget.pk, start)]
        window.spent = 3 * USD  # past every level of every rung
        window.save(update_fields=["spent"])
        budgets_evaluate(now=now)
        state_changed()
        for body in (
            {"model": "gpt-4o", "input_tokens": 1000, "max_output_tokens": 4000},
            {"model": "o3", "workflow": "batch-tagging", "input_tokens": 5, "max_output_tokens": 1},
            {"model": "gpt-4o", "environment": "prod", "prompt": "Summarise this ticket, please."},
        ):
            response = api_a.client.post("/api/v1/preflight", body, format="json")
            assert response.status_code == 200, (policy, body, response.content)
            applied += len(response.json()["controls"])
        budget_update(budget=budget, is_active=False)  # ends its controls: the next policy stands alone
        state_changed()
    assert accepted >= 10 and refused >= 10, (accepted, refused)
    assert applied > 0, "no control was ever in force: the test proved nothing"


def test_a_policy_stored_before_params_were_checked_skips_its_rung_not_the_evaluation(api_a, tenant_a, catalog):
    legacy = BudgetFactory(
        tenant=tenant_a,
        soft_limit=1 * USD,
        policy=[{"at": "soft", "percent": 100, "kind": "cap_output_tokens", "params": {"max_output_tokens": "abc"}}],
    )
    checked = budget_create(name="Checked", tenant=tenant_a, soft_limit=1 * USD, policy=[
        {"at": "soft", "percent": 100, "kind": "cap_output_tokens", "params": {"max_output_tokens": 300}},
    ])  # fmt: skip
    now = timezone.now()
    for budget in (legacy, checked):
        start, end = period_bounds(budget.period, budget.time_zone, now)
        window = windows_open([(budget, start, end)])[(budget.pk, start)]
        window.spent = 2 * USD
        window.save(update_fields=["spent"])

    summary = budgets_evaluate(now=now)

    assert summary["budgets"] == 2 and summary["controls_started"] == 1
    assert list(Control.objects.values_list("budget", "params")) == [(checked.pk, {"max_output_tokens": 300})]
    state_changed()
    response = api_a.client.post("/api/v1/preflight", {"model": "gpt-4o", "input_tokens": 10}, format="json")
    assert response.status_code == 200 and response.json()["max_output_tokens"] == 300
