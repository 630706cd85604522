"""Every change an operator makes in the Django admin writes one AuditEvent per row, in the transaction
of the change: who, which tenant (None for platform-wide rows), the target, and the row as stored before
and after (Decimals as exact strings, datetimes as ISO 8601, the key's hash never).

The admin is driven over HTTP as a browser would: its forms are read from the page and posted back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from django.db import DatabaseError
from django.db.models import Max
from django.forms import BoundField, SplitDateTimeWidget
from django.test import Client
from django.urls import reverse

from finops.models import LlmModel, ModelPrice, ModelTier, Workflow
from tenants.models import ApiKey, AuditEvent, Membership, Tenant

from ..factories import (
    LlmModelFactory,
    MembershipFactory,
    ModelPriceFactory,
    ModelTierFactory,
    TenantFactory,
    UserFactory,
    WorkflowFactory,
)


@pytest.fixture
def staff(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@contextmanager
def new_events() -> Iterator[list[AuditEvent]]:
    """The events written inside the block, oldest first."""
    last = AuditEvent.objects.aggregate(last=Max("id"))["last"] or 0
    events: list[AuditEvent] = []
    yield events
    events.extend(AuditEvent.objects.filter(id__gt=last).order_by("id"))


def _posted(field: BoundField) -> dict[str, Any]:
    value = field.value()
    if isinstance(field.field.widget, SplitDateTimeWidget):
        day, clock = field.field.widget.decompress(value)
        return {f"{field.html_name}_0": day or "", f"{field.html_name}_1": clock or ""}
    if value is None or value is False:
        return {}  # what a browser sends for an empty field or an unticked box
    return {field.html_name: value}


def admin_form(client: Client, url: str, **changes: Any) -> dict[str, Any]:
    """The admin form at `url` (inline rows and management forms included) as a browser would post it
    unchanged, with `changes` applied."""
    response = client.get(url)
    assert response.status_code == 200
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    data: dict[str, Any] = {}
    for form in forms:
        for field in form:
            data.update(_posted(field))
    data.update(changes)
    return data


def inline_row(data: dict[str, Any], prefix: str, pk: int) -> str:
    """The field prefix (`prices-1-`) of the inline row that edits row `pk`."""
    total = int(data[f"{prefix}-TOTAL_FORMS"])
    return next(f"{prefix}-{i}-" for i in range(total) if str(data.get(f"{prefix}-{i}-id")) == str(pk))


def _post(client: Client, url: str, data: dict[str, Any]) -> None:
    response = client.post(url, data)
    if response.status_code != 302:  # the admin shows the form again with its errors
        pytest.fail(f"{response.status_code}: {response.context and response.context.get('errors')!r}")


def _url(model: type, view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def _event_of(events: list[AuditEvent], operator, action: str, target: Any, tenant_id: int | None) -> AuditEvent:
    assert [e.action for e in events] == [action]
    event = events[0]
    assert event.actor_user_id == operator.pk and event.actor_key_id is None
    assert (event.target_type, event.target_id) == (type(target).__name__, str(target.pk))
    assert event.tenant_id == tenant_id
    return event


# --- tenants ------------------------------------------------------------------------------------------


def test_creating_a_tenant_is_audited_under_the_new_tenant(staff, operator):
    data = admin_form(staff, _url(Tenant, "add"), slug="initech", name="Initech", external_id="crm-42")
    with new_events() as events:
        _post(staff, _url(Tenant, "add"), data)

    tenant = Tenant.objects.get(slug="initech")
    event = _event_of(events, operator, "tenant.create", tenant, tenant.pk)
    assert event.before is None
    assert event.after == {
        "id": tenant.pk,
        "slug": "initech",
        "name": "Initech",
        "external_id": "crm-42",
        "status": "active",
        "time_zone": "UTC",
        "created_at": tenant.created_at.isoformat(),
    }


def test_changing_a_tenant_records_before_and_after(staff, operator, tenant_a):
    url = _url(Tenant, "change", tenant_a.pk)
    with new_events() as events:
        _post(staff, url, admin_form(staff, url, status="suspended", name="Acme Renamed"))

    event = _event_of(events, operator, "tenant.update", tenant_a, tenant_a.pk)
    assert (event.before["status"], event.before["name"]) == ("active", "Acme Corp (marker-tenant-a)")
    assert (event.after["status"], event.after["name"]) == ("suspended", "Acme Renamed")
    assert event.before["slug"] == event.after["slug"] == "acme"


def test_saving_a_tenant_unchanged_records_nothing(staff, tenant_a):
    url = _url(Tenant, "change", tenant_a.pk)
    with new_events() as events:
        _post(staff, url, admin_form(staff, url))
    assert events == []


def test_deleting_a_tenant_is_audited_with_its_last_state(staff, operator):
    tenant = TenantFactory(slug="initech", name="Initech")
    tenant_id = tenant.pk
    with new_events() as events:
        _post(staff, _url(Tenant, "delete", tenant_id), {"post": "yes"})

    assert not Tenant.objects.filter(pk=tenant_id).exists()
    event = _event_of(events, operator, "tenant.delete", tenant, tenant_id)
    assert event.before is not None and (event.before["id"], event.before["slug"]) == (tenant_id, "initech")
    assert event.after is None


# --- memberships --------------------------------------------------------------------------------------


def test_membership_create_role_change_and_delete_are_audited_under_their_tenant(staff, operator, tenant_b):
    person = UserFactory(username="new-member")
    add = _url(Membership, "add")
    with new_events() as created:
        _post(staff, add, admin_form(staff, add, user=person.pk, tenant=tenant_b.pk, role="viewer"))
    membership = Membership.objects.get(user=person, tenant=tenant_b)
    event = _event_of(created, operator, "membership.create", membership, tenant_b.pk)
    assert event.before is None
    assert (event.after["user_id"], event.after["tenant_id"], event.after["role"]) == (person.pk, tenant_b.pk, "viewer")

    change = _url(Membership, "change", membership.pk)
    with new_events() as changed:
        _post(staff, change, admin_form(staff, change, role="admin"))
    event = _event_of(changed, operator, "membership.update", membership, tenant_b.pk)
    assert (event.before["role"], event.after["role"]) == ("viewer", "admin")

    with new_events() as deleted:
        _post(staff, _url(Membership, "delete", membership.pk), {"post": "yes"})
    assert not Membership.objects.filter(pk=membership.pk).exists()
    event = _event_of(deleted, operator, "membership.delete", membership, tenant_b.pk)
    assert (event.before["role"], event.after) == ("admin", None)


def test_memberships_edited_inline_under_their_tenant_are_audited_one_by_one(staff, operator, tenant_a):
    promoted = MembershipFactory(tenant=tenant_a, role=Membership.Role.VIEWER)
    removed = MembershipFactory(tenant=tenant_a, role=Membership.Role.APPROVER)
    newcomer = UserFactory(username="newcomer")
    url = _url(Tenant, "change", tenant_a.pk)
    data = admin_form(staff, url)
    data[inline_row(data, "memberships", promoted.pk) + "role"] = "admin"
    data[inline_row(data, "memberships", removed.pk) + "DELETE"] = "on"
    data.update(
        {
            "memberships-TOTAL_FORMS": "3",
            "memberships-2-id": "",
            "memberships-2-tenant": tenant_a.pk,
            "memberships-2-user": newcomer.pk,
            "memberships-2-role": "approver",
        }
    )
    with new_events() as events:
        _post(staff, url, data)

    added = Membership.objects.get(user=newcomer, tenant=tenant_a)
    assert not Membership.objects.filter(pk=removed.pk).exists()
    by_action = {e.action: e for e in events}
    assert sorted(by_action) == ["membership.create", "membership.delete", "membership.update"]
    assert len(events) == 3  # one per row; the tenant itself did not change
    assert all(e.tenant_id == tenant_a.pk and e.actor_user_id == operator.pk for e in events)

    update, delete, create = (by_action[f"membership.{verb}"] for verb in ("update", "delete", "create"))
    assert update.target_id == str(promoted.pk) and (update.before["role"], update.after["role"]) == ("viewer", "admin")
    assert delete.target_id == str(removed.pk) and (delete.before["role"], delete.after) == ("approver", None)
    assert create.target_id == str(added.pk) and create.before is None and create.after["role"] == "approver"


# --- API keys -----------------------------------------------------------------------------------------


def test_renaming_a_key_and_setting_its_expiry_is_audited_without_its_hash(staff, operator, api_a, tenant_a):
    key = api_a.key
    url = _url(ApiKey, "change", key.pk)
    data = admin_form(staff, url, name="billing service", expires_at_0="2030-01-31", expires_at_1="12:00:00")
    with new_events() as events:
        _post(staff, url, data)

    event = _event_of(events, operator, "api_key.update", key, tenant_a.pk)
    assert (event.before["name"], event.after["name"]) == ("test key", "billing service")
    assert event.before["expires_at"] is None
    assert event.after["expires_at"] == "2030-01-31T12:00:00+00:00"
    assert event.after["revoked_at"] is None and event.after["scopes"] == key.scopes
    assert "secret_hash" not in event.before and "secret_hash" not in event.after
    assert key.secret_hash not in str(event.before) + str(event.after)


def test_revoking_a_key_goes_through_the_revoke_service(staff, operator, api_a, tenant_a):
    assert api_a.client.get("/api/v1/usage").status_code == 200
    key = api_a.key
    url = _url(ApiKey, "change", key.pk)
    data = admin_form(staff, url, revoked_at_0="2099-01-01", revoked_at_1="00:00:00")
    before = datetime.now(UTC)
    with new_events() as events:
        _post(staff, url, data)

    key.refresh_from_db()
    assert key.revoked_at is not None and before <= key.revoked_at <= datetime.now(UTC)  # stamped by the service
    _event_of(events, operator, "api_key.revoke", key, tenant_a.pk)  # and nothing else: no api_key.update
    assert api_a.client.get("/api/v1/usage").status_code == 401


def test_a_revoked_key_stays_revoked_and_a_key_never_changes_tenant(staff, api_a, tenant_a, tenant_b):
    key = api_a.key
    url = _url(ApiKey, "change", key.pk)
    # The tenant is not a field of the change form: a forged value is ignored.
    _post(staff, url, admin_form(staff, url, tenant=str(tenant_b.pk)))
    key.refresh_from_db()
    assert key.tenant_id == tenant_a.pk
    _post(staff, url, admin_form(staff, url, revoked_at_0="2099-01-01", revoked_at_1="00:00:00"))
    key.refresh_from_db()
    revoked = key.revoked_at
    assert revoked is not None
    # Clearing revoked_at is not possible any more (read-only once set): a forged empty value is ignored.
    _post(staff, url, admin_form(staff, url, revoked_at_0="", revoked_at_1=""))
    key.refresh_from_db()
    assert key.revoked_at == revoked
    assert api_a.client.get("/api/v1/usage").status_code == 401


@pytest.mark.parametrize("scopes", ['["read", "root"]', "[]", '"read"'])
def test_a_key_with_unknown_scopes_is_refused_with_the_form_error(staff, api_a, scopes):
    url = _url(ApiKey, "change", api_a.key.pk)
    with new_events() as events:
        response = staff.post(url, admin_form(staff, url, scopes=scopes))
    assert response.status_code == 200 and 'class="errorlist' in response.content.decode()
    assert events == []
    before = set(api_a.key.scopes)
    api_a.key.refresh_from_db()
    assert set(api_a.key.scopes) == before


def test_a_membership_never_moves_to_another_tenant(staff, tenant_a, tenant_b):
    membership = MembershipFactory(tenant=tenant_a, role=Membership.Role.VIEWER)
    url = _url(Membership, "change", membership.pk)
    _post(staff, url, admin_form(staff, url, tenant=str(tenant_b.pk), role=Membership.Role.ADMIN))
    membership.refresh_from_db()
    assert (membership.tenant_id, membership.role) == (tenant_a.pk, Membership.Role.ADMIN)


def test_granting_operator_rights_is_audited_without_the_password(staff, operator):
    person = UserFactory(username="future-operator")
    url = reverse("admin:auth_user_change", args=[person.pk])
    with new_events() as events:
        _post(staff, url, admin_form(staff, url, is_staff="on", is_superuser="on"))
    event = _event_of(events, operator, "user.update", person, None)
    assert (event.before["is_staff"], event.after["is_staff"]) == (False, True)
    assert event.after["is_superuser"] is True
    assert "password" not in event.after and person.password not in str(event.after)


# --- workflows and the catalog ------------------------------------------------------------------------


def test_workflow_create_update_and_delete_are_audited_as_platform_events(staff, operator):
    tier = ModelTierFactory(slug="standard", rank=2)
    add = _url(Workflow, "add")
    data = admin_form(staff, add, slug="ticket-summary", name="Ticket summary", approval_threshold_usd="12.34")
    data["default_tier"] = tier.pk
    with new_events() as created:
        _post(staff, add, data)
    workflow = Workflow.objects.get(slug="ticket-summary")
    event = _event_of(created, operator, "workflow.create", workflow, None)
    assert event.before is None
    # Money-like Decimals exactly as stored (the column's places), datetimes as ISO 8601.
    assert event.after["approval_threshold_usd"] == "12.3400"
    assert event.after["prompt_review_threshold_pct"] == "10.00"
    assert event.after["default_tier_id"] == tier.pk
    assert event.after["created_at"] == workflow.created_at.isoformat()
    assert datetime.fromisoformat(event.after["updated_at"]) == workflow.updated_at

    change = _url(Workflow, "change", workflow.pk)
    with new_events() as changed:
        _post(staff, change, admin_form(staff, change, priority="critical", approval_threshold_usd="0.0001"))
    event = _event_of(changed, operator, "workflow.update", workflow, None)
    assert (event.before["priority"], event.after["priority"]) == ("normal", "critical")
    assert (event.before["approval_threshold_usd"], event.after["approval_threshold_usd"]) == ("12.3400", "0.0001")
    assert Decimal(event.after["approval_threshold_usd"]) == Decimal("0.0001")

    with new_events() as deleted:
        _post(staff, _url(Workflow, "delete", workflow.pk), {"post": "yes"})
    assert not Workflow.objects.filter(pk=workflow.pk).exists()
    event = _event_of(deleted, operator, "workflow.delete", workflow, None)
    assert event.before["slug"] == "ticket-summary" and event.after is None


def test_model_tier_create_and_update_are_audited(staff, operator):
    add = _url(ModelTier, "add")
    with new_events() as created:
        _post(staff, add, admin_form(staff, add, slug="frontier", name="Frontier", rank="9"))
    tier = ModelTier.objects.get(slug="frontier")
    event = _event_of(created, operator, "model_tier.create", tier, None)
    assert event.after == {"id": tier.pk, "slug": "frontier", "name": "Frontier", "rank": 9}

    change = _url(ModelTier, "change", tier.pk)
    with new_events() as changed:
        _post(staff, change, admin_form(staff, change, rank="8"))
    event = _event_of(changed, operator, "model_tier.update", tier, None)
    assert (event.before["rank"], event.after["rank"]) == (9, 8)


@pytest.fixture
def priced_model(db) -> LlmModel:
    model = LlmModelFactory(name="gpt-audit", tier=ModelTierFactory(slug="standard", rank=2))
    ModelPriceFactory(model=model, effective_from=datetime(2024, 1, 1, tzinfo=UTC), input=Decimal("2.5"))
    ModelPriceFactory(model=model, effective_from=datetime(2025, 1, 1, tzinfo=UTC), input=Decimal("0.000001"))
    return model


def test_deleting_a_model_is_audited(staff, operator, priced_model):
    with new_events() as events:
        _post(staff, _url(LlmModel, "delete", priced_model.pk), {"post": "yes"})
    assert not LlmModel.objects.filter(pk=priced_model.pk).exists()
    event = _event_of(events, operator, "llm_model.delete", priced_model, None)
    assert (event.before["name"], event.before["tier_id"], event.after) == ("gpt-audit", priced_model.tier_id, None)


def test_deleting_a_price_is_audited_with_exact_prices(staff, operator, priced_model):
    price = priced_model.prices.get(effective_from__year=2025)
    with new_events() as events:
        _post(staff, _url(ModelPrice, "delete", price.pk), {"post": "yes"})
    assert not ModelPrice.objects.filter(pk=price.pk).exists()
    event = _event_of(events, operator, "model_price.delete", price, None)
    assert event.after is None
    assert event.before["model_id"] == priced_model.pk
    assert event.before["effective_from"] == "2025-01-01T00:00:00+00:00"
    assert (event.before["input"], event.before["output"], event.before["reasoning"]) == ("0.000001", "10.000000", None)


def test_deleting_a_price_inline_under_its_model_is_audited_once(staff, operator, priced_model):
    gone = priced_model.prices.get(effective_from__year=2024)
    kept = priced_model.prices.get(effective_from__year=2025)
    url = _url(LlmModel, "change", priced_model.pk)
    data = admin_form(staff, url)
    data[inline_row(data, "prices", gone.pk) + "DELETE"] = "on"
    with new_events() as events:
        _post(staff, url, data)

    assert list(priced_model.prices.values_list("pk", flat=True)) == [kept.pk]
    # The model's own save goes through its service (one llm_model.update); the untouched price is not saved.
    assert [e.action for e in events] == ["llm_model.update", "model_price.delete"]
    event = _event_of(events[1:], operator, "model_price.delete", gone, None)
    assert (event.before["id"], event.before["input"], event.after) == (gone.pk, "2.500000", None)


# --- bulk deletion and the one-event-per-row rule -----------------------------------------------------


def _two_workflows(tenant_a, tenant_b):
    return [WorkflowFactory(), WorkflowFactory()], [None, None]


def _two_tiers(tenant_a, tenant_b):
    return [ModelTierFactory(slug="economy", rank=1), ModelTierFactory(slug="premium", rank=3)], [None, None]


def _two_models(tenant_a, tenant_b):
    return [LlmModelFactory(), LlmModelFactory()], [None, None]


def _two_prices(tenant_a, tenant_b):
    model = LlmModelFactory()
    starts = [datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)]
    return [ModelPriceFactory(model=model, effective_from=at) for at in starts], [None, None]


def _two_tenants(tenant_a, tenant_b):
    tenants = [TenantFactory(), TenantFactory()]
    return tenants, [t.pk for t in tenants]


def _two_memberships(tenant_a, tenant_b):
    return [MembershipFactory(tenant=tenant_a), MembershipFactory(tenant=tenant_b)], [tenant_a.pk, tenant_b.pk]


@pytest.mark.parametrize(
    "make",
    [_two_workflows, _two_tiers, _two_models, _two_prices, _two_tenants, _two_memberships],
    ids=["workflow", "model_tier", "llm_model", "model_price", "tenant", "membership"],
)
def test_delete_selected_writes_one_event_per_row(staff, operator, tenant_a, tenant_b, make):
    rows, tenant_ids = make(tenant_a, tenant_b)
    model = type(rows[0])
    count = AuditEvent.objects.count()
    with new_events() as events:
        _post(
            staff,
            _url(model, "changelist"),
            {"action": "delete_selected", "_selected_action": [r.pk for r in rows], "post": "yes"},
        )

    assert not model.objects.filter(pk__in=[r.pk for r in rows]).exists()
    assert AuditEvent.objects.count() == count + 2
    noun = {"ModelTier": "model_tier", "LlmModel": "llm_model", "ModelPrice": "model_price"}.get(
        model.__name__, model.__name__.lower()
    )
    assert [e.action for e in events] == [f"{noun}.delete"] * 2
    by_target = {e.target_id: e for e in events}
    assert sorted(by_target) == sorted(str(r.pk) for r in rows)
    for row, tenant_id in zip(rows, tenant_ids, strict=True):
        event = by_target[str(row.pk)]
        assert (event.target_type, event.tenant_id, event.actor_user_id) == (model.__name__, tenant_id, operator.pk)
        assert event.before is not None and event.before["id"] == row.pk and event.after is None


def test_the_log_grows_by_exactly_one_row_per_change(staff):
    count = AuditEvent.objects.count
    start = count()
    add = _url(Workflow, "add")
    _post(staff, add, admin_form(staff, add, slug="grows", name="Grows"))
    assert count() == start + 1
    workflow = Workflow.objects.get(slug="grows")
    change = _url(Workflow, "change", workflow.pk)
    _post(staff, change, admin_form(staff, change, owner="platform team"))
    assert count() == start + 2
    _post(staff, change, admin_form(staff, change))  # nothing changed: nothing to record
    assert count() == start + 2
    _post(staff, _url(Workflow, "delete", workflow.pk), {"post": "yes"})
    assert count() == start + 3


def test_a_failed_bulk_delete_leaves_neither_rows_nor_events(staff):
    rows = [WorkflowFactory(), WorkflowFactory()]
    count = AuditEvent.objects.count()
    data = {"action": "delete_selected", "_selected_action": [r.pk for r in rows], "post": "yes"}
    with (
        mock.patch("django.db.models.query.QuerySet.delete", side_effect=DatabaseError("disk full")),
        pytest.raises(DatabaseError, match="disk full"),
    ):
        staff.post(_url(Workflow, "changelist"), data)
    assert AuditEvent.objects.count() == count  # the events were written in the delete's transaction
    assert Workflow.objects.filter(pk__in=[r.pk for r in rows]).count() == 2
