"""POST /api/v1/preflight: decisions, reservations, settle-once and expiry, through the API."""

from datetime import timedelta

import pytest
from django.utils import timezone

from budgets.models import BudgetWindow, Reservation
from budgets.services.reservations import reservations_expire
from finops.pricing import NANOS_PER_USD

from .factories import BudgetFactory

URL = "/api/v1/preflight"
USD = NANOS_PER_USD


def _ask(api, **body):
    body.setdefault("model", "gpt-4o")
    body.setdefault("input_tokens", 1000)
    body.setdefault("max_output_tokens", 500)
    response = api.client.post(URL, body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_allow_without_budgets_reserves_nothing_and_estimates_exactly(api_a, catalog):
    out = _ask(api_a, workflow="summary")

    assert out["decision"] == "allow"
    assert out["model"] == "gpt-4o"
    # 1000 input at $2.50/M + 500 output at $10/M = $0.0025 + $0.005
    assert out["estimated_cost_usd"] == "0.007500000"
    assert out["reservation_id"]
    assert out["budgets"] == []


def test_hard_limit_reserves_and_denies_when_full(api_a, catalog, tenant_a):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=int(0.02 * USD))

    first = _ask(api_a)
    second = _ask(api_a)
    third = _ask(api_a)

    assert [first["decision"], second["decision"], third["decision"]] == ["allow", "allow", "deny"]
    window = BudgetWindow.objects.get(budget=budget)
    assert window.reserved == 2 * 7_500_000
    assert third["reservation_id"] is None
    assert "Hard limit" in " ".join(third["reasons"])
    assert first["budgets"][0]["remaining"] == "0.012500000"


def _usage(api, reservation_id, request_id="call-1", **extra):
    record = {
        "request_id": request_id,
        "model": "gpt-4o",
        "workflow": "summary",
        "input_tokens": 1000,
        "output_tokens": 200,
        "reservation_id": reservation_id,
        **extra,
    }
    response = api.client.post("/api/v1/usage", record, format="json")
    assert response.status_code in (200, 207), response.content
    return response.json()


def test_usage_with_the_reservation_settles_it_once_even_when_replayed(api_a, catalog, tenant_a):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=USD)
    out = _ask(api_a, workflow="summary")
    window = BudgetWindow.objects.get(budget=budget)
    assert window.reserved == 7_500_000

    _usage(api_a, out["reservation_id"])
    _usage(api_a, out["reservation_id"])  # a replay: duplicate, nothing moves
    _usage(api_a, out["reservation_id"], request_id="call-2")  # another record naming it: cost only

    window.refresh_from_db()
    reservation = Reservation.objects.get(pk=out["reservation_id"])
    assert reservation.status == Reservation.Status.SETTLED
    assert reservation.usage_record_id is not None
    # 1000 input * $2.50/M + 200 output * $10/M = $0.0045 per record, two records stored
    assert window.spent == 2 * 4_500_000
    assert window.reserved == 0


def test_unsettled_reservations_expire_and_release_their_hold(api_a, catalog, tenant_a):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=int(0.01 * USD))
    out = _ask(api_a)
    assert _ask(api_a)["decision"] == "deny"

    assert reservations_expire(now=timezone.now() + timedelta(minutes=11)) == 1

    window = BudgetWindow.objects.get(budget=budget)
    assert window.reserved == 0
    assert Reservation.objects.get(pk=out["reservation_id"]).status == Reservation.Status.EXPIRED
    assert _ask(api_a)["decision"] == "allow"
    # Usage arriving after expiry counts its cost and releases nothing a second time.
    _usage(api_a, out["reservation_id"])
    window.refresh_from_db()
    assert window.spent == 4_500_000
    assert window.reserved == 7_500_000


def test_token_budgets_reserve_input_plus_output_tokens(api_a, catalog, tenant_a):
    budget = BudgetFactory(tenant=tenant_a, metric="tokens", hard_limit=3000)

    assert _ask(api_a)["decision"] == "allow"
    assert _ask(api_a)["decision"] == "allow"
    denied = _ask(api_a)

    assert denied["decision"] == "deny"
    assert BudgetWindow.objects.get(budget=budget).reserved == 3000
    assert denied["budgets"][0]["remaining"] == 0


def test_budget_scope_decides_which_calls_it_holds(api_a, api_b, catalog, tenant_a):
    BudgetFactory(tenant=tenant_a, environment="prod", hard_limit=1)  # room for nothing

    assert _ask(api_a, environment="dev")["decision"] == "allow"
    assert _ask(api_b)["decision"] == "allow"
    assert _ask(api_a)["decision"] == "deny"


def test_hard_action_downgrade_moves_to_the_catalog_substitute(api_a, catalog, tenant_a):
    tier = catalog["o3"].tier
    BudgetFactory(tenant=tenant_a, tier=tier, hard_limit=1, hard_action="downgrade")

    out = _ask(api_a, model="o3")

    assert out["decision"] == "allow"
    assert out["model"] == "gpt-4o"
    assert any("Downgraded o3 to gpt-4o" in r for r in out["reasons"])


def test_hard_action_downgrade_without_a_substitute_denies_and_says_why(api_a, catalog, tenant_a):
    BudgetFactory(tenant=tenant_a, hard_limit=1, hard_action="downgrade")

    out = _ask(api_a, model="claude-sonnet-4-5")

    assert out["decision"] == "deny"
    assert any("no cheaper substitute" in r for r in out["reasons"])


def test_hard_action_require_approval_then_approved_run_is_allowed_once(api_a, catalog, tenant_a, operator):
    BudgetFactory(tenant=tenant_a, hard_limit=1, hard_action="require_approval")

    first = _ask(api_a)
    assert first["decision"] == "needs_approval"
    approval_id = first["approval_id"]
    assert _ask(api_a, approval_id=approval_id)["decision"] == "needs_approval"  # still pending

    from rest_framework.test import APIClient

    person = APIClient()
    person.force_login(operator)
    decided = person.post(f"/api/v1/approvals/{approval_id}/approve", {"comment": "quarter close"}, format="json")
    assert decided.status_code == 200, decided.content

    allowed = _ask(api_a, approval_id=approval_id)
    again = _ask(api_a, approval_id=approval_id)
    assert allowed["decision"] == "allow" and allowed["approval_status"] == "consumed"
    assert again["decision"] == "needs_approval"


def test_unknown_model_is_denied_only_where_a_cost_limit_needs_a_price(api_a, catalog, tenant_a):
    assert _ask(api_a, model="brand-new-model")["decision"] == "allow"

    BudgetFactory(tenant=tenant_a, hard_limit=USD)
    out = _ask(api_a, model="brand-new-model")

    assert out["decision"] == "deny"
    assert out["estimated_cost_usd"] is None
    assert any("not in the catalog" in r for r in out["reasons"])


def test_messages_are_counted_with_tiktoken_and_output_defaults_to_the_model_limit(api_a, catalog):
    response = api_a.client.post(
        URL, {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}]}, format="json"
    )

    out = response.json()
    assert out["input_tokens"] == 3 + 2 + 1 + 3  # per-message overhead + "user" + "hello world" + priming
    assert out["max_output_tokens"] == 16384


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "gpt-4o"}, "non_field_errors"),
        ({"model": "gpt-4o", "input_tokens": 5, "prompt": "x"}, "non_field_errors"),
        ({"model": "gpt-4o", "input_tokens": -1}, "input_tokens"),
        ({"model": "gpt-4o", "input_tokens": 5, "environment": "moon"}, "environment"),
        ({"model": "gpt-4o", "input_tokens": 5, "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "gpt-4o", "messages": [{"content": "no role"}]}, "messages"),
        ({"model": 5, "input_tokens": 5}, "model"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api_a, catalog, body, field):
    response = api_a.client.post(URL, body, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["details"]


def test_platform_key_names_the_tenant_and_tenant_keys_cannot_name_another(api_a, api_platform, catalog, tenant_a):
    BudgetFactory(tenant=tenant_a, hard_limit=1)

    missing = api_platform.client.post(URL, {"model": "gpt-4o", "input_tokens": 5}, format="json")
    as_platform = api_platform.client.post(URL, {"tenant": "acme", "model": "gpt-4o", "input_tokens": 5}, format="json")
    other = api_a.client.post(URL, {"tenant": "globex", "model": "gpt-4o", "input_tokens": 5}, format="json")

    assert missing.status_code == 400 and missing.json()["error"]["code"] == "tenant_required"
    assert as_platform.json()["decision"] == "deny"
    assert other.status_code == 404


def test_a_key_without_the_preflight_scope_is_refused(make_key, tenant_a, catalog):
    reader = make_key(tenant_a, scopes="read")

    response = reader.client.post(URL, {"model": "gpt-4o", "input_tokens": 5}, format="json")

    assert response.status_code == 403


def test_repeated_calls_needing_approval_share_one_open_request(api_a, catalog, tenant_a):
    BudgetFactory(tenant=tenant_a, hard_limit=1, hard_action="require_approval")

    first, second = _ask(api_a), _ask(api_a)
    other_model = _ask(api_a, model="claude-sonnet-4-5")

    assert first["approval_id"] == second["approval_id"] != other_model["approval_id"]


def test_an_approval_is_not_used_up_by_a_call_that_did_not_need_it(api_a, catalog, tenant_a, operator):
    from rest_framework.test import APIClient

    budget = BudgetFactory(tenant=tenant_a, hard_limit=1, hard_action="require_approval")
    approval_id = _ask(api_a)["approval_id"]
    person = APIClient()
    person.force_login(operator)
    person.post(f"/api/v1/approvals/{approval_id}/approve", {}, format="json")
    budget.hard_limit = USD
    budget.save()
    BudgetWindow.objects.filter(budget=budget).update(hard_limit=USD)

    roomy = _ask(api_a, approval_id=approval_id)

    assert roomy["decision"] == "allow" and roomy["approval_status"] == "approved"


def test_a_released_reservation_gives_its_hold_back_once(api_a, api_b, catalog, tenant_a):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=USD)
    out = _ask(api_a)
    url = f"/api/v1/reservations/{out['reservation_id']}/release"

    assert api_b.client.post(url).status_code == 404
    first = api_a.client.post(url)
    second = api_a.client.post(url)

    assert first.status_code == 200 and first.json() == {
        "id": out["reservation_id"],
        "status": "released",
        "released": True,
    }
    assert second.json()["released"] is False
    assert BudgetWindow.objects.get(budget=budget).reserved == 0
    # Usage arriving afterwards counts its cost and releases nothing again.
    _usage(api_a, out["reservation_id"])
    assert BudgetWindow.objects.get(budget=budget).reserved == 0


def test_another_process_change_is_seen_within_the_state_ttl(api_a, catalog, tenant_a, monkeypatch):
    from budgets import state
    from budgets.models import Budget

    budget = BudgetFactory(tenant=tenant_a, hard_limit=1)
    assert _ask(api_a)["decision"] == "deny"
    clock = [state.time.monotonic() + 100]
    monkeypatch.setattr(state.time, "monotonic", lambda: clock[0])
    _ask(api_a)  # checks the fingerprint now

    # What another process does: no signal reaches this one.
    Budget.objects.filter(pk=budget.pk).update(is_active=False, updated_at=timezone.now())
    clock[0] += 0.5
    stale = _ask(api_a)
    clock[0] += 1.0
    fresh = _ask(api_a)

    assert stale["decision"] == "deny"
    assert fresh["decision"] == "allow" and fresh["budgets"] == []


def test_a_batch_settles_each_of_its_reservations_once(api_a, catalog, tenant_a):
    budget = BudgetFactory(tenant=tenant_a, hard_limit=USD)
    first, second = _ask(api_a), _ask(api_a)
    record = {"model": "gpt-4o", "input_tokens": 1000, "output_tokens": 200}
    batch = [
        {**record, "request_id": "b-1", "reservation_id": first["reservation_id"]},
        {**record, "request_id": "b-2", "reservation_id": second["reservation_id"]},
        {**record, "request_id": "b-3", "reservation_id": first["reservation_id"]},
    ]

    response = api_a.client.post("/api/v1/usage", {"records": batch}, format="json")

    assert response.status_code == 200, response.content
    window = BudgetWindow.objects.get(budget=budget)
    assert (window.spent, window.reserved) == (3 * 4_500_000, 0)
    statuses = set(Reservation.objects.values_list("status", flat=True))
    assert statuses == {Reservation.Status.SETTLED}
