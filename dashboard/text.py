"""Untrusted text (labels, product and file names, reviewer names) put into Streamlit's markdown
as the text it is: every markdown, colour, emoji and HTML construct escaped, lines joined."""

from __future__ import annotations

import re

# Every ASCII punctuation character may be backslash-escaped in CommonMark; escaping all of them
# also defuses Streamlit's own :colour[...] and :emoji: syntax and raw HTML.
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def plain(value: object) -> str:
    """`value` as text that markdown shows literally, on one line."""
    text = " ".join(str(value).split())
    return _PUNCTUATION.sub(r"\\\1", text)
