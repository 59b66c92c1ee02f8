"""The Evaluate page in a real headless Chromium: a confusion matrix, a click on its fullest cell,
and the drill-down grid of that cell's photos. Screenshots land in `test-artifacts/`
(evaluate-confusion.png, evaluate-drilldown.png)."""

from __future__ import annotations

import numpy as np
import pytest

from core.evaluation.files import load_evaluation
from core.evaluation.views import top_n_confusion
from dashboard.text import chart_text
from training.run_folder import RunFolder

from browser_support import ARTIFACTS, IDLE, page, run_server as server  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HEAD = "articleType"


def click_cell(page, plot, true: str, predicted: str) -> None:
    """Click the heatmap cell (true, predicted) where plotly's own axes put it, once hovering
    there shows that cell's label: proof that plotly has laid the figure out (on a loaded machine
    a click could land before that, seen in CI) and that the mouse is on the right cell. The axes'
    categories are the class names as drawn (dashboard.text.chart_text)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    label = (page.locator(".hoverlayer .hovertext").filter(has_text=f"true {true}")
             .filter(has_text=f"predicted {predicted}"))
    for _ in range(10):
        page.wait_for_selector(IDLE)
        box = plot.bounding_box()
        x, y = page.evaluate(
            "([x, y]) => { const layout = document.querySelector('.js-plotly-plot')._fullLayout;"
            " return [layout.xaxis.d2p(x), layout.yaxis.d2p(y)]; }", [chart_text(predicted), chart_text(true)])
        page.mouse.move(box["x"] + x, box["y"] + y, steps=4)
        try:
            label.wait_for(timeout=3_000)
        except PlaywrightTimeout:
            page.mouse.move(0, 0)
            continue
        page.mouse.click(box["x"] + x, box["y"] + y)
        return
    pytest.fail(f"the cell true {true} / predicted {predicted} never showed its hover label")


def test_click_a_confusion_cell_to_see_its_photos(server, page):
    url, folder = server
    evaluation = load_evaluation(RunFolder(folder).evaluation())
    view = top_n_confusion(evaluation.classes(HEAD), evaluation.matrix(HEAD), 20)  # the page's default
    i, j = np.unravel_index(np.argmax(view.counts), view.counts.shape)
    true, predicted = view.classes[i], view.classes[j]

    page.goto(f"{url}/evaluate")
    page.get_by_role("tab", name="Confusion").click()
    page.get_by_text("Cells show").wait_for()
    page.wait_for_selector(IDLE)
    plot = page.locator(".js-plotly-plot .nsewdrag").first  # the plot area
    plot.wait_for()
    page.screenshot(path=str(ARTIFACTS / "evaluate-confusion.png"))  # full_page would resize, and plotly re-lay out

    heading = page.locator('[data-testid="stMarkdownContainer"]').filter(
        has_text=f"{view.counts[i, j]} images true {true}, predicted {predicted}")
    click_cell(page, plot, true, predicted)
    heading.wait_for()
    page.wait_for_selector(IDLE)
    images = page.locator('[data-testid="stImage"] img')
    assert images.count() == min(24, view.counts[i, j])
    heading.scroll_into_view_if_needed()  # the app scrolls inside its own container, not the page
    page.screenshot(path=str(ARTIFACTS / "evaluate-drilldown.png"))
