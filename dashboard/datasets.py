"""Which dataset the user has open, and the cached reads of it every page shares.

The chosen folder lives in `st.session_state` (per user) and in the URL's query parameters (a reload
or a shared link opens it again, once the same folder check as a typed folder's passed:
core.access.roles.dataset_dir_for); catalogues, splits and thumbnails are cached per folder and file
stamps, so switching pages or paging the image grid is instant.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import streamlit as st
from PIL import Image

from core import workspace
from core.access.roles import AccessDenied, Actor, Permission, dataset_dir_for
from core.data import CatalogueError
from core.data.catalogue import Catalogue, catalogue_stamp, load_catalogue, resolve_dataset_dir
from core.data.split import new_run_parts
from core.images.reading import ImageRejected, thumbnail_jpeg
from core.trust.taxonomy import Taxonomy
from dashboard.identity import person
from dashboard.text import code, plain

DATASET_KEY = "dataset_dir"


@st.cache_data(show_spinner="Reading the catalogue…", max_entries=8)
def _load(root: str, stamp: tuple[int, int, int]) -> Catalogue:
    return load_catalogue(root)


def open_catalogue(path: str | Path) -> Catalogue:
    """Load (or reuse) the catalogue at `path` (one the app chose: the default, a run's; a folder
    a person typed goes through core.access.roles.dataset_dir_for first); raises CatalogueError naming
    what is wrong."""
    root = resolve_dataset_dir(path)
    return _load(str(root), catalogue_stamp(root))


@st.cache_data(show_spinner=False, max_entries=16)
def split_of(root: str, stamp: tuple[int, int, int], val_fraction: float, seed: int, test_part: bool) -> pd.Series:
    catalogue = _load(root, stamp)
    return new_run_parts(catalogue.frame, catalogue.added_rows(), val_fraction, seed, test_part)


def current_split(catalogue: Catalogue, val_fraction: float = 0.2, seed: int = 0, test_part: bool = True
                  ) -> pd.Series:
    """Each row's part in a new stratified run of the open catalogue (the default one, unless told):
    "train", "val", or TEST for the dataset's fixed test part (core.data.split.new_run_parts)."""
    return split_of(str(catalogue.root), catalogue_stamp(catalogue.root), val_fraction, seed, test_part)


@st.cache_data(show_spinner=False, max_entries=64)
def _head_values(root: str, stamp: tuple[int, int, int], head: str) -> list[str]:
    return sorted(_load(root, stamp).frame[head].dropna().unique().tolist())


def head_values(catalogue: Catalogue, head: str) -> list[str]:
    """The distinct values of `head` in the open catalogue, sorted."""
    return _head_values(str(catalogue.root), catalogue_stamp(catalogue.root), head)


@st.cache_data(show_spinner="Learning the taxonomy…", max_entries=8)
def _taxonomy(root: str, stamp: tuple[int, int, int]) -> tuple[Taxonomy, pd.DataFrame]:
    frame = _load(root, stamp).frame
    taxonomy = Taxonomy.fit(frame)
    return taxonomy, taxonomy.violations(frame)


def taxonomy_of(catalogue: Catalogue) -> tuple[Taxonomy, pd.DataFrame]:
    """The open catalogue's taxonomy (core.trust.taxonomy, learned from all its rows) and the rows that break it."""
    return _taxonomy(str(catalogue.root), catalogue_stamp(catalogue.root))


def thumbnail(path: str, max_side: int = 192) -> bytes | str:
    """Thumbnail bytes, or why the image cannot be shown (a message naming the file, shown in its
    place): one that lies outside the folders this person may use once its links are followed (a
    catalogue photo linking out of them) is not read (core.images.reading.resolve_within)."""
    return _thumbnail(path, max_side, person().roots)


@st.cache_data(show_spinner=False, max_entries=4096)
def _thumbnail(path: str, max_side: int, roots: tuple[Path, ...] | None) -> bytes | str:
    try:
        return thumbnail_jpeg(path, max_side=max_side, roots=roots)
    except ImageRejected as error:
        return str(error)


def fitted_width(picture: bytes, max_width: int, max_height: int) -> int:
    """The display width of a thumbnail that keeps it within max_width x max_height (a tall photo
    narrower), so a page's layout does not depend on the photo's shape."""
    with Image.open(io.BytesIO(picture)) as image:
        width, height = image.size
    return max(1, min(max_width, round(max_height * width / height)))


def default_dataset_dir() -> Path:
    """`FASHION_TAGGER_DATA` when set, else the demo dataset (generated on first use)."""
    return workspace.configured_dataset_dir() or workspace.demo_dir()


def ensure_demo_with_progress() -> Path:
    """Generate the demo dataset once, with a progress bar on the page."""
    if workspace.demo_ready():
        return workspace.demo_dir()
    bar = st.progress(0.0, text="Generating the demo dataset (first run only)…")

    def report(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Generating the demo dataset: {done:,} of {total:,} photos")

    path = workspace.ensure_demo(progress=report)
    bar.empty()
    return path


def current_catalogue() -> Catalogue | None:
    """The catalogue this user has open, opening the default on first use.

    Returns None (after showing the problem) only when the default itself cannot be opened.
    """
    chosen = st.session_state.get(DATASET_KEY)
    if chosen is None and st.query_params.get(DATASET_KEY):  # a reload, or a link: the URL keeps it
        try:  # anyone may follow a link, to a folder under the allowed roots only
            chosen = str(open_catalogue(dataset_dir_for(person(), st.query_params[DATASET_KEY], Permission.READ)).root)
        except (CatalogueError, AccessDenied) as error:
            st.warning(f"The dataset in the link cannot be opened: {plain(error)}. The default is open instead.")
    if chosen is None:
        default = default_dataset_dir()
        if default == workspace.demo_dir():
            ensure_demo_with_progress()
        chosen = str(default)
    try:
        catalogue = open_catalogue(chosen)
    except CatalogueError as error:
        st.error(f"Cannot open the dataset: {plain(error)}")
        return None
    use_dataset(str(catalogue.root))
    return catalogue


def dataset_picker(actor: Actor, catalogue: Catalogue | None) -> None:
    """Sidebar: the open dataset and, for a person who may open folders (an admin), a field to open
    another folder under their roots, and a way back to the demo.

    A folder that fails validation, or is refused, leaves the previous dataset open and says why.
    """
    with st.sidebar:
        st.subheader("Dataset")
        if catalogue is not None:
            st.caption(f"{code(catalogue.root)} · {catalogue.report.rows_kept:,} products")
        if not actor.may(Permission.OPEN_FOLDER):
            return
        with st.form("open_dataset", border=False):
            path = st.text_input(
                "Dataset folder",
                key="dataset.folder",
                placeholder="/data/fashion-dataset",
                help="A folder with styles.csv and images/<id>.jpg (Kaggle's full or small layout)"
                     + ("." if actor.roots is None else
                        ", under the workspace, FASHION_TAGGER_DATA or FASHION_TAGGER_DATA_ROOTS."),
            )
            opened = st.form_submit_button("Open folder")
        if opened:
            _switch_to(actor, path.strip())
        if st.button("Use the demo dataset", disabled=catalogue is not None and catalogue.root == workspace.demo_dir()):
            ensure_demo_with_progress()
            _switch_to(actor, str(workspace.demo_dir()))


def use_dataset(path: str) -> None:
    """Open `path` from the next run on, and keep it in the URL so a reload opens it again: for a
    button's on_click, where a folder the app itself wrote (an export) needs no checking first."""
    st.session_state[DATASET_KEY] = path
    st.query_params[DATASET_KEY] = path


def _switch_to(actor: Actor, path: str) -> None:
    if not path:
        st.sidebar.error("Type a folder path first.")
        return
    try:
        catalogue = open_catalogue(dataset_dir_for(actor, path))
    except (CatalogueError, AccessDenied) as error:
        st.sidebar.error(f"{plain(error)}\n\nThe previous dataset stays open.")
        return
    use_dataset(str(catalogue.root))
    st.rerun()
