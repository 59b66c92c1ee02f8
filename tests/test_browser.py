"""The dashboard in a real headless Chromium: open Explore, filter the photo grid, keep screenshots."""

from __future__ import annotations

import pytest

from core.data.catalogue import load_catalogue
from core.data.profile import filter_rows

from browser_support import ARTIFACTS, page, server, wait_idle  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_explore_filter_in_a_real_browser(server, page):
    url, demo = server
    frame = load_catalogue(demo).frame
    article = frame["articleType"].value_counts().index[0]
    expected = len(filter_rows(frame, {"articleType": [article]}))

    page.goto(f"{url}/explore")
    page.get_by_text("Label distributions").wait_for()
    wait_idle(page)
    page.screenshot(path=str(ARTIFACTS / "explore.png"), full_page=True)

    page.get_by_role("tab", name="Photos").click()
    page.get_by_text(f"{len(frame):,} products match.").wait_for()
    box = page.locator('[data-testid="stMultiSelect"]').filter(has_text="articleType")
    box.click()
    page.keyboard.type(article)
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    page.get_by_text(f"{expected:,} products match.").wait_for()
    wait_idle(page)
    images = page.locator('[data-testid="stImage"] img')
    assert images.count() == min(24, expected)
    page.screenshot(path=str(ARTIFACTS / "explore-photos-filtered.png"), full_page=True)


def test_home_in_a_real_browser(server, page):
    url, demo = server
    page.goto(url)
    page.get_by_text("Products kept").wait_for()
    wait_idle(page)
    assert page.get_by_text("150", exact=True).count() >= 1
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
