"""Untrusted labels in a real browser: a catalogue whose labels are the issue's markdown image and
formula is shown on Home and in the Explore grid as plain text: no image element, no request to
the image's address. A label holding a link tag is drawn by plotly as those characters, in the
Explore charts and in a run's confusion matrix, never as a link; a click on its cell still shows
its photos. Screenshots: test-artifacts/untrusted-explore.png, untrusted-chart.png,
untrusted-taxonomy.png, untrusted-confusion.png."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from test_browser_evaluate import click_cell
from test_charts_untrusted import relabel_commonest

from core import workspace
from core.data.catalogue import STYLES_FILE
from core.evaluation.files import load_evaluation
from core.evaluation.views import top_n_confusion
from dashboard.text import unlinked
from training.run_folder import RunFolder

from browser_support import ARTIFACTS, chromium_page, dashboard_server, require_browser, wait_idle, workspace_env
from conftest import REPO, tiny_run_workspace

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRAP = "http://127.0.0.1:9/tracker.png"  # nothing listens there: only a request would tell
IMAGE = f"![x]({TRAP})"
LINK = '=HYPERLINK("http://evil.example/x")'
TAG = '<a href="http://evil.example/">x</a>'  # plotly would draw it as a link
HEAD = "articleType"


@pytest.fixture(scope="module")
def poisoned_server(tmp_path_factory):
    require_browser()
    home = tmp_path_factory.mktemp("untrusted-workspace")
    env = workspace_env(home)
    subprocess.run([sys.executable, "-c", "from core import workspace; workspace.ensure_demo(n=60, seed=5)"],
                   cwd=REPO, env=env, check=True)
    demo = home / workspace.DEMO_FOLDER
    frame = pd.read_csv(demo / STYLES_FILE, dtype=str, keep_default_na=False)
    frame.loc[:5, "baseColour"] = IMAGE  # the first photos of the grid
    frame.loc[:5, "usage"] = LINK
    frame.loc[:5, "productDisplayName"] = f"<img src='{TRAP}'> **bold**"
    frame.to_csv(demo / STYLES_FILE, index=False)
    relabel_commonest(HEAD, TAG)(demo)
    with dashboard_server({**env, workspace.DATA_ENV: str(demo)}) as url:
        yield url


def test_labels_render_as_text_with_no_image_and_no_request(poisoned_server):
    requested = []
    with chromium_page() as page:
        page.on("request", lambda request: requested.append(request.url))
        page.goto(poisoned_server)
        page.get_by_text("Products kept").wait_for()
        wait_idle(page)
        page.goto(f"{poisoned_server}/explore")
        page.get_by_role("heading", name="Explore", exact=True).wait_for()
        wait_idle(page)
        page.get_by_role("tab", name="Photos").click()
        page.get_by_text(unlinked(IMAGE)).first.wait_for()  # the label, as the text it is
        wait_idle(page)
        assert page.get_by_text(unlinked(LINK)).count() >= 1
        page.screenshot(path=str(ARTIFACTS / "untrusted-explore.png"), full_page=True)
        images = page.eval_on_selector_all("img", "elements => elements.map(e => e.getAttribute('src') || '')")
        links = page.eval_on_selector_all("a", "elements => elements.map(e => e.href)")
    assert not [src for src in images if "tracker" in src or "127.0.0.1:9" in src]
    assert not [url for url in requested if "127.0.0.1:9" in url]
    # no URL in a label made a link
    assert not [href for href in links if "127.0.0.1:9" in href or "evil.example" in href]


def assert_no_link_in_charts(page) -> None:
    """No plotly chart on the page draws a link (plotly makes an SVG <a> of a label's link tag; its
    toolbar's buttons, outside the SVG, are links of its own)."""
    assert page.locator(".js-plotly-plot svg a").count() == 0


def test_a_link_tag_label_is_drawn_by_plotly_as_text(poisoned_server):
    with chromium_page() as page:
        page.goto(f"{poisoned_server}/explore")
        page.get_by_role("heading", name="Explore", exact=True).wait_for()
        wait_idle(page)
        bars = page.locator(".js-plotly-plot").first
        bars.locator("text", has_text=TAG).first.wait_for()  # the tick label, as the characters it is
        assert_no_link_in_charts(page)
        bars.screenshot(path=str(ARTIFACTS / "untrusted-chart.png"))
        page.get_by_role("tab", name="Taxonomy").click()
        sunburst = page.locator(".js-plotly-plot").filter(has=page.locator(".sunburstlayer text"))
        sunburst.locator(".sunburstlayer text", has_text=TAG).first.wait_for()
        assert_no_link_in_charts(page)
        sunburst.screenshot(path=str(ARTIFACTS / "untrusted-taxonomy.png"))


@pytest.fixture(scope="module")
def poisoned_run_server(tmp_path_factory):
    """A dashboard on a finished tiny run whose commonest articleType is TAG; yields (URL, run folder)."""
    require_browser()
    with tiny_run_workspace(tmp_path_factory, seed=9, edit=relabel_commonest(HEAD, TAG)) as (record, demo, home):
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the workspace and dataset tiny_run_workspace set
    with dashboard_server(env) as url:
        yield url, record.folder


def test_a_click_on_a_link_tag_cell_shows_its_photos_and_no_link(poisoned_run_server):
    url, folder = poisoned_run_server
    evaluation = load_evaluation(RunFolder(folder).evaluation())
    view = top_n_confusion(evaluation.classes(HEAD), evaluation.matrix(HEAD), 20)  # the page's default
    i = view.classes.index(TAG)
    j = int(view.counts[i].argmax())
    with chromium_page() as page:
        page.goto(f"{url}/evaluate")
        page.get_by_role("tab", name="Confusion").click()
        page.get_by_text("Cells show").wait_for()
        wait_idle(page)
        plot = page.locator(".js-plotly-plot .nsewdrag").first
        plot.wait_for()
        heading = page.locator('[data-testid="stMarkdownContainer"]').filter(
            has_text=unlinked(f"{view.counts[i, j]} images true {TAG}, predicted {view.classes[j]}"))
        click_cell(page, plot, TAG, view.classes[j])  # the hover shows the label as its characters
        heading.wait_for()
        wait_idle(page)
        assert page.locator('[data-testid="stImage"] img').count() == min(24, view.counts[i, j])
        assert page.locator(".js-plotly-plot text", has_text=TAG).count() >= 2  # both axes' tick labels
        assert_no_link_in_charts(page)
        page.locator(".js-plotly-plot").first.screenshot(path=str(ARTIFACTS / "untrusted-confusion.png"))
