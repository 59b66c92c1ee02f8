"""dashboard.shortcuts: the keyboard shortcuts render with their text-field guard, and only the
one deprecation message they cause is kept out of the dashboard's log. That keys pressed in a text
field stay with it is tested in a real browser (test_browser_review.py)."""

from __future__ import annotations

import logging

from streamlit.deprecation_util import show_deprecation_warning
from streamlit.testing.v1 import AppTest

from dashboard.shortcuts import DEPRECATION_LOGGER


def page_with_a_shortcut() -> None:
    import streamlit as st

    from dashboard.shortcuts import keyboard_shortcuts

    st.button("Save", key="save")
    keyboard_shortcuts(save="ctrl+enter")


def test_shortcuts_render_without_their_deprecation_message_and_others_still_log():
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger(DEPRECATION_LOGGER)
    logger.addHandler(handler)
    try:
        at = AppTest.from_function(page_with_a_shortcut).run()
        at.run()  # a rerun renders the shortcuts again
        show_deprecation_warning("Please replace `st.old_thing` with `st.new_thing`.", show_in_browser=False)
    finally:
        logger.removeHandler(handler)
    assert not at.exception, at.exception
    assert at.button(key="save")
    assert any("ctrl+enter" in str(element.proto) for element in at.get("iframe"))  # the component's script
    [guard] = at.get("html")  # the text-field guard, with the same combos
    assert '["ctrl+enter"]' in guard.proto.body and "stopPropagation" in guard.proto.body
    assert [record.getMessage() for record in records] == ["Please replace `st.old_thing` with `st.new_thing`."]
