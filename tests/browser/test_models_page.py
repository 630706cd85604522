"""Models and prices (/models/): the catalog with current and past prices, and the usage of models
the catalog does not know (a viewer's view of it is in test_tenant_boundary.py)."""

from __future__ import annotations

import pytest

from .helpers import screenshot, sign_in

pytestmark = pytest.mark.requires_page("/models/")


def test_catalog_lists_models_with_prices_and_their_history(page, demo):
    sign_in(page, demo.operator, demo.password, next="/models/")
    assert page.locator("h1").inner_text() == "Models and prices"
    screenshot(page, "models")
    assert page.locator("table.table--catalog").count() >= 3  # one table per provider
    assert page.locator("table.table--catalog td.price").first.inner_text().startswith("$")
    # Initech's calls of a model the catalog does not know are listed for operators.
    assert demo.other_marker in page.locator("table.table--unknown").inner_text()

    with page.expect_navigation():
        page.locator("table.table--catalog a", has_text="claude-sonnet-4-5").first.click()
    assert page.locator("h1").inner_text() == "claude-sonnet-4-5"
    assert page.locator("#prices table tbody tr").count() >= 1
    screenshot(page, "model-detail")
