"""The API docs pages run in the browser without errors and without reaching another host (the page
HTML is checked in tests/finops/test_api_docs.py; this catches what their scripts fetch at run time)."""

from __future__ import annotations

from .helpers import screenshot, visit


def test_swagger_ui_renders_the_api_from_local_assets(page):
    visit(page, "/api/docs/")
    page.wait_for_selector(".swagger-ui .opblock")
    assert page.locator(".swagger-ui .opblock", has_text="/api/v1/usage").count() >= 1
    screenshot(page, "api-docs")
