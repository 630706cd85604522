"""The audit log cannot be edited (the database refuses UPDATE, DELETE and TRUNCATE on it), and the
audit page shows each tenant admin their tenants' events, operators everyone's.

Run on both backends: SQLite by default, PostgreSQL with DATABASE_URL=postgres://...
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from unittest import mock

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client

from tenants.exports import AUDIT_COLUMNS
from tenants.models import ApiKey, AuditEvent, Membership, Tenant
from tenants.scope import Actor
from tenants.services import api_key_create, audit_record

from ..factories import MembershipFactory, TenantFactory, UserFactory

MARKER = "marker-tenant-b"
TABLE = AuditEvent._meta.db_table


def _at(*args: int):
    """Record events as of a given moment (`at` is set by the database layer on insert, never later)."""
    return mock.patch("django.utils.timezone.now", return_value=datetime(*args, tzinfo=UTC))


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_a(tenant_a):
    return MembershipFactory(tenant=tenant_a, role=Membership.Role.ADMIN, user=UserFactory(username="admin-a")).user


@pytest.fixture
def approver_a(tenant_a):
    user = UserFactory(username="approver-a")
    return MembershipFactory(tenant=tenant_a, role=Membership.Role.APPROVER, user=user).user


@pytest.fixture
def event(tenant_a) -> AuditEvent:
    return audit_record(action="budget.create", tenant=tenant_a, before=None, after={"name": "original"})


def _assert_unchanged(event: AuditEvent) -> None:
    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.action, stored.after, stored.tenant_id) == (event.action, event.after, event.tenant_id)


# --- the database refuses to change the log -----------------------------------------------------------


def test_a_raw_update_is_refused(event):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {TABLE} SET action = %s WHERE id = %s", ["budget.forged", event.pk])
    _assert_unchanged(event)


def test_a_raw_delete_is_refused(event):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE id = %s", [event.pk])
    _assert_unchanged(event)


def test_an_unfiltered_raw_delete_is_refused(event):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE}")
    assert AuditEvent.objects.count() == 1


def test_orm_update_and_delete_are_refused(event):
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(after={"name": "forged"})
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(DatabaseError), transaction.atomic():
        event.after = {"name": "forged"}
        event.save()
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.get(pk=event.pk).delete()
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.after == {"name": "original"}
    # The test's transaction is still usable, and appending still works.
    audit_record(action="budget.update", tenant=event.tenant)
    assert AuditEvent.objects.count() == 2


@pytest.mark.skipif(connection.vendor != "postgresql", reason="TRUNCATE is PostgreSQL's")
def test_truncate_is_refused_on_postgresql(event):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {TABLE}")
    _assert_unchanged(event)


def test_deleting_a_person_a_key_or_a_tenant_leaves_their_events_alone(db):
    tenant = TenantFactory(slug="initech", name="Initech")
    person = MembershipFactory(tenant=tenant, role=Membership.Role.ADMIN, user=UserFactory(username="gone")).user
    key, _ = api_key_create(tenant=tenant, name="soon revoked", scopes="read", actor=Actor(user=person))
    by_person = audit_record(action="budget.create", actor=Actor(user=person), tenant=tenant)
    by_key = audit_record(action="usage.ingest", actor=Actor(api_key=key), tenant=tenant)
    before = sorted(map(repr, AuditEvent.objects.values()))
    person_id, key_id, tenant_id = person.pk, key.pk, tenant.pk

    key.delete()
    person.delete()
    tenant.delete()

    assert not Tenant.objects.filter(pk=tenant_id).exists() and not ApiKey.objects.filter(pk=key_id).exists()
    assert sorted(map(repr, AuditEvent.objects.values())) == before  # the same rows, ids kept as they were
    by_person = AuditEvent.objects.select_related("actor_user", "tenant").get(pk=by_person.pk)
    assert by_person.actor_label == f"user #{person_id} (deleted)"
    assert by_person.tenant_label == f"#{tenant_id} (deleted)"
    by_key = AuditEvent.objects.get(pk=by_key.pk)  # without select_related too
    assert by_key.actor_label == f"key #{key_id} (deleted)"


# --- the page ---------------------------------------------------------------------------------------


@pytest.fixture
def log(tenant_a, tenant_b, admin_a, api_a):
    """Events of A (a person's, a key's), of B (carrying the marker) and a platform-wide one."""
    with _at(2026, 3, 1, 9, 0):
        audit_record(
            action="budget.create", actor=Actor(user=admin_a), tenant=tenant_a, target=tenant_a,
            after={"name": "A monthly"}, request_id="req-a-1",
        )
    with _at(2026, 3, 2, 9, 0):
        audit_record(action="control.start", actor=Actor(api_key=api_a.key), tenant=tenant_a, after={"kind": "deny"})
    with _at(2026, 3, 3, 9, 0):
        audit_record(
            action="budget.update", actor=Actor(user=admin_a), tenant=tenant_a, before={"hard": 1}, after={"hard": 2}
        )
    with _at(2026, 3, 2, 10, 0):
        audit_record(action="budget.create", tenant=tenant_b, after={"name": f"{MARKER} monthly"})
        audit_record(action="catalog.seed", after={"note": f"platform {MARKER}"})


def _actions(body: str) -> list[str]:
    """The actions listed, newest first, leaving out the fixtures' own (creating the tenants' keys)."""
    return [a for a in re.findall(r'data-action="([^"]+)"', body) if a != "api_key.create"]


def test_a_tenant_admin_sees_their_tenants_events_only(log, admin_a):
    body = _client(admin_a).get("/audit/").content.decode()
    assert _actions(body) == ["budget.update", "control.start", "budget.create"]  # newest first
    assert MARKER not in body  # neither B's event nor the platform-wide one
    assert "admin-a" in body and f"key {ApiKey.objects.get(tenant__slug='acme').prefix}" in body
    assert "&quot;hard&quot;: 2" in body and "<details>" in body
    assert 'href="/audit/"' in body  # the menu links the page


def test_a_tenant_admin_naming_another_tenant_gets_404(log, admin_a):
    assert _client(admin_a).get("/audit/?tenant=globex").status_code == 404
    assert _client(admin_a).get("/audit/export.csv?tenant=globex").status_code == 404


@pytest.mark.parametrize("who", ["viewer_a", "approver_a"])
def test_viewers_and_approvers_are_refused(log, who, request):
    client = _client(request.getfixturevalue(who))
    assert client.get("/audit/").status_code == 403
    assert client.get("/audit/?tenant=acme").status_code == 403
    assert client.get("/audit/export.csv").status_code == 403
    assert 'href="/audit/' not in client.get("/").content.decode()  # no menu link either


def test_an_admin_of_one_tenant_and_viewer_of_another_reads_only_the_first(log, admin_a, tenant_b):
    MembershipFactory(tenant=tenant_b, role=Membership.Role.VIEWER, user=admin_a)
    client = _client(admin_a)
    body = client.get("/audit/").content.decode()
    assert _actions(body) == ["budget.update", "control.start", "budget.create"]
    assert f"{MARKER} monthly" not in body  # B's event (B's name is in the switcher: a member sees it)
    assert client.get("/audit/?tenant=globex").status_code == 403


def test_an_operator_sees_every_event_and_picks_a_tenant(log, operator):
    client = _client(operator)
    body = client.get("/audit/").content.decode()
    # B's event and the platform-wide one were recorded at the same moment: the later one first.
    assert _actions(body) == ["budget.update", "catalog.seed", "budget.create", "control.start", "budget.create"]
    assert "platform" in body
    picked = client.get("/audit/?tenant=globex").content.decode()
    assert _actions(picked) == ["budget.create"]  # a picked tenant filters: no platform-wide events


def test_filters_narrow_the_list(log, admin_a, api_a, tenant_a):
    client = _client(admin_a)
    assert _actions(client.get("/audit/?action=budget.").content.decode()) == ["budget.update", "budget.create"]
    assert _actions(client.get("/audit/?actor=ADMIN-A").content.decode()) == ["budget.update", "budget.create"]
    prefix = api_a.key.prefix
    assert _actions(client.get(f"/audit/?actor=key+{prefix}").content.decode()) == ["control.start"]
    assert _actions(client.get(f"/audit/?actor={prefix[:6]}").content.decode()) == ["control.start"]
    by_target = client.get(f"/audit/?target_type=tenant&target_id={tenant_a.pk}").content.decode()
    assert _actions(by_target) == ["budget.create"]
    assert _actions(client.get("/audit/?from=2026-03-02&to=2026-03-02").content.decode()) == ["control.start"]
    assert _actions(client.get("/audit/?from=2026-03-02+12:00").content.decode()) == ["budget.update"]
    empty = client.get("/audit/?actor=nobody").content.decode()
    assert _actions(empty) == [] and "No events match these filters" in empty


def test_an_invalid_time_is_shown_and_refused_by_the_csv(log, admin_a):
    client = _client(admin_a)
    page = client.get("/audit/?from=yesterday")
    assert page.status_code == 200 and "field__error" in page.content.decode()
    assert client.get("/audit/export.csv?from=yesterday").status_code == 400
    assert client.get("/audit/export.csv?from=2026-03-03&to=2026-03-01").status_code == 400


def test_the_csv_has_the_columns_and_the_filtered_rows(log, admin_a):
    response = _client(admin_a).get("/audit/export.csv?action=budget.")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert tuple(rows[0]) == AUDIT_COLUMNS
    assert rows[1:] == [
        ["2026-03-03T09:00:00+00:00", "admin-a", "acme", "budget.update", "", "", '{"hard":1}', '{"hard":2}', ""],
        [
            "2026-03-01T09:00:00+00:00", "admin-a", "acme", "budget.create", "Tenant",
            str(Tenant.objects.get(slug="acme").pk), "", '{"name":"A monthly"}', "req-a-1",
        ],
    ]


def test_the_csv_of_an_operator_has_platform_events_and_a_tenant_admins_has_not(log, admin_a, operator):
    def actions(client) -> list[str]:
        body = b"".join(client.get("/audit/export.csv").streaming_content).decode()
        return [row[3] for row in list(csv.reader(io.StringIO(body)))[1:] if row[3] != "api_key.create"]

    assert "catalog.seed" in actions(_client(operator))
    assert actions(_client(admin_a)) == ["budget.update", "control.start", "budget.create"]


def test_a_csv_cell_that_would_run_as_a_formula_is_quoted(tenant_a, admin_a):
    audit_record(action="budget.create", actor=Actor(user=admin_a), tenant=tenant_a, request_id="=HYPERLINK(1)")
    body = b"".join(_client(admin_a).get("/audit/export.csv").streaming_content).decode()
    assert list(csv.reader(io.StringIO(body)))[1][-1] == "'=HYPERLINK(1)"


def test_the_page_shows_the_newest_200_and_asks_to_narrow(tenant_a, admin_a):
    AuditEvent.objects.bulk_create(AuditEvent(tenant=tenant_a, action=f"test.{i}") for i in range(201))
    body = _client(admin_a).get("/audit/").content.decode()
    assert len(_actions(body)) == 200
    assert "narrow the filters" in body


def test_the_empty_log_says_so(admin_a):
    body = _client(admin_a).get("/audit/").content.decode()
    assert "No audit events yet" in body
