"""The Evaluate page in a real headless Chromium: a confusion matrix, a click on its fullest cell,
and the drill-down grid of that cell's photos. Screenshots land in `test-artifacts/`
(evaluate-confusion.png, evaluate-drilldown.png)."""

from __future__ import annotations


import numpy as np
import pytest

from core.evaluation import load_evaluation, top_n_confusion

from browser_support import ARTIFACTS, IDLE, page, run_server as server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser

HEAD = "articleType"


def test_click_a_confusion_cell_to_see_its_photos(server, page):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    url, folder = server
    evaluation = load_evaluation(folder)
    view = top_n_confusion(evaluation.classes(HEAD), evaluation.matrix(HEAD), 20)  # the page's default
    i, j = np.unravel_index(np.argmax(view.counts), view.counts.shape)
    true, predicted, k = view.classes[i], view.classes[j], len(view.classes)

    page.goto(f"{url}/evaluate")
    page.get_by_role("tab", name="Confusion").click()
    page.get_by_text("Cells show").wait_for()
    page.wait_for_selector(IDLE)
    plot = page.locator(".js-plotly-plot .nsewdrag").first  # the plot area: k x k equal cells
    plot.wait_for()
    page.screenshot(path=str(ARTIFACTS / "evaluate-confusion.png"))  # full_page would resize, and plotly re-lay out

    heading = page.locator('[data-testid="stMarkdownContainer"]').filter(
        has_text=f"{view.counts[i, j]} images true {true}, predicted {predicted}")
    box = plot.bounding_box()
    page.mouse.click(box["x"] + (j + 0.5) * box["width"] / k, box["y"] + (i + 0.5) * box["height"] / k)
    try:
        heading.wait_for(timeout=20_000)
    except PlaywrightTimeout:
        # On a loaded machine the click can land while plotly is still laying out (seen in CI):
        # choose the same cell with the page's true/predicted selects instead.
        for label, value in (("True class", true), ("Predicted class", predicted)):
            page.wait_for_selector(IDLE)
            page.locator('[data-testid="stSelectbox"]').filter(has_text=label).click()
            page.keyboard.type(value)
            page.keyboard.press("Enter")
        heading.wait_for()
    page.wait_for_selector(IDLE)
    images = page.locator('[data-testid="stImage"] img')
    assert images.count() == min(24, view.counts[i, j])
    heading.scroll_into_view_if_needed()  # the app scrolls inside its own container, not the page
    page.screenshot(path=str(ARTIFACTS / "evaluate-drilldown.png"))
