"""How long a reviewer looked at an item before deciding it, measured on the server (the effort a
Team page shows, core.labels.team): the clock starts when the Review page first shows the item."""

from __future__ import annotations

import time

import streamlit as st

SHOWN_KEY = "review.shown"  # (item, time.monotonic() when the page first showed it)
LONGEST = 30 * 60  # seconds; longer is a person away from the desk, not effort: not recorded


def start_clock(item: int) -> None:
    """Start the clock for `item` unless it is already the one shown."""
    if st.session_state.get(SHOWN_KEY, (None, 0.0))[0] != item:
        st.session_state[SHOWN_KEY] = (item, time.monotonic())


def seconds_on(item: int) -> float | None:
    """Seconds since `item` was first shown; None when it was not the item shown, or too long ago."""
    current, since = st.session_state.get(SHOWN_KEY, (None, 0.0))
    if current != item:
        return None
    seconds = time.monotonic() - since
    return round(seconds, 2) if seconds <= LONGEST else None
