"""A reviewer's day in a real headless Chromium, local mode, on the shared tiny run: the name typed in
the sidebar survives a page jump (Explore → Taxonomy → "Review these rows") and a reload, and the
decisions made after the jump are logged under it; in a catalogue queue, whose "Take" buttons
(Alt+n) change from row to row, the keyboard shortcuts keep working move after move."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from pathlib import Path

import pytest

from browser_support import chromium_page, server_on_a_copy, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NAME = "Cleo"


@pytest.fixture(scope="module")
def server(in_tiny_run, tmp_path_factory):
    """A dashboard server on the shared tiny run, its labels in a copy of the workspace database;
    yields (base URL, that database's path)."""
    with server_on_a_copy(in_tiny_run, tmp_path_factory) as found:
        yield found


@pytest.fixture(scope="module")
def page(server):
    with chromium_page() as page:
        yield page


def reviewers(database: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return {row[0] for row in connection.execute("SELECT DISTINCT reviewer FROM corrections")}


def position(page) -> str:
    """The item's "n of N" at the head of its caption."""
    caption = page.locator('[data-testid="stCaptionContainer"]').filter(has_text=re.compile(r"^\d+ of \d+ · ")).first
    return caption.inner_text().split(" · ")[0]


def jump_to_taxonomy_queue(page) -> None:
    """From the page shown, the sidebar's navigation to Explore, its Taxonomy tab, then "Review these N rows"."""
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Explore").click()
    page.get_by_role("heading", name="Explore").wait_for()
    wait_idle(page)
    page.get_by_role("tab", name="Taxonomy").click()
    page.get_by_role("button", name=re.compile(r"Review these \d+ rows")).click()
    page.get_by_role("heading", name="Review", exact=True).wait_for()
    page.get_by_role("button", name="Save & next").wait_for()
    wait_idle(page)


def test_the_typed_name_survives_a_jump_and_a_reload(server, page):
    url, database = server
    page.goto(url)
    wait_idle(page)
    name = page.get_by_label("Your name")
    name.fill(NAME)
    name.press("Tab")
    wait_idle(page)
    jump_to_taxonomy_queue(page)
    assert page.get_by_label("Your name").input_value() == NAME
    start, total = (int(part) for part in position(page).split(" of "))
    page.get_by_role("button", name="Save & next").click()
    page.get_by_text(f"{start + 1} of {total} · ").wait_for()
    wait_idle(page)
    assert reviewers(database) == {NAME}

    page.reload()  # a new session: the name comes back from the address
    page.get_by_role("heading", name="Review", exact=True).wait_for()
    wait_idle(page)
    assert page.get_by_label("Your name").input_value() == NAME


def test_keys_keep_working_through_a_catalogue_queue(server, page):
    url, _ = server
    page.goto(url)
    wait_idle(page)
    jump_to_taxonomy_queue(page)
    start, total = (int(part) for part in position(page).split(" of "))
    assert total - start >= 4, f"the tiny run's catalogue has too few rows that break the taxonomy ({total})"

    def press(keys: str, expected: int) -> None:
        page.locator("h1").first.click()  # focus the page, not a field
        page.keyboard.press(keys)
        page.get_by_text(f"{expected} of {total} · ").wait_for(timeout=30_000)
        wait_idle(page)

    for step in (1, 2, 3):  # each move changes the item, and with it the set of "Take" buttons
        press("Control+ArrowRight", start + step)
    press("Control+ArrowLeft", start + 2)
    press("Control+Enter", start + 3)  # save & next
