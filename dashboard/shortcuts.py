"""Keyboard shortcuts for buttons, through the maintained `streamlit-shortcuts` component, with a
guard so that keys pressed in a text field stay with that field.

The component listens for keydown on the whole document and acts wherever the key was pressed:
Ctrl+X (cut) or Ctrl+Z (undo typing) in the reviewer's name or a new label's field would also
press "Not a product" or "Undo". `TEXT_FIELD_GUARD` listens on <body>, below the document, and
stops the shortcut combos that come from a text field before they reach the component. Label
choices (select boxes) are not text fields: the keyboard flow goes on from them, though their own
key handling stops a keydown from bubbling, so the guard hands those combos to the component's
listener during capture.

The component renders through `st.components.v1.html`, which Streamlit 1.67 deprecates in favour
of `st.iframe` and logs as such on every call: once per rerun of a page with shortcuts, so a
review session filled the terminal. Streamlit is pinned in requirements.txt, so the call keeps
working; only that one message is dropped, and every other deprecation still shows.
"""

from __future__ import annotations

import json
import logging

import streamlit as st
from streamlit_shortcuts import add_shortcuts

DEPRECATION_LOGGER = "streamlit.deprecation_util"
DROPPED = "`st.components.v1.html`"  # the deprecated name streamlit-shortcuts calls

# Combos are parsed as the component parses them ("ctrl+arrowleft": modifiers, then the key).
TEXT_FIELD_GUARD = """<script>
(() => {
  const parse = (combo) => {
    const parts = combo.toLowerCase().split("+");
    const modifiers = ["ctrl", "alt", "shift", "meta", "cmd"];
    return {ctrl: parts.includes("ctrl"), alt: parts.includes("alt"), shift: parts.includes("shift"),
            meta: parts.includes("meta") || parts.includes("cmd"), key: parts.find((p) => !modifiers.includes(p))};
  };
  window.__fashionTaggerGuardedCombos = COMBOS.map(parse);
  if (window.__fashionTaggerGuard) return;
  window.__fashionTaggerGuard = true;
  const isTextField = (element) => element && (element.isContentEditable || element.tagName === "TEXTAREA"
    || (element.tagName === "INPUT" && element.getAttribute("role") !== "combobox"));
  const isSelectBox = (element) => element && element.getAttribute && element.getAttribute("role") === "combobox";
  const isShortcut = (event) => window.__fashionTaggerGuardedCombos.some((combo) => combo.ctrl === event.ctrlKey
    && combo.alt === event.altKey && combo.shift === event.shiftKey && combo.meta === event.metaKey
    && combo.key === event.key.toLowerCase());
  document.body.addEventListener("keydown", (event) => {
    if (isTextField(event.target) && isShortcut(event)) event.stopPropagation();
  });
  // A select box's own key handling stops the keydown before it bubbles to the component's
  // listener, so a shortcut pressed there is handed to that listener here, once.
  document.addEventListener("keydown", (event) => {
    const listener = window.__streamlitShortcutsListener;
    if (!isSelectBox(event.target) || !isShortcut(event) || !listener) return;
    event.stopPropagation();
    listener(event);
  }, true);
})();
</script>"""


class _DropComponentsHtmlDeprecation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return DROPPED not in record.getMessage()


_FILTER = _DropComponentsHtmlDeprecation()


def keyboard_shortcuts(**shortcuts: str | list[str]) -> None:
    """`streamlit_shortcuts.add_shortcuts(**shortcuts)` (widget key -> "ctrl+enter" or a list of
    them), none of which fires from a text field."""
    logger = logging.getLogger(DEPRECATION_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    combos = [combo for value in shortcuts.values() for combo in ([value] if isinstance(value, str) else value)]
    st.html(TEXT_FIELD_GUARD.replace("COMBOS", json.dumps(combos)), unsafe_allow_javascript=True)
    add_shortcuts(**shortcuts)
