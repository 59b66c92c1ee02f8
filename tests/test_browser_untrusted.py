"""Untrusted labels in a real browser: a catalogue whose labels are the issue's markdown image and
formula is shown on Home and in the Explore grid as plain text: no image element, no request to
the image's address. Screenshot: test-artifacts/untrusted-explore.png."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from browser_support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, dashboard_server, require_browser, wait_idle
from conftest import REPO
from core import workspace
from core.data.catalogue import STYLES_FILE

pytestmark = pytest.mark.browser

TRAP = "http://127.0.0.1:9/tracker.png"  # nothing listens there: only a request would tell
IMAGE = f"![x]({TRAP})"
LINK = '=HYPERLINK("http://evil.example/x")'


@pytest.fixture(scope="module")
def poisoned_server(tmp_path_factory):
    require_browser()
    home = tmp_path_factory.mktemp("untrusted-workspace")
    env = {**os.environ, workspace.HOME_ENV: str(home), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", "from core import workspace; workspace.ensure_demo(n=60, seed=5)"],
                   cwd=REPO, env=env, check=True)
    demo = home / workspace.DEMO_FOLDER
    frame = pd.read_csv(demo / STYLES_FILE, dtype=str, keep_default_na=False)
    frame.loc[:5, "baseColour"] = IMAGE  # the first photos of the grid
    frame.loc[:5, "usage"] = LINK
    frame.loc[:5, "productDisplayName"] = f"<img src='{TRAP}'> **bold**"
    frame.to_csv(demo / STYLES_FILE, index=False)
    with dashboard_server({**env, workspace.DATA_ENV: str(demo)}) as url:
        yield url


def test_labels_render_as_text_with_no_image_and_no_request(poisoned_server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    requested = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.on("request", lambda request: requested.append(request.url))
        page.goto(poisoned_server)
        page.get_by_text("Products kept").wait_for()
        wait_idle(page)
        page.goto(f"{poisoned_server}/explore")
        page.get_by_role("heading", name="Explore", exact=True).wait_for()
        wait_idle(page)
        page.get_by_role("tab", name="Photos").click()
        page.get_by_text(IMAGE).first.wait_for()  # the label, as the text it is
        wait_idle(page)
        assert page.get_by_text(LINK).count() >= 1
        page.screenshot(path=str(ARTIFACTS / "untrusted-explore.png"), full_page=True)
        images = page.eval_on_selector_all("img", "elements => elements.map(e => e.getAttribute('src') || '')")
        browser.close()
    assert not [src for src in images if "tracker" in src or "127.0.0.1:9" in src]
    assert not [url for url in requested if "127.0.0.1:9" in url]
