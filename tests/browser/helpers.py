"""Small steps the browser tests share: signing in, opening a page, reading Plotly figures."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.conf import settings
from django.urls import Resolver404, resolve

if TYPE_CHECKING:
    from playwright.sync_api import Page, Response

VIEWPORT = {"width": 1400, "height": 900}
SCREENSHOTS = Path(settings.BASE_DIR) / "test-artifacts" / "screenshots"

# Every Plotly graph on the page as {name, x, y} lists. Plotly keeps the traces it drew on the graph
# div (`.data`); `_fullData` holds them with typed arrays decoded, so both are read.
_FIGURES_JS = """
() => Array.from(document.querySelectorAll('.js-plotly-plot')).map((gd) => {
  const full = gd._fullData || [];
  return (gd.data || []).map((trace, i) => {
    const f = full[i] || trace;
    const values = (v) => (v && typeof v.length === 'number' ? Array.from(v) : []);
    return {name: f.name ?? trace.name ?? '', type: f.type ?? trace.type ?? '',
            x: values(f.x ?? trace.x), y: values(f.y ?? trace.y),
            labels: values(f.labels ?? trace.labels), values: values(f.values ?? trace.values)};
  });
})
"""


def screenshot(page: Page, name: str) -> Path:
    """Full page, as wide as the viewport (1400 px), into test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def require_page(path: str) -> None:
    """Skip a test of a page that is not built yet (remove the call once the page exists)."""
    if not page_exists(path):
        pytest.skip(f"page not built yet: {path}")


def page_exists(path: str) -> bool:
    try:
        resolve(urlsplit(path).path)
    except Resolver404:
        return False
    return True


def sign_in(page: Page, username: str, password: str, *, next: str = "", shot: str | None = None) -> Response | None:
    """Sign in through the form; `next` lands somewhere else than the overview."""
    page.goto(f"/accounts/login/?next={quote(next)}" if next else "/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    if shot:
        screenshot(page, shot)
    with page.expect_navigation() as navigation:
        page.click("form button[type=submit]")
    page.wait_for_load_state("load")
    return navigation.value


def visit(page: Page, path: str, *, shot: str | None = None, status: int = 200) -> Response:
    """Open `path`, check the status, wait for the page's scripts and figures, take a screenshot."""
    response = page.goto(path)
    assert response is not None
    assert response.status == status, f"{path} answered {response.status}, expected {status}"
    page.wait_for_load_state("load")
    wait_for_figures(page)
    if shot:
        screenshot(page, shot)
    return response


def wait_for_figures(page: Page) -> None:
    """Wait until every chart placeholder the page has has been drawn by Plotly."""
    page.wait_for_function(
        """() => Array.from(document.querySelectorAll('[data-plotly-figure]'))
                  .every((el) => el.classList.contains('js-plotly-plot') && el.data !== undefined)"""
    )


def figures(page: Page) -> list[list[dict]]:
    return page.evaluate(_FIGURES_JS)


def y_total(traces: list[dict]) -> float:
    return sum(float(v) for trace in traces for v in trace["y"] + trace["values"] if v is not None)


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def wait_for_query(page: Page, **expected: str) -> None:
    """Wait until the URL's query string holds every name=value given."""
    page.wait_for_url(lambda url: all(query(url).get(k) == [v] for k, v in expected.items()))
    page.wait_for_load_state("load")
    wait_for_figures(page)
