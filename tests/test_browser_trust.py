"""Evaluate → Trust → Per source in a real headless Chromium: a source whose audits fired its alarm is
shown with the stopped head and why (its name, typed markdown, as plain text), and an admin (local
mode) sets its audit share, which is saved. Screenshot: docs/trust-sources.png (the README's)."""

from __future__ import annotations

import pytest

from core.labels.sources import audit_share
from core.labels.store import LabelStore

from browser_support import chromium_page, server_on_a_copy, wait_idle
from conftest import REPO
from source_support import AUDITS_WRONG, HEAD, fire_alarm, new_photos

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SOURCE = "street *shoot*"  # a folder's name: markdown if it were rendered as such
STOPPED = (f"stopped: {AUDITS_WRONG} of {AUDITS_WRONG} audited tags were wrong, above the 2% promised; an admin "
           "recalibrates it")
# The source is not certified on its own photos: a person decides every one of them, and the run's rule,
# tried on them as audits, is stopped too.
RULE = ("a person decides every photo of this source until its own reviewed photos certify it (audit share 100 %); "
        + STOPPED)
SCREENSHOT = REPO / "docs" / "trust-sources.png"


@pytest.fixture(scope="module")
def trust_server(in_tiny_run, tmp_path_factory):
    """A dashboard on the shared tiny run whose label store (a copy) holds SOURCE: four new photos whose
    audited gender tags people all found wrong. Yields (URL, the store, the run's dataset)."""
    with server_on_a_copy(in_tiny_run, tmp_path_factory) as (url, database):
        store = LabelStore(workspace=in_tiny_run.home, db_url=f"sqlite:///{database}")
        items = new_photos(store, in_tiny_run.demo, tmp_path_factory.mktemp("photos") / SOURCE, AUDITS_WRONG)
        fire_alarm(store, items, in_tiny_run.record.id)
        yield url, store, in_tiny_run.demo


def source_rows(page) -> list[list[str]]:
    """The per-source table's rows as drawn, once its stopped head is (its grid's accessible cells:
    the columns in view)."""
    table = page.locator('[data-testid="stDataFrame"] table[role="grid"]').filter(has_text="rule in force")
    table.locator("td", has_text=STOPPED).wait_for(state="attached")  # inside the canvas: never "visible"
    return [cells for row in table.locator("tr").all()
            if (cells := [cell.text_content() for cell in row.locator("td").all()])]


def test_the_trust_view_shows_a_stopped_head_and_why_and_an_admin_sets_the_audit_share(trust_server):
    url, store, dataset = trust_server
    with chromium_page() as page:
        page.goto(f"{url}/evaluate")
        page.get_by_role("tab", name="Trust").click()
        heading = page.get_by_role("heading", name="Per source")
        heading.wait_for()
        wait_idle(page)
        warning = page.locator('[data-testid="stAlert"]').filter(has_text=f"{HEAD} of the photos from {SOURCE}: ")
        text = warning.locator('[data-testid="stMarkdownContainer"]')
        assert text.inner_text().strip() == f"{HEAD} of the photos from {SOURCE}: {RULE}."
        assert text.locator("em, strong").count() == 0  # the typed name is not markdown
        rows = {row[2]: row for row in source_rows(page)}
        assert rows[HEAD][:4] == [SOURCE, str(AUDITS_WRONG), HEAD, RULE]
        assert all(STOPPED not in row[3] for head, row in rows.items() if head != HEAD)  # the other heads go on
        form = page.locator('[data-testid="stForm"]').filter(has_text="Set the audit share")
        form.scroll_into_view_if_needed()  # the app scrolls inside its own container, not the page
        page.screenshot(path=str(SCREENSHOT))
        form.get_by_label("Audit share (%)").fill("50")
        form.get_by_label("Audit share (%)").press("Tab")
        form.get_by_role("button", name="Set the audit share").click()
        page.locator('[data-testid="stAlert"]').filter(has_text=f"Audit share of {SOURCE} set to 50 %.").wait_for()
        wait_idle(page)
    assert audit_share(store, dataset, SOURCE) == 0.5
