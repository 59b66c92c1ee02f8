"""Untrusted text at the edges: what a person may type into the app (a new label, a name), and the
cells of a CSV meant for people, which a spreadsheet would otherwise run as formulas.

A spreadsheet reads a cell starting with `=`, `+`, `-` or `@` as a formula (`=HYPERLINK(...)`
opens a link, older ones run commands), and one starting with a tab or a carriage return the same
way once it strips them. So typed text starting with a formula character is refused where it
enters, and CSVs for people prefix such cells with a single quote (OWASP's CSV-injection rule):
the spreadsheet shows the text, the quote hidden. A dataset file the app itself reads again (an
exported styles.csv) is written as it is; its risky values are reported instead (core.data's
cleaning report).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@")  # what a value a spreadsheet would run starts with
CELL_RISKY_STARTS = (*FORMULA_STARTS, "\t", "\r")  # OWASP: tab and carriage return too
MAX_LABEL_CHARS = 100  # a label typed by a person; the catalogue's longest is ~25
MAX_NAME_CHARS = 255  # a person's name or email


def check_typed(value: Any, what: str, max_chars: int = MAX_LABEL_CHARS) -> str:
    """`value` stripped, when a person may enter it as `what`: text, not empty, at most `max_chars`
    characters, no control or invisible characters, not starting with a formula character. A
    ValueError names the rule broken otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, got {value!r}")
    text = value.strip()
    if not text:
        raise ValueError(f"{what} must not be empty")
    shown = repr(text[:40]) + ("…" if len(text) > 40 else "")  # the value named, as inert text
    if len(text) > max_chars:
        raise ValueError(f"{what} must be at most {max_chars} characters, got {len(text):,}: {shown}")
    hidden = next((char for char in text if not char.isprintable()), None)
    if hidden is not None:
        raise ValueError(f"{what} must not hold control or invisible characters "
                         f"(it holds U+{ord(hidden):04X}): {shown}")
    if text.startswith(FORMULA_STARTS):
        raise ValueError(f"{what} must not start with {' '.join(FORMULA_STARTS)} (a spreadsheet would run it as a "
                         f"formula), got {shown}")
    return text


def formula_like(value: Any) -> bool:
    """Whether `value` is text a spreadsheet would run as a formula."""
    return isinstance(value, str) and value.startswith(CELL_RISKY_STARTS)


def spreadsheet_cell(value: Any) -> Any:
    """`value` as a CSV cell for people: text a spreadsheet would run gets a leading single quote;
    anything else (numbers included, negative ones too) is left as it is."""
    return f"'{value}" if formula_like(value) else value


def spreadsheet_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` with every text cell (and text index label) made a spreadsheet_cell."""
    safe = frame.copy()
    for column in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[column]) and not pd.api.types.is_bool_dtype(safe[column]):
            safe[column] = safe[column].astype(object).map(spreadsheet_cell)
    if not pd.api.types.is_numeric_dtype(safe.index):
        safe.index = safe.index.map(spreadsheet_cell)
    return safe


def spreadsheet_csv(frame: pd.DataFrame, path: str | Path | None = None, **to_csv: Any) -> str | None:
    """`frame.to_csv(path, **to_csv)` with its cells made safe for a spreadsheet (spreadsheet_frame):
    the one writer of every CSV meant for people. Returns the text when `path` is None."""
    return spreadsheet_frame(frame).to_csv(path, **to_csv)
