"""Self-service in the browser: a tenant admin's API key from creation to revocation, used over real HTTP
in between; a new member who signs in through the set-password link; a viewer who sees none of it and
whose forged POSTs are refused; an operator who creates a tenant and suspends it."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from datetime import timedelta

from django.utils import timezone

from tenants.models import ApiKey, Membership, Tenant

from .helpers import screenshot, sign_in, visit

ADMIN = "northwind-admin"


def _http_status(base: str, secret: str, path: str = "/api/v1/usage") -> int:
    """What curl -H "Authorization: Bearer $KEY" would get."""
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _open_from_user_menu(page, label: str) -> None:
    page.click("details.usermenu summary")
    with page.expect_navigation():
        page.click(f"details.usermenu a:has-text('{label}')")


def test_tenant_admin_creates_uses_rotates_and_revokes_a_key(page, live_server, demo):
    sign_in(page, ADMIN, demo.password)
    _open_from_user_menu(page, "API keys")
    assert page.locator("h1").inner_text() == f"API keys of {demo.tenant_name}"
    page.fill("input[name=name]", "support-bot prod")
    page.uncheck("input[name=scopes][value=preflight]")
    with page.expect_navigation():
        page.click("button:has-text('Create key')")
    secret = page.locator("[data-secret]").inner_text().strip()
    assert re.fullmatch(r"tsk_[0-9a-f]{10}_\S+", secret)
    assert page.locator("button[data-copy]").is_visible()
    screenshot(page, "api-key-created")
    prefix = secret.split("_")[1]
    row = page.locator(f"tr[data-key='{prefix}']")
    assert "ingest, read" in row.inner_text() and ADMIN in row.inner_text()

    assert _http_status(live_server.url, secret) == 200
    # Shown once: the next visit lists the key by its prefix only.
    visit(page, "/access/keys/")
    assert secret not in page.content() and page.locator("[data-secret]").count() == 0

    # Rotate with one hour of overlap: both secrets work, then the old one stops when the overlap ends.
    page.select_option(f"tr[data-key='{prefix}'] select[name=overlap]", "3600")
    with page.expect_navigation():
        page.click(f"tr[data-key='{prefix}'] button:has-text('Rotate')")
    rotated = page.locator("[data-secret]").inner_text().strip()
    assert rotated != secret and rotated.split("_")[1] == prefix
    assert "old secret keeps working until" in page.locator("[data-secret-once]").inner_text()
    assert _http_status(live_server.url, rotated) == 200
    assert _http_status(live_server.url, secret) == 200
    ApiKey.objects.filter(prefix=prefix).update(previous_expires_at=timezone.now() - timedelta(seconds=1))
    assert _http_status(live_server.url, secret) == 401
    assert _http_status(live_server.url, rotated) == 200

    # Revoke: 401 at once.
    with page.expect_navigation():
        page.click(f"tr[data-key='{prefix}'] button:has-text('Revoke')")
    assert "revoked" in page.locator(f"tr[data-key='{prefix}'] [data-status]").inner_text()
    assert _http_status(live_server.url, rotated) == 401
    screenshot(page, "api-keys")


def test_admin_adds_a_member_who_signs_in_with_the_set_password_link(page, live_server, demo, settings, browser):
    settings.PUBLIC_BASE_URL = live_server.url
    sign_in(page, ADMIN, demo.password)
    _open_from_user_menu(page, "Members")
    page.fill("input[name=username]", "new-analyst")
    page.fill("input[name=email]", "analyst@example.com")
    page.select_option("select[name=role]", "viewer")
    with page.expect_navigation():
        page.click("button:has-text('Add')")
    link = page.locator("[data-link]").inner_text().strip()
    assert link.startswith(f"{live_server.url}/accounts/set-password/")
    assert "invited" in page.locator("tr[data-member='new-analyst']").inner_text()
    screenshot(page, "members")

    newcomer = browser.new_context(base_url=live_server.url).new_page()
    try:
        newcomer.goto(link)
        assert newcomer.locator("h1").inner_text() == "Choose your password"
        newcomer.fill("input[name=new_password1]", "analyst-pass-2026!")
        newcomer.fill("input[name=new_password2]", "analyst-pass-2026!")
        with newcomer.expect_navigation():
            newcomer.click("button:has-text('Set password')")
        assert "/accounts/login/" in newcomer.url
        sign_in(newcomer, "new-analyst", "analyst-pass-2026!")
        assert newcomer.locator("h1").inner_text() == "Overview"
        assert newcomer.locator(".tenant-label").inner_text() == demo.tenant_name
        # The link worked once.
        newcomer.goto(link)
        assert "already been used" in newcomer.locator(".alert--error").inner_text()
    finally:
        newcomer.context.close()
    assert Membership.objects.get(user__username="new-analyst").role == "viewer"


def test_a_viewer_sees_no_access_controls_and_forged_posts_are_refused(page, live_server, demo, page_problems):
    key = ApiKey.objects.filter(tenant__slug=demo.tenant_slug, revoked_at__isnull=True).first()
    sign_in(page, demo.viewer, demo.password)
    page.click("details.usermenu summary")
    menu = page.locator(".usermenu__panel").inner_text()
    assert "API keys" not in menu and "Members" not in menu and "Tenants" not in menu
    page_problems.expect_console_error("403")
    visit(page, "/access/keys/", status=403)
    visit(page, "/access/members/", status=403)

    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    headers = {"X-CSRFToken": token, "Referer": live_server.url + "/"}
    forged = {
        "/access/keys/": {"name": "forged", "scopes": "read"},
        f"/access/keys/{key.pk}/revoke": {},
        f"/access/keys/{key.pk}/rotate": {"overlap": "0"},
        "/access/members/": {"username": "mallory", "role": "admin"},
        "/access/tenants/new": {"slug": "forged", "name": "Forged", "time_zone": "UTC", "status": "active"},
    }
    for path, form in forged.items():
        response = page.request.post(live_server.url + path, form=form, headers=headers)
        assert response.status == 403, (path, response.status)
    key.refresh_from_db()
    assert key.revoked_at is None and key.rotated_at is None
    assert not ApiKey.objects.filter(name="forged").exists()
    assert not Tenant.objects.filter(slug="forged").exists()


def test_operator_creates_a_tenant_gives_it_a_key_and_suspends_it(page, live_server, demo):
    sign_in(page, demo.operator, demo.password)
    _open_from_user_menu(page, "Tenants")
    with page.expect_navigation():
        page.click("a:has-text('New tenant')")
    page.fill("input[name=name]", "Globex Europe")
    page.fill("input[name=slug]", "globex-eu")
    page.fill("input[name=external_id]", "cus_GX1")
    page.fill("input[name=time_zone]", "Europe/Berlin")
    with page.expect_navigation():
        page.click("button:has-text('Create tenant')")
    assert page.locator("h1").inner_text() == "Members of Globex Europe"
    assert "Next: give it an admin and a key" in page.locator(".messages").inner_text()

    visit(page, "/access/keys/?tenant=globex-eu")
    page.fill("input[name=name]", "globex ingest")
    with page.expect_navigation():
        page.click("button:has-text('Create key')")
    secret = page.locator("[data-secret]").inner_text().strip()
    assert _http_status(live_server.url, secret) == 200

    visit(page, "/access/tenants/")
    with page.expect_navigation():
        page.click("tr[data-tenant='globex-eu'] a:has-text('Edit')")
    page.select_option("select[name=status]", "suspended")
    with page.expect_navigation():
        page.click("button:has-text('Save')")
    assert "suspended" in page.locator("tr[data-tenant='globex-eu']").inner_text()
    screenshot(page, "tenants")
    assert _http_status(live_server.url, secret) == 401
    assert Tenant.objects.get(slug="globex-eu").status == "suspended"
