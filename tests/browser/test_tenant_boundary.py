"""A tenant's viewer sees their own tenant only: another tenant's pages answer 404, and its name and
its data never appear, on any page (pages still being built are checked once they exist)."""

from __future__ import annotations

from finops.models import UsageRecord

from .helpers import page_exists, screenshot, sign_in, visit

NOT_FOUND = r"status of 404"
SHARED_WORKFLOW = "sql-copilot"  # used by Northwind and by Initech (whose calls include the unknown model)


def _assert_hidden(page, demo, where: str) -> None:
    html = page.content()
    assert demo.other_name not in html, where
    assert f"{demo.other_slug}" not in html, where
    assert demo.other_marker not in html, where


def test_viewer_sees_only_their_tenant(page, demo):
    sign_in(page, demo.viewer, demo.password)
    assert page.locator("h1").inner_text() == "Overview"
    assert page.locator(".tenant-label").inner_text() == demo.tenant_name
    assert page.locator("#tenant-switcher").count() == 0
    screenshot(page, "overview-viewer")
    _assert_hidden(page, demo, "/")

    visit(page, "/usage/", shot="usage-list-viewer")
    tenants = {t.strip() for t in page.locator("table.table--usage tbody td:nth-child(2)").all_inner_texts()}
    assert tenants == {demo.tenant_name}
    _assert_hidden(page, demo, "/usage/")

    own = UsageRecord.objects.filter(tenant__slug=demo.tenant_slug).first()
    visit(page, f"/usage/{own.pk}/")
    assert page.locator("h1").inner_text() == own.request_id

    for name, path in {
        "explorer-viewer": "/explore/?group_by=tenant,model",
        "tenant-viewer": f"/tenants/{demo.tenant_slug}/",
        "workflow-viewer": f"/workflows/{SHARED_WORKFLOW}/",
        "models-viewer": "/models/",
    }.items():
        if page_exists(path):
            visit(page, path, shot=name)
            _assert_hidden(page, demo, path)


def test_viewer_gets_404_for_another_tenants_pages(page, page_problems, demo):
    other = UsageRecord.objects.filter(tenant__slug=demo.other_slug, model_name=demo.other_marker).first()
    sign_in(page, demo.viewer, demo.password, next="/usage/")
    page_problems.expect_console_error(NOT_FOUND)  # Chromium logs each 404 we ask for

    paths = [
        f"/?tenant={demo.other_slug}",
        f"/usage/?tenant={demo.other_slug}",
        f"/usage/{other.pk}/",
        f"/usage/{other.pk}/?tenant={demo.other_slug}",
        f"/usage/{other.pk}/?tenant={demo.tenant_slug}",
        f"/explore/?tenant={demo.other_slug}",
        f"/tenants/{demo.other_slug}/",
        "/tenants/no-such-tenant/",
        f"/workflows/{SHARED_WORKFLOW}/?tenant={demo.other_slug}",
        f"/models/?tenant={demo.other_slug}",
    ]
    for path in paths:
        if not page_exists(path):
            continue
        visit(page, path, status=404)
        assert page.locator("h1").inner_text() == "Page not found", path
        assert other.request_id not in page.content(), path
        _assert_hidden(page, demo, path)
    screenshot(page, "not-found-viewer")
