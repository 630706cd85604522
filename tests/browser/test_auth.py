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


def test_the_top_bar_fits_every_common_screen_width(page, demo):
    """An operator's bar holds ten sections, two badges, the tenant switcher and the user menu: at no
    common width may it push the page sideways or hide the switcher and the menu off screen."""
    sign_in(page, demo.operator, demo.password)
    for width in (1920, 1536, 1440, 1366, 1280, 1024, 768, 390):
        page.set_viewport_size({"width": width, "height": 800})
        visit(page, "/alerts/")
        assert page.evaluate("document.querySelector('.topbar').scrollWidth") <= width, width
        if width >= 1024:  # on a phone a wide table may scroll the page; the bar itself never does
            assert page.evaluate("document.documentElement.scrollWidth") <= width, width
        for selector in ("#tenant-switcher", "details.usermenu summary"):
            box = page.locator(selector).bounding_box()
            assert box is not None and box["x"] + box["width"] <= width, (width, selector)
