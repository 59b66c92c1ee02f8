"""The label store every page shares: one per workspace and database, so a page never writes to
another workspace's store than the one the environment names."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.access.database import database_url
from core.labels.store import LabelStore
from core.workspace import workspace_dir


@st.cache_resource
def _label_store(workspace: Path, url: str) -> LabelStore:
    return LabelStore(workspace=workspace, db_url=url)


def label_store() -> LabelStore:
    """The store of the workspace (core.workspace.workspace_dir()) and its database (FASHION_TAGGER_DB_URL,
    else the workspace's SQLite file)."""
    workspace = workspace_dir()
    return _label_store(workspace, database_url(workspace))
