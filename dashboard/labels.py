"""The label store every page shares: one per database, so a page never writes to another
workspace's store than the one the environment names."""

from __future__ import annotations

import streamlit as st

from core.database import database_url
from core.labelstore import LabelStore


@st.cache_resource
def _label_store(url: str) -> LabelStore:
    return LabelStore(url)


def label_store() -> LabelStore:
    """The store of the workspace's database (FASHION_TAGGER_DB_URL, else its SQLite file)."""
    return _label_store(database_url())
