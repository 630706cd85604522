"""A real deployment's first minutes: with nobody in the database the sign-in page says how to create the
first operator (one command, printing a one-time set-password link), and the operator's empty overview
lists the next steps (a tenant, a key, a budget) until they are done."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from budgets.models import Budget
from tenants.models import AuditEvent, Tenant
from tenants.services import api_key_create

pytestmark = pytest.mark.django_db


def test_sign_in_page_says_how_to_create_the_first_operator_until_someone_exists():
    page = Client().get("/accounts/login/").content.decode()
    assert "data-first-operator" in page and "manage.py create_operator" in page
    get_user_model().objects.create_user("someone", password="x-long-password-1")
    assert "data-first-operator" not in Client().get("/accounts/login/").content.decode()


def test_create_operator_prints_a_one_time_link_that_sets_the_password(settings):
    settings.PUBLIC_BASE_URL = "http://testserver"
    out, err = io.StringIO(), io.StringIO()
    call_command("create_operator", "root", email="root@example.com", stdout=out, stderr=err)
    link = out.getvalue().strip()
    assert link.startswith("http://testserver/accounts/set-password/") and "Created operator 'root'" in err.getvalue()
    user = get_user_model().objects.get(username="root")
    assert user.is_staff and user.is_superuser and not user.has_usable_password()
    assert AuditEvent.objects.filter(action="operator.create", target_id=str(user.pk)).exists()

    client = Client()
    form = client.get(link.removeprefix("http://testserver"), follow=True)
    target = form.redirect_chain[-1][0]
    done = client.post(target, {"new_password1": "root-pass-2026!x", "new_password2": "root-pass-2026!x"})
    assert done.status_code == 302
    assert client.login(username="root", password="root-pass-2026!x")
    with pytest.raises(CommandError, match="exists already"):
        call_command("create_operator", "root", stdout=io.StringIO(), stderr=io.StringIO())


def test_the_operators_empty_overview_guides_to_a_tenant_a_key_and_a_budget(operator):
    client = Client()
    client.force_login(operator)
    page = client.get("/").content.decode()
    assert "Getting started" in page and page.count("to do") == 3 and "No tenants yet" in page
    assert "/access/tenants/new" in page

    tenant = Tenant.objects.create(slug="first", name="First")
    page = client.get("/").content.decode()
    assert page.count("to do") == 2 and "/access/keys/?tenant=first" in page
    api_key_create(tenant=tenant, name="svc", scopes="ingest")
    Budget.objects.create(tenant=tenant, name="m", metric="cost", period="month", time_zone="UTC", hard_limit=10**9)
    page = client.get("/").content.decode()
    assert "to do" not in page and page.count(">done<") == 3
