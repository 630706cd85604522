"""Signing in and out through the real forms."""

from __future__ import annotations

from .helpers import screenshot, sign_in, visit


def test_wrong_password_shows_an_error_and_the_right_one_lands_on_the_overview(page, live_server, demo):
    sign_in(page, demo.operator, "not-the-password", shot="login")
    assert page.url.endswith("/accounts/login/")
    error = page.locator(".alert--error")
    assert error.is_visible()
    assert "correct username and password" in error.inner_text()
    assert page.input_value("input[name=username]") == demo.operator
    assert page.locator(".usermenu").count() == 0
    screenshot(page, "login-wrong-password")

    sign_in(page, demo.operator, demo.password)
    assert page.url == f"{live_server.url}/"
    assert page.locator("h1").inner_text() == "Overview"
    assert page.locator(".usermenu__name").inner_text() == demo.operator


def test_sign_in_returns_to_the_page_asked_for_and_sign_out_ends_the_session(page, demo):
    page.goto("/usage/")
    assert "/accounts/login/?next=/usage/" in page.url
    assert page.input_value("input[name=next]") == "/usage/"
    page.fill("input[name=username]", demo.viewer)
    page.fill("input[name=password]", demo.password)
    with page.expect_navigation():
        page.click("form button[type=submit]")
    assert page.url.endswith("/usage/")
    assert page.locator("h1").inner_text() == "Usage records"

    page.click("details.usermenu summary")
    with page.expect_navigation():
        page.click("details.usermenu button:has-text('Sign out')")
    # LOGOUT_REDIRECT_URL sends people back to the sign-in form.
    assert "/accounts/login/" in page.url
    assert page.locator("h1").inner_text() == "Sign in to Tokenspend"
    assert page.locator(".usermenu").count() == 0
    screenshot(page, "signed-out")

    visit(page, "/usage/")
    assert "/accounts/login/?next=/usage/" in page.url
