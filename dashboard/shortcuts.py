"""Keyboard shortcuts for buttons, through the maintained `streamlit-shortcuts` component.

It renders through `st.components.v1.html`, which Streamlit 1.67 deprecates in favour of
`st.iframe` and logs as such on every call: once per rerun of a page with shortcuts, so a review
session filled the terminal. Streamlit is pinned in requirements.txt, so the call keeps working;
only that one message is dropped, and every other deprecation still shows.
"""

from __future__ import annotations

import logging

from streamlit_shortcuts import add_shortcuts

DEPRECATION_LOGGER = "streamlit.deprecation_util"
DROPPED = "`st.components.v1.html`"  # the deprecated name streamlit-shortcuts calls


class _DropComponentsHtmlDeprecation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return DROPPED not in record.getMessage()


_FILTER = _DropComponentsHtmlDeprecation()


def keyboard_shortcuts(**shortcuts: str | list[str]) -> None:
    """`streamlit_shortcuts.add_shortcuts(**shortcuts)`: widget key -> "ctrl+enter" or a list of them."""
    logger = logging.getLogger(DEPRECATION_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    add_shortcuts(**shortcuts)
