"""The Data health page in a real headless Chromium: click a point of the map and see that photo and its
neighbours; pick the toolbar's box select, drag a box over the map and see exactly the photos inside it.
Screenshot: test-artifacts/health-map.png, also kept as docs/health.png for the README."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from core import workspace
from core.data.catalogue import load_catalogue
from core.health.files import load_health
from training.health import folder_of

from browser_support import (  # noqa: F401 (fixtures)
    ARTIFACTS,
    IDLE,
    dashboard_server,
    page,
    require_browser,
    workspace_env,
)
from conftest import REPO, point_at_workspace

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A dashboard server on a workspace with a small demo whose data health is computed; yields
    (base URL, the demo's health)."""
    require_browser()
    home = tmp_path_factory.mktemp("browser-health")
    env = workspace_env(home)
    demo = home / workspace.DEMO_FOLDER
    subprocess.run([sys.executable, "-c", "from core import workspace; workspace.ensure_demo(n=150, seed=5)"],
                   cwd=REPO, env=env, check=True)
    subprocess.run([sys.executable, "-m", "training", "health", str(demo), "--device", "cpu"], cwd=REPO, env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with pytest.MonkeyPatch.context() as patch:
        point_at_workspace(patch, home)
        health = load_health(folder_of(load_catalogue(demo), None).path)
    with dashboard_server(env) as url:
        yield url, health


def test_drag_a_box_over_the_map_to_see_the_photos_in_it(server, page):
    url, health = server
    page.goto(f"{url}/health")
    page.get_by_text("Colour by").wait_for()
    page.wait_for_selector(IDLE)
    plot = page.locator(".js-plotly-plot .nsewdrag").first  # the plot area
    plot.wait_for()
    page.wait_for_selector(".js-plotly-plot .legend")  # laid out
    scroll_to_top(page.get_by_text("Colour by"))  # the map, with room for photos below it
    box = plot.bounding_box()

    # A click on a point: that photo and its nearest neighbours.
    point = page.evaluate(
        "([x, y]) => { const layout = document.querySelector('.js-plotly-plot')._fullLayout;"
        " return [layout.xaxis.d2p(x), layout.yaxis.d2p(y)]; }",
        [float(health.projection[0, 0]), float(health.projection[0, 1])])
    page.mouse.click(box["x"] + point[0], box["y"] + point[1])
    clicked = page.locator('[data-testid="stMarkdownContainer"]').filter(has_text="and its nearest neighbours")
    clicked.wait_for()
    page.wait_for_selector(IDLE)
    # The point under the cursor: the first photo, or one drawn at (nearly) the same place over it.
    shown = int(re.search(r"Photo (\d+)", clicked.inner_text())[1])
    spread = np.ptp(health.projection, axis=0)
    assert np.all(np.abs(health.projection[health.ids.tolist().index(shown)] - health.projection[0]) <= spread / 50)
    assert page.locator('[data-testid="stImage"] img').count() >= 2  # the photo and its neighbours
    scroll_to_top(page.get_by_text("Colour by"))

    # Box select from the toolbar, then a drag.
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.locator('.js-plotly-plot .modebar-btn[data-title="Box Select"]').click()
    # A box around the middle of the photos' positions, from the map's own coordinates to pixels.
    low, high = np.quantile(health.projection, 0.25, axis=0), np.quantile(health.projection, 0.75, axis=0)
    pixels = page.evaluate(
        "([x0, y0, x1, y1]) => { const layout = document.querySelector('.js-plotly-plot')._fullLayout;"
        " return [layout.xaxis.d2p(x0), layout.yaxis.d2p(y0), layout.xaxis.d2p(x1), layout.yaxis.d2p(y1)]; }",
        [float(low[0]), float(high[1]), float(high[0]), float(low[1])])
    start = (box["x"] + pixels[0], box["y"] + pixels[1])
    end = (box["x"] + pixels[2], box["y"] + pixels[3])
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=12)
    page.mouse.up()

    heading = page.locator('[data-testid="stMarkdownContainer"]').filter(has_text="photos selected")
    heading.wait_for()
    page.wait_for_selector(IDLE)
    selected = int(re.search(r"([\d,]+) photos selected", heading.inner_text())[1].replace(",", ""))

    # The box plotly drew, in the map's own coordinates: exactly the photos inside it were selected.
    x0, x1, y0, y1 = page.evaluate(
        "() => { const s = document.querySelector('.js-plotly-plot')._fullLayout.selections[0];"
        " return [s.x0, s.x1, s.y0, s.y1]; }")
    x, y = health.projection[:, 0], health.projection[:, 1]
    inside = (x >= min(x0, x1)) & (x <= max(x0, x1)) & (y >= min(y0, y1)) & (y <= max(y0, y1))
    assert selected == int(inside.sum()) > 0
    images = page.locator('[data-testid="stImage"] img')
    assert images.count() == min(24, selected)
    shown = [int(text) for text in page.locator('[data-testid="stCaptionContainer"] strong').all_inner_texts()
             if text.isdigit()]
    assert set(shown) <= set(health.ids[inside].tolist()) and len(shown) == min(24, selected)

    ARTIFACTS.mkdir(exist_ok=True)
    page.mouse.move(0, 0)  # no hover label in the picture
    scroll_to_top(page.get_by_text("Colour by"))
    page.screenshot(path=str(ARTIFACTS / "health-map.png"))  # full_page would resize, and plotly re-lay out
    shutil.copyfile(ARTIFACTS / "health-map.png", REPO / "docs" / "health.png")
    scroll_to_top(heading)
    page.screenshot(path=str(ARTIFACTS / "health-selection.png"))


def scroll_to_top(locator) -> None:
    """Scroll the app's own container (not the page) so that `locator` is at its top."""
    locator.evaluate("element => element.scrollIntoView({block: 'start'})")
    locator.page.wait_for_timeout(300)
