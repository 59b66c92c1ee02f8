"""The label store's input checks at the edge: ids, heads, labels and predictions as callers pass
them, checked and normalised before anything is written (ValueError naming the problem otherwise)."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import pandas as pd

from core.data import HEADS


def check_id(value: Any, what: str = "product id") -> int:
    """An int (numpy ints too); not a bool, float or text."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None


def check_heads(mapping: Mapping[str, Any], what: str) -> dict[str, Any]:
    unknown = [head for head in mapping if head not in HEADS]
    if unknown:
        raise ValueError(f"{what}: unknown head(s) {', '.join(map(repr, unknown))}; heads are {', '.join(HEADS)}")
    return dict(mapping)


def clean_label(head: str, value: Any) -> str | None:
    """A label as stored: stripped text, None (missing) for None or blank text."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"the {head} label must be text or None, got {value!r}")
    if "\n" in value or "\r" in value:  # an exported styles.csv holds one row per line
        raise ValueError(f"the {head} label must be one line of text, got {value!r}")
    return value.strip() or None


def check_prediction(head: str, guess: Any) -> tuple[str, float]:
    try:
        label, p = guess
        return str(label), float(p)
    except (TypeError, ValueError):
        raise ValueError(f"predicted[{head!r}] must be (label, probability), got {guess!r}") from None


def catalogue_value(value: Any) -> str | None:
    """A catalogue cell as stored: its text, None for a missing one (None, pd.NA, NaN)."""
    return None if value is None or value is pd.NA or (isinstance(value, float) and value != value) else str(value)
