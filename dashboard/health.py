"""What the Data health page reads, cached: a catalogue's health under a model (read once per
computation), its near-duplicate groups per threshold, the map's points, the split whose leakage
is counted, and the photos most like an uploaded one.

Every cache is keyed by the health folder's version (health.json's mtime), or the embeddings
file's, so a new computation is picked up and a rerun with the same inputs costs nothing.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import workspace
from core.data import HEADS
from core.data.catalogue import Catalogue, catalogue_stamp
from core.data.profile import labels_text
from core.evaluation.views import outcomes
from core.health.embedder import EmbeddingModel, embed_images
from core.health.embeddings import Embeddings, cached_embeddings, embeddings_file
from core.health.files import Health, HealthFolder, load_health, map_frame
from core.health.similarity import SimilarityIndex
from core.images.reading import read_image_checked
from dashboard import charts
from dashboard.datasets import open_catalogue
from dashboard.evaluations import evaluation_of
from training import health as run_health
from training.registry import RunRecord, RunRegistry, RunState
from training.run_folder import VALIDATION, RunFolder

SPLIT, OUTCOME = "split", "right or wrong"  # the map's colourings besides the heads
NOT_USED, NOT_EVALUATED = "not used", "not evaluated"  # photos outside a run's split, or its evaluation
SIMILAR_SHOWN = 24  # photos shown as "more like this"


def model_runs(limit: int = 200) -> dict[str, RunRecord]:
    """Finished runs with a best checkpoint, newest first, by id: the models a health can use."""
    return {record.id: record for record in RunRegistry().list(limit=limit)
            if record.status == RunState.FINISHED and RunFolder(record.folder).has_checkpoint("best")}


@st.cache_resource(show_spinner="Reading the data health…", max_entries=4)
def _health(path: str, version: int) -> Health:
    return load_health(path)


def health_of(folder: HealthFolder) -> Health | None:
    """The folder's health, read once per computation (shared, never mutated); None before the first."""
    version = folder.version()
    return _health(str(folder.path), version) if version else None


@st.cache_data(show_spinner="Grouping near-duplicates…", max_entries=32)
def _groups(path: str, version: int, threshold: float) -> dict[tuple[int, ...], str]:
    return _health(path, version).near_duplicates_found_by(threshold)


def near_duplicates_found_by(health: Health, threshold: float) -> dict[tuple[int, ...], str]:
    """Health.near_duplicates_found_by(threshold), once per computation and threshold."""
    return _groups(str(health.folder.path), health.folder.version(), threshold)


def near_duplicates(health: Health, threshold: float) -> list[list[int]]:
    """Health.near_duplicates(threshold), once per computation and threshold."""
    return [list(group) for group in near_duplicates_found_by(health, threshold)]


@st.cache_data(show_spinner="Reading the split…", max_entries=8)
def _split(root: str, stamp: tuple[int, int, int], run_id: str | None, model_stamp: str) -> tuple[pd.Series, str]:
    catalogue = open_catalogue(root)
    return run_health.health_split(catalogue, None if run_id is None else RunRegistry().get(run_id))


def split_of(catalogue: Catalogue, record: RunRecord | None) -> tuple[pd.Series, str]:
    """training.health.health_split, once per catalogue and checkpoint version."""
    return _split(str(catalogue.root), catalogue_stamp(catalogue.root), None if record is None else record.id,
                  run_health.model_identity(record).stamp)


def colourings(record: RunRecord | None) -> list[str]:
    """What the map can be coloured by: the split, each head, and with an evaluated run right or wrong."""
    evaluated = record is not None and VALIDATION in RunFolder(record.folder).evaluation_names()
    return [SPLIT, *HEADS, *([OUTCOME] if evaluated else [])]


@st.cache_data(show_spinner=False, max_entries=32)
def _map_figure(path: str, version: int, root: str, stamp: tuple[int, int, int], colour_by: str,
                values: pd.Series, order: tuple[str, ...] | None, title: str) -> dict:
    health, frame = _health(path, version), open_catalogue(root).frame
    labels = pd.Series(frame.apply(labels_text, axis=1).to_numpy(), index=frame["id"].to_numpy())
    points = map_frame(health, values, labels, order=order)
    colours = charts.SPLIT_COLOURS if colour_by == SPLIT else charts.OUTCOME_COLOURS if colour_by == OUTCOME else None
    return charts.embedding_map(points, title, colours).to_dict()


def map_figure(health: Health, catalogue: Catalogue, record: RunRecord | None, colour_by: str,
               outcome_head: str = "articleType") -> dict:
    """The map coloured by `colour_by` (one of `colourings`; OUTCOME: the run's validation outcome
    on `outcome_head`), as a plotly figure dict, once per computation and colouring."""
    frame = catalogue.frame
    if colour_by == SPLIT:
        split, name = split_of(catalogue, record)
        values = split.reindex(health.ids).fillna(NOT_USED)
        order, title = ("train", "val", NOT_USED), f"Coloured by {name}"
    elif colour_by == OUTCOME:
        predictions = evaluation_of(record, VALIDATION).predictions
        values = outcomes(predictions, outcome_head).reindex(health.ids).fillna(NOT_EVALUATED)
        order = ("right", "wrong", NOT_EVALUATED)
        title = f"Run {record.id} on its validation photos: {outcome_head} right or wrong"
    else:
        values = pd.Series(frame[colour_by].to_numpy(), index=frame["id"].to_numpy())
        order, title = None, f"Coloured by {colour_by}"
    return _map_figure(str(health.folder.path), health.folder.version(), str(catalogue.root),
                       catalogue_stamp(catalogue.root), colour_by, values, order, title)


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def _model(run_id: str | None, stamp: str) -> EmbeddingModel:
    return run_health.embedding_model(None if run_id is None else RunRegistry().get(run_id))


@st.cache_resource(show_spinner="Indexing the embeddings…", max_entries=2)
def _index(root: str, run_id: str | None, stamp: str, file_version: int) -> tuple[Embeddings, SimilarityIndex]:
    identity = run_health.model_identity(None if run_id is None else RunRegistry().get(run_id))
    embeddings = cached_embeddings(workspace.workspace_dir(), root, identity)
    return embeddings, SimilarityIndex(embeddings.features)


@st.cache_data(show_spinner="Looking for similar photos…", max_entries=64)
def _similar(root: str, run_id: str | None, stamp: str, file_version: int, data: bytes, name: str,
             k: int) -> pd.DataFrame:
    image = read_image_checked(data, name)
    query = embed_images(_model(run_id, stamp), [image])
    embeddings, index = _index(root, run_id, stamp, file_version)
    similarities, rows = index.search(query, min(k, len(embeddings)))
    found = rows[0] >= 0
    return pd.DataFrame({"id": embeddings.ids[rows[0][found]], "similarity": similarities[0][found].astype(float)})


def similar_to_photo(catalogue: Catalogue, record: RunRecord | None, data: bytes, name: str,
                     k: int = SIMILAR_SHOWN) -> pd.DataFrame:
    """The k catalogue photos most like an uploaded one (its bytes), under the health's model:
    id, similarity, most similar first. ImageRejected (a ValueError naming the file) for a bad file."""
    identity = run_health.model_identity(record)
    cache = embeddings_file(workspace.workspace_dir(), catalogue.root, identity.key)
    return _similar(str(catalogue.root), None if record is None else record.id, identity.stamp,
                    cache.stat().st_mtime_ns, data, name, k)
