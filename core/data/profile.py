"""Catalogue profiles for exploring: column completeness, top-N counts, year spread, row filters.

Every function takes the catalogue frame of `core.data.catalogue.Catalogue.frame` and returns a
small frame ready to chart or show; none of them mutates its input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from core.data import HEADS

OTHERS_LABEL = "(others)"
MISSING_LABEL = "(missing)"


def column_profile(frame: pd.DataFrame) -> pd.DataFrame:
    """Per column: missing count, missing share and number of distinct values.

    Index = column names; columns `missing` (int), `missing_share` (float in [0, 1]), `unique` (int).
    """
    missing = frame.isna().sum()
    return pd.DataFrame(
        {
            "missing": missing.astype(int),
            "missing_share": (missing / max(len(frame), 1)).astype(float),
            "unique": frame.nunique(dropna=True).astype(int),
        }
    )


def top_n_counts(frame: pd.DataFrame, column: str, n: int) -> pd.DataFrame:
    """The `n` most frequent values of `column` plus one `(others)` row for the rest.

    Missing values count as their own `(missing)` value so charts never hide them.
    Columns: `value` (str), `count` (int), `share` (float of all rows); most frequent first,
    `(others)` last.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    counts = frame[column].fillna(MISSING_LABEL).value_counts()
    top = counts.iloc[:n]
    rest = int(counts.iloc[n:].sum())
    if rest:
        top = pd.concat([top, pd.Series({OTHERS_LABEL: rest})])
    out = top.rename_axis("value").reset_index(name="count")
    out["value"] = out["value"].astype(str)
    out["share"] = out["count"] / max(len(frame), 1)
    return out


def year_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows per year, every year between the first and the last (zero where none).

    Columns: `year` (int), `count` (int). Empty when no row has a year.
    """
    years = frame["year"].dropna().astype(int)
    if years.empty:
        return pd.DataFrame({"year": pd.Series(dtype=int), "count": pd.Series(dtype=int)})
    counts = years.value_counts().reindex(range(years.min(), years.max() + 1), fill_value=0)
    return counts.rename_axis("year").reset_index(name="count")


def filter_rows(frame: pd.DataFrame, filters: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Rows whose value is one of the chosen values in every filtered column (an empty choice = all).

    `(missing)` among the chosen values selects rows where that column is missing.
    """
    mask = pd.Series(True, index=frame.index)
    for column, values in filters.items():
        if column not in frame.columns:
            raise KeyError(f"cannot filter on unknown column {column!r}; columns: {', '.join(frame.columns)}")
        if values:
            mask &= frame[column].fillna(MISSING_LABEL).isin(list(values))
    return frame[mask]


def labels_text(row: pd.Series, columns: Sequence[str] = HEADS) -> str:
    """The row's labels joined for a caption, missing ones left out."""
    return " · ".join(str(row[column]) for column in columns if pd.notna(row[column]))


def page_of(frame: pd.DataFrame, page: int, page_size: int) -> pd.DataFrame:
    """Rows of 1-based `page` when the frame is cut into pages of `page_size` (last page may be short)."""
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    pages = page_count(len(frame), page_size)
    if not 1 <= page <= pages:
        raise ValueError(f"page {page} is outside 1..{pages}")
    return frame.iloc[(page - 1) * page_size : page * page_size]


def page_count(rows: int, page_size: int) -> int:
    """Number of pages for `rows` rows (at least 1, so an empty result still has a page)."""
    return max(1, -(-rows // page_size))


def rare_policy_preview(frame: pd.DataFrame, head: str, rare_policy: str, rare_min_count: int) -> pd.DataFrame:
    """What the rare-class policy does to each class of `head` at this threshold.

    Columns: `class`, `count`, `rare` (bool), `becomes` (the class itself, `Other`, or `None (ignored)`);
    rarest first, so the classes that change are on top.
    """
    from core.data.schema import OTHER_CLASS, RarePolicy, rare_classes

    rare_policy = RarePolicy.parse(rare_policy, "rare policy")
    preview = rare_classes(frame, head, rare_min_count).sort_values(["count", "class"])
    replacement = {RarePolicy.IGNORE: "None (ignored)", RarePolicy.OTHER: OTHER_CLASS}.get(rare_policy)
    preview["becomes"] = preview["class"].where(~preview["rare"] | (replacement is None), replacement)
    return preview.reset_index(drop=True)
