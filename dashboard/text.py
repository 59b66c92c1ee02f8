"""Untrusted text (labels, product and file names, reviewer names, dataset paths) put into
Streamlit's markdown as the text it is: every markdown, colour, emoji and HTML construct escaped,
lines joined; or as a code span nothing inside can leave; or into a plotly figure as text it draws
literally."""

from __future__ import annotations

import html
import re

# Every ASCII punctuation character may be backslash-escaped in CommonMark; escaping all of them
# also defuses Streamlit's own :colour[...] and :emoji: syntax and raw HTML.
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_BACKTICKS = re.compile(r"`+")
# Streamlit's markdown (remark-gfm) turns bare URLs and email addresses into links after escapes are
# resolved, so no escape stops it; an invisible WORD JOINER after each trigger ("http", "www", "@", ...)
# breaks the pattern and leaves the text as it reads.
_AUTOLINK_TRIGGER = re.compile(r"(?i)(\b(?:https?|ftp|www|mailto|xmpp)(?=[:.])|@)")
WORD_JOINER = "\u2060"


def plain(value: object) -> str:
    """`value` as text that markdown shows literally, on one line, with no link made of it."""
    return _PUNCTUATION.sub(r"\\\1", unlinked(" ".join(str(value).split())))


def unlinked(text: str) -> str:
    """`text` with a WORD_JOINER after each trigger of an autolink: what `plain` text reads as on a page."""
    return _AUTOLINK_TRIGGER.sub(rf"\1{WORD_JOINER}", text)


def code(value: object) -> str:
    """`value` (a path, an id) as an inline code span, on one line: its fence is longer than any
    run of backticks inside, so nothing in it is read as markdown."""
    text = " ".join(str(value).split())
    fence = "`" * (1 + max((len(run) for run in _BACKTICKS.findall(text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""  # CommonMark strips one such space each side
    return f"{fence}{pad}{text}{pad}{fence}"


def chart_text(value: object) -> str:
    """`value` as text plotly draws literally. Plotly reads a small HTML subset (`<a href>`, `<b>`,
    `<br>`, `<span style>`, ...) and entities in every text it draws (axis ticks, legend entries,
    hovers, sunburst labels, titles); with `&`, `<` and `>` as entities it shows those characters.
    One-to-one, so distinct labels stay distinct categories."""
    return html.escape(str(value), quote=False)
