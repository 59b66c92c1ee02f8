"""The photo grid every page shows photos in: a page at a time, with each photo's id and a few
lines of plain text under it (labels are untrusted: never read as markdown)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from core.data.catalogue import Catalogue
from core.data.profile import page_count, page_of
from dashboard.datasets import thumbnail
from dashboard.text import plain

GRID_COLUMNS = 6
PAGE_SIZE = 24


def photo_grid(rows: pd.DataFrame, catalogue: Catalogue | None, lines: Callable[[pd.Series], list[str]], key: str,
               page_size: int = PAGE_SIZE) -> None:
    """The photos of `rows` (a frame with an `id` column, in its order) from `catalogue` (None: the
    ids and lines only), `page_size` at a time with a page number when there are several pages;
    `lines(row)` under each photo, as plain text. A photo that cannot be read says so in its place."""
    if rows.empty:
        st.info("No photos here.")
        return
    pages = page_count(len(rows), page_size)
    # Keyed by the page count, so a narrower selection never leaves the widget past the last page.
    page = st.number_input(f"Page (of {pages:,})", 1, pages, 1, key=f"{key}.page.{pages}") if pages > 1 else 1
    shown = page_of(rows, page, page_size)
    for start in range(0, len(shown), GRID_COLUMNS):
        for cell, (_, row) in zip(st.columns(GRID_COLUMNS), shown.iloc[start:start + GRID_COLUMNS].iterrows()):
            if catalogue is not None:
                picture = thumbnail(str(catalogue.image_path(row["id"])))
                if isinstance(picture, str):  # the reason names the file: plain text, never markdown
                    cell.warning("This photo cannot be read.")
                    cell.text(picture)
                else:
                    cell.image(picture, width="stretch")
            cell.caption("  \n".join([f"**{int(row['id'])}**", *map(plain, lines(row))]))
