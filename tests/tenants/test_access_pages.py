"""Self-service pages: a tenant's admins manage its API keys (create, secret once, rotate with an overlap,
revoke) and members (add with a one-time set-password link, change roles, remove, never the last admin);
operators manage platform keys and tenants (create, edit, suspend). Everything is audited; viewers and
other tenants' admins are refused (403 / 404) and change nothing."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from tenants.models import ApiKey, AuditEvent, Membership, Tenant
from tenants.services import api_key_create

from ..factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

SECRET = re.compile(r"tsk_[0-9a-f]{10}_[\w-]{20,}")


def _signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_a(tenant_a):
    return MembershipFactory(tenant=tenant_a, role=Membership.Role.ADMIN, user=UserFactory(username="admin-a")).user


@pytest.fixture
def admin_b(tenant_b):
    return MembershipFactory(tenant=tenant_b, role=Membership.Role.ADMIN, user=UserFactory(username="admin-b")).user


def _api_status(raw: str, path: str = "/api/v1/usage") -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client.get(path).status_code


def _create_key(client: Client, query: str = "", **fields) -> tuple[ApiKey, str, str]:
    data = {"name": "support-bot prod", "scopes": ["ingest", "read"], **fields}
    response = client.post(f"/access/keys/{query}", data)
    assert response.status_code == 200, response.content[:2000]
    body = response.content.decode()
    secret = SECRET.search(body).group(0)
    return ApiKey.objects.get(prefix=secret.split("_")[1]), secret, body


# --- API keys ---------------------------------------------------------------------------------------


def test_admin_creates_a_key_sees_the_secret_once_and_it_works(admin_a, tenant_a):
    client = _signed_in(admin_a)
    key, secret, body = _create_key(client)
    assert key.tenant == tenant_a and key.scopes == ["ingest", "read"] and key.created_by == admin_a
    assert 'data-copy="new-secret"' in body
    assert _api_status(secret) == 200
    listing = client.get("/access/keys/")
    page = listing.content.decode()
    assert listing["Cache-Control"] == "no-store"
    assert secret not in page and key.prefix in page and "admin-a" in page and "ingest, read" in page
    event = AuditEvent.objects.get(action="api_key.create", target_id=str(key.pk))
    assert event.tenant_id == tenant_a.pk and event.actor_user == admin_a


def test_a_key_with_an_expiry_and_without_scopes(admin_a):
    client = _signed_in(admin_a)
    tomorrow = (timezone.now() + timedelta(days=2)).date()
    key, _secret, _ = _create_key(client, expires_at=tomorrow.isoformat())
    assert key.expires_at.date() == tomorrow
    response = client.post("/access/keys/", {"name": "x", "scopes": []})
    assert response.status_code == 400 and b"No key was created" in response.content
    response = client.post("/access/keys/", {"name": "x", "scopes": ["read"], "expires_at": "2001-01-01"})
    assert response.status_code == 400 and b"Choose a day after today" in response.content


def test_rotation_keeps_the_old_secret_for_the_overlap_then_401(admin_a):
    client = _signed_in(admin_a)
    key, old, _ = _create_key(client)
    response = client.post(f"/access/keys/{key.pk}/rotate", {"overlap": "3600"})
    assert response.status_code == 200
    new = SECRET.search(response.content.decode()).group(0)
    assert new != old and new.split("_")[1] == key.prefix
    assert _api_status(new) == 200 and _api_status(old) == 200
    key.refresh_from_db()
    assert timedelta(minutes=59) < key.previous_expires_at - timezone.now() <= timedelta(hours=1)
    # The overlap ends: the old secret answers 401, the new one keeps working.
    ApiKey.objects.filter(pk=key.pk).update(previous_expires_at=timezone.now() - timedelta(seconds=1))
    assert _api_status(old) == 401 and _api_status(new) == 200
    assert AuditEvent.objects.filter(action="api_key.rotate", target_id=str(key.pk)).count() == 1


def test_rotation_without_overlap_stops_the_old_secret_at_once(admin_a):
    client = _signed_in(admin_a)
    key, old, _ = _create_key(client)
    response = client.post(f"/access/keys/{key.pk}/rotate", {"overlap": "0"})
    new = SECRET.search(response.content.decode()).group(0)
    assert _api_status(old) == 401 and _api_status(new) == 200


def test_revoke_answers_401_at_once(admin_a):
    client = _signed_in(admin_a)
    key, secret, _ = _create_key(client)
    assert _api_status(secret) == 200
    response = client.post(f"/access/keys/{key.pk}/revoke")
    assert response.status_code == 302
    assert _api_status(secret) == 401
    assert AuditEvent.objects.filter(action="api_key.revoke", target_id=str(key.pk)).exists()
    # A revoked key has no rotate or revoke buttons any more, and cannot be rotated by a forged POST.
    page = client.get("/access/keys/").content.decode()
    assert f"/access/keys/{key.pk}/rotate" not in page
    client.post(f"/access/keys/{key.pk}/rotate", {"overlap": "0"})
    assert _api_status(secret) == 401


def test_viewer_sees_no_controls_and_forged_posts_are_refused(viewer_a, tenant_a):
    key, secret = api_key_create(tenant=tenant_a, name="existing", scopes="read")
    client = _signed_in(viewer_a)
    assert client.get("/access/keys/").status_code == 403
    assert client.get("/access/members/").status_code == 403
    home = client.get("/").content.decode()
    assert "/access/keys/" not in home and "/access/members/" not in home and "/access/tenants/" not in home
    events = AuditEvent.objects.count()
    assert client.post("/access/keys/", {"name": "forged", "scopes": ["read"]}).status_code == 403
    assert client.post(f"/access/keys/{key.pk}/rotate", {"overlap": "0"}).status_code == 403
    assert client.post(f"/access/keys/{key.pk}/revoke").status_code == 403
    membership = Membership.objects.get(user=viewer_a)
    assert client.post(f"/access/members/{membership.pk}/role", {"role": "admin"}).status_code == 403
    assert client.post("/access/members/", {"username": "mallory", "role": "admin"}).status_code == 403
    assert client.post("/access/tenants/new", {"slug": "x", "name": "x", "status": "active"}).status_code == 403
    assert AuditEvent.objects.count() == events
    assert not ApiKey.objects.filter(name="forged").exists() and _api_status(secret) == 200
    membership.refresh_from_db()
    assert membership.role == "viewer"


def test_another_tenants_keys_and_members_answer_404(admin_a, admin_b, tenant_b):
    key_b, secret_b = api_key_create(tenant=tenant_b, name="marker-b-key", scopes="read")
    member_b = Membership.objects.get(user=admin_b)
    client = _signed_in(admin_a)
    assert client.post(f"/access/keys/{key_b.pk}/revoke").status_code == 404
    assert client.post(f"/access/keys/{key_b.pk}/rotate", {"overlap": "0"}).status_code == 404
    assert client.post(f"/access/members/{member_b.pk}/remove").status_code == 404
    assert client.post(f"/access/members/{member_b.pk}/role", {"role": "viewer"}).status_code == 404
    assert client.get(f"/access/keys/?tenant={tenant_b.slug}").status_code == 404
    assert client.get(f"/access/members/?tenant={tenant_b.slug}").status_code == 404
    for page in ("/access/keys/", "/access/members/"):
        body = client.get(page).content.decode()
        assert "marker-b-key" not in body and "admin-b" not in body
    assert _api_status(secret_b) == 200 and Membership.objects.filter(pk=member_b.pk).exists()


def test_platform_keys_are_the_operators(operator, admin_a, tenant_a):
    platform, _ = api_key_create(tenant=None, name="marker-platform-key", scopes="ingest")
    assert "marker-platform-key" not in _signed_in(admin_a).get("/access/keys/").content.decode()
    assert _signed_in(admin_a).post(f"/access/keys/{platform.pk}/revoke").status_code == 404
    client = _signed_in(operator)
    page = client.get("/access/keys/").content.decode()
    assert "Platform API keys" in page and "marker-platform-key" in page
    key, secret, _ = _create_key(client, name="gateway")
    assert key.tenant is None
    assert _api_status(secret, f"/api/v1/usage?tenant={tenant_a.slug}") == 200
    # An operator also manages a tenant's keys: the same page with ?tenant=.
    key, _secret, _ = _create_key(client, query=f"?tenant={tenant_a.slug}", name="for a")
    assert key.tenant == tenant_a


# --- members ----------------------------------------------------------------------------------------


def test_admin_adds_a_new_person_who_sets_a_password_once_and_signs_in(admin_a, tenant_a):
    client = _signed_in(admin_a)
    response = client.post(
        "/access/members/", {"username": "newbie", "email": "newbie@example.com", "role": "approver"}
    )
    assert response.status_code == 200
    link = re.search(r"data-link>([^<]+)<", response.content.decode()).group(1)
    assert "/accounts/set-password/" in link
    assert Membership.objects.get(user__username="newbie", tenant=tenant_a).role == "approver"
    assert len(mail.outbox) == 1 and link in mail.outbox[0].body and mail.outbox[0].to == ["newbie@example.com"]
    event = AuditEvent.objects.get(action="membership.create")
    assert event.after == {"user": "newbie", "role": "approver", "new_person": True} and event.actor_user == admin_a

    visitor = Client()
    path = link.split("://", 1)[1].split("/", 1)[1]
    form = visitor.get("/" + path, follow=True)
    assert b"Choose your password" in form.content and b"new_password1" in form.content
    done = visitor.post(
        form.redirect_chain[-1][0] if form.redirect_chain else "/" + path,
        {"new_password1": "a-long-new-password-9", "new_password2": "a-long-new-password-9"},
    )
    assert done.status_code == 302 and done["Location"] == "/accounts/login/"
    assert visitor.login(username="newbie", password="a-long-new-password-9")
    # The link works once.
    again = Client().get("/" + path, follow=True)
    assert b"already been used or has expired" in again.content


def test_adding_someone_who_has_an_account_gives_no_link(admin_a, tenant_a, viewer_b):
    client = _signed_in(admin_a)
    response = client.post("/access/members/", {"username": "viewer-b", "role": "viewer"})
    assert response.status_code == 200 and b"data-link" not in response.content
    assert Membership.objects.filter(user=viewer_b, tenant=tenant_a).exists()
    again = client.post("/access/members/", {"username": "viewer-b", "role": "viewer"})
    assert again.status_code == 400 and b"already a member" in again.content


def test_roles_change_and_the_last_admin_stays(admin_a, viewer_a, tenant_a):
    client = _signed_in(admin_a)
    mine = Membership.objects.get(user=admin_a)
    viewer = Membership.objects.get(user=viewer_a)
    client.post(f"/access/members/{mine.pk}/role", {"role": "viewer"})
    client.post(f"/access/members/{mine.pk}/remove")
    mine.refresh_from_db()
    assert mine.role == "admin"
    page = client.get("/access/members/").content.decode()
    assert "last admin" in page
    client.post(f"/access/members/{viewer.pk}/role", {"role": "admin"})
    viewer.refresh_from_db()
    assert viewer.role == "admin"
    assert client.post(f"/access/members/{mine.pk}/remove").status_code == 302
    assert not Membership.objects.filter(pk=mine.pk).exists()
    actions = list(AuditEvent.objects.filter(tenant=tenant_a).values_list("action", flat=True))
    assert "membership.update" in actions and "membership.delete" in actions


# --- tenants ----------------------------------------------------------------------------------------


def test_operator_creates_edits_and_suspends_a_tenant(operator, admin_a, tenant_a):
    client = _signed_in(operator)
    response = client.post(
        "/access/tenants/new",
        {
            "slug": "globex-2",
            "name": "Globex Two",
            "external_id": "cus_1",
            "time_zone": "Europe/Berlin",
            "status": "active",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/access/members/?tenant=globex-2"
    tenant = Tenant.objects.get(slug="globex-2")
    assert tenant.time_zone == "Europe/Berlin" and tenant.external_id == "cus_1"
    assert AuditEvent.objects.filter(action="tenant.create", tenant=tenant).exists()
    bad = client.post(
        "/access/tenants/new", {"slug": "globex-2", "name": "Dup", "time_zone": "Mars/Base", "status": "active"}
    )
    assert bad.status_code == 400 and b"This slug is taken" in bad.content and b"Unknown time zone" in bad.content

    _key, secret = api_key_create(tenant=tenant_a, name="a", scopes="read")
    assert _api_status(secret) == 200
    fields = {"slug": tenant_a.slug, "name": tenant_a.name, "external_id": "", "time_zone": "UTC"}
    response = client.post(f"/access/tenants/{tenant_a.pk}/edit", {**fields, "status": "suspended"})
    assert response.status_code == 302
    assert _api_status(secret) == 401
    assert AuditEvent.objects.filter(action="tenant.suspend", tenant=tenant_a).exists()
    assert b"suspended" in client.get("/access/tenants/").content
    client.post(f"/access/tenants/{tenant_a.pk}/edit", {**fields, "status": "active"})
    assert _api_status(secret) == 200
    # Tenant admins cannot reach any of it.
    member = _signed_in(admin_a)
    assert member.get("/access/tenants/").status_code == 403
    assert member.post(f"/access/tenants/{tenant_a.pk}/edit", {**fields, "status": "suspended"}).status_code == 403
