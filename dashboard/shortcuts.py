"""Keyboard shortcuts for buttons: one listener on the page's document, bound once per browser tab,
that looks the button up when the key is pressed.

The page's shortcuts (widget key -> combos) are written into the document on every render; the
listener reads them at key time and clicks `.st-key-<key> button` when it is on the page. So
nothing depends on an element that a rerun replaces: the `streamlit-shortcuts` component this
replaces bound its listener from inside its first iframe, which Streamlit replaced as soon as the
set of shortcuts changed (a catalogue queue's Alt+n "Take" buttons differ from row to row), and
every key stopped after the first move.

Keys pressed in a text field stay with that field: Ctrl+X (cut) or Ctrl+Z (undo typing) in the
reviewer's name or a new label's field never press "Not a product" or "Undo". Label choices (select
boxes) are not text fields: the keyboard flow goes on from them. The listener runs in the capture
phase, before a select box's own key handling can stop the key.
"""

from __future__ import annotations

import json

import streamlit as st

# Combos as "ctrl+arrowleft": modifiers, then the key (KeyboardEvent.key, lower case).
SHORTCUTS_SCRIPT = """<script>
(() => {
  window.__fashionTaggerShortcuts = SHORTCUTS;
  if (window.__fashionTaggerShortcutsBound) return;
  window.__fashionTaggerShortcutsBound = true;
  const modifiers = ["ctrl", "alt", "shift", "meta", "cmd"];
  const matches = (combo, event) => {
    const parts = combo.toLowerCase().split("+");
    return parts.includes("ctrl") === event.ctrlKey && parts.includes("alt") === event.altKey
      && parts.includes("shift") === event.shiftKey
      && (parts.includes("meta") || parts.includes("cmd")) === event.metaKey
      && parts.find((part) => !modifiers.includes(part)) === event.key.toLowerCase();
  };
  const isTextField = (element) => element && (element.isContentEditable || element.tagName === "TEXTAREA"
    || (element.tagName === "INPUT" && element.getAttribute("role") !== "combobox"));
  document.addEventListener("keydown", (event) => {
    if (isTextField(event.target)) return;
    for (const [key, combos] of Object.entries(window.__fashionTaggerShortcuts)) {
      if (!combos.some((combo) => matches(combo, event))) continue;
      const button = document.querySelector(`.st-key-${key} button`);
      if (!button) return;
      event.preventDefault();
      event.stopPropagation();
      button.click();
      button.focus();
      return;
    }
  }, true);
})();
</script>"""


def keyboard_shortcuts(**shortcuts: str | list[str]) -> None:
    """Shortcuts for this page's buttons, `widget key -> "ctrl+enter"` or a list of combos; none
    fires from a text field. They replace the shortcuts of the page rendered before."""
    combos = {key: [value] if isinstance(value, str) else list(value) for key, value in shortcuts.items()}
    st.html(SHORTCUTS_SCRIPT.replace("SHORTCUTS", json.dumps(combos)), unsafe_allow_javascript=True)
