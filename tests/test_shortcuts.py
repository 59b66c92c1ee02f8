"""dashboard.shortcuts: the page's shortcuts render as one script in the page's document, with the
page's combos, and without the deprecated components call. That keys keep working when a rerun
changes the set of shortcuts, and that keys pressed in a text field stay with it, is tested in a
real browser (test_browser_reviewer_day.py, test_browser_review.py)."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest


def page_with_shortcuts() -> None:
    import streamlit as st

    from dashboard.shortcuts import keyboard_shortcuts

    st.button("Save", key="save")
    st.button("Take", key="take_1")
    keyboard_shortcuts(save="ctrl+enter", take_1=["alt+1", "alt+!"])


def test_shortcuts_render_as_one_script_with_the_page_combos():
    at = AppTest.from_function(page_with_shortcuts).run()
    at.run()  # a rerun renders them again, still once
    assert not at.exception, at.exception
    assert not at.get("iframe")  # no component frame to be replaced
    [script] = at.get("html")
    combos = json.dumps({"save": ["ctrl+enter"], "take_1": ["alt+1", "alt+!"]})
    assert f"window.__fashionTaggerShortcuts = {combos};" in script.proto.body
    assert 'addEventListener("keydown"' in script.proto.body and "isTextField" in script.proto.body
