from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tenants.models import ApiKey, AuditEvent
from tenants.services import hash_secret

pytestmark = pytest.mark.django_db


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_api_key_prints_the_secret_once_on_the_last_line(tenant_a, catalog):
    out, err = run("create_api_key", "--tenant", "acme", "--scopes", "ingest,read", "--name", "support bot")
    secret = out.strip().splitlines()[-1]
    key = ApiKey.objects.get(name="support bot")
    assert key.tenant == tenant_a and key.scopes == ["ingest", "read"]
    assert key.secret_hash == hash_secret(secret) and secret not in key.secret_hash
    assert secret.startswith(f"tsk_{key.prefix}_") and "not shown again" in err
    assert AuditEvent.objects.filter(action="api_key.create", target_id=str(key.pk)).exists()
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/api/v1/usage").status_code == 200


def test_create_platform_key(db):
    out, _ = run("create_api_key", "--platform", "--name", "gateway", "--scopes", "ingest")
    key = ApiKey.objects.get(name="gateway")
    assert key.tenant is None and key.is_platform and key.scopes == ["ingest"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenant", "nope", "--name", "x"], "No tenant 'nope'"),
        (["--tenant", "acme", "--name", "x", "--scopes", "ingest,admin"], "admin"),
        (["--tenant", "acme", "--name", "x", "--expires-in-days", "0"], "positive"),
    ],
)
def test_create_api_key_explains_bad_options(tenant_a, args, message):
    with pytest.raises(CommandError, match=message):
        run("create_api_key", *args)
    assert not ApiKey.objects.exists()


def test_create_api_key_needs_an_owner(db):
    with pytest.raises(CommandError):
        run("create_api_key", "--name", "x")


def test_revoke_api_key_takes_effect_at_once(api_a):
    assert api_a.client.get("/api/v1/usage").status_code == 200
    out, _ = run("revoke_api_key", api_a.key.prefix)
    assert "Revoked" in out
    response = api_a.client.get("/api/v1/usage")
    assert response.status_code == 401 and response.json()["error"]["code"] == "authentication_failed"
    out, _ = run("revoke_api_key", api_a.raw)
    assert "already revoked" in out
    with pytest.raises(CommandError, match="No API key"):
        run("revoke_api_key", "deadbeef00")


def test_wrong_secret_with_a_real_prefix_is_refused(api_a):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer tsk_{api_a.key.prefix}_not-the-secret")
    assert client.get("/api/v1/usage").status_code == 401


@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Bearer nonsense", "Token tsk_x_y"])
def test_malformed_authorization_headers(api_a, header):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert client.get("/api/v1/usage").status_code == 401


def test_suspended_tenant_keys_are_refused(api_a, tenant_a):
    tenant_a.status = tenant_a.Status.SUSPENDED
    tenant_a.save()
    response = api_a.client.get("/api/v1/usage")
    assert response.status_code == 401 and "suspended" in response.json()["error"]["message"]


def test_key_with_only_ingest_scope_cannot_read(make_key, tenant_a):
    writer = make_key(tenant_a, scopes="ingest")
    response = writer.client.get("/api/v1/usage")
    assert response.status_code == 403 and "read" in response.json()["error"]["message"]
