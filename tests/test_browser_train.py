"""The Train page in a real headless Chromium: configure a tiny run, start it, watch it to finished."""

from __future__ import annotations

import time

import pytest

from browser_support import ARTIFACTS, page, server, wait_idle  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# On the 150-photo demo: 120 rows, 23 of them validation; rare classes kept (97 training rows
# would merge rare colours into "Other"). Big enough that training outlasts the page's 2 s refresh
# (a fit of about 6 s here; 64 px and 2 epochs of 48 rows took 1.8 s, and the epochs went unseen).
TINY_FIELDS = {"Image size (px)": "96", "Epochs": "4", "Batch size": "16", "Max samples (0 = all)": "120",
               "Loader workers": "0"}
TINY_HINT = "Per epoch: 97 training and 23 validation images (7 × batch 16)"


def set_number(page, label: str, value: str) -> None:
    box = page.get_by_role("spinbutton", name=label, exact=True)
    box.fill(value)
    box.press("Enter")


def test_start_a_run_and_watch_it_finish(server, page):
    url, _ = server
    page.set_viewport_size({"width": 1400, "height": 2200})  # Streamlit scrolls inside the page: show it all
    page.goto(f"{url}/train")
    page.get_by_text("New run").wait_for()
    wait_idle(page)
    for label, value in TINY_FIELDS.items():
        set_number(page, label, value)
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Rare classes").click()
    page.get_by_role("option", name="keep", exact=True).click()
    page.get_by_text(TINY_HINT).wait_for()
    wait_idle(page)

    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Started run").wait_for()
    progress = page.locator('[data-testid="stProgress"]')
    finished = page.get_by_text("Finished in ")
    seen: list[str] = []
    deadline = time.monotonic() + 240
    while not finished.count():
        assert time.monotonic() < deadline, f"the run did not finish within 240 s; progress seen: {seen}"
        text = "".join(progress.all_inner_texts()).strip()  # no waiting: the fragment redraws every 2 s
        if text and (not seen or seen[-1] != text):
            seen.append(text)
            if "epoch" in text and not (ARTIFACTS / "train-running.png").exists():
                page.screenshot(path=str(ARTIFACTS / "train-running.png"), full_page=True)
        time.sleep(0.3)
    assert len(seen) >= 2, seen  # the live view moved on while we watched
    # Any epoch stage ("Training: epoch e of E", "Validating after epoch e of E") shows the run was
    # followed live.
    assert any("epoch" in text for text in seen), seen

    page.get_by_text("Validation macro-F1 per head").wait_for()
    wait_idle(page)
    page.screenshot(path=str(ARTIFACTS / "train-finished.png"), full_page=True)
    assert page.get_by_role("button", name="Cancel run").count() == 0
