"""The Review page's queue: where its items come from (uploads, a folder, catalogue rows by
confidence or by label issue), and the filters over it. The queue's state (the session's keys,
kept in the label store) is dashboard.queue_state's.

The sources sit in an expander that closes when a source is used, so that the item under review
sits high on the page; what a source has to say (refused files, rows gone) is kept in NOTES_KEY
and shown outside it (`show_notes`), once: the next action clears them."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from core.access.roles import AccessDenied, Actor, Permission
from core.data.catalogue import Catalogue, same_dataset
from core.evaluation.files import load_evaluation
from core.images.reading import ACCEPTED_EXTENSIONS, ImageRejected
from core.labels.queues import (
    FILTERS,
    filter_items,
    in_catalogue,
    label_issue_ids,
    least_confident_ids,
    load_photo_folder,
    reviewed_count,
    taxonomy_issue_ids,
)
from core.labels.store import LabelStore
from core.labels.tables import DEFAULT_SOURCES, ItemKind
from dashboard.datasets import taxonomy_of
from dashboard.evaluations import dataset_predictions, label_issues_of
from dashboard.queue_state import (
    CORRECTED_IN_KEY,
    FILTER_KEY,
    QUEUE_KEY,
    QUEUE_SOURCE_KEY,
    SOURCE_OPEN_KEY,
    TAXONOMY_SOURCE,
    start_queue,
)
from dashboard.runs import heads_of
from dashboard.text import plain
from training.crossval import list_crossvals
from training.launcher import EvaluationJob, evaluation_job, launch_evaluation
from training.processes import log_tail
from training.registry import RunRecord, RunState
from training.run_folder import RunFolder

NOTES_KEY = "review.queue_notes"  # (level, text) of what the last use of a source has to say
UPLOAD_SOURCE_KEY = "review.upload_source"  # the source new uploads are named after
SOURCES = ("Photos (upload or folder)", "Catalogue: least confident first", "Catalogue: label issues")


def _source_used() -> None:
    """A source's control was used: close the sources (before they are drawn again) and forget the
    notes of the last use."""
    st.session_state[SOURCE_OPEN_KEY] = False
    st.session_state[NOTES_KEY] = []


def _note(level: str, text: str) -> None:
    st.session_state.setdefault(NOTES_KEY, []).append((level, text))


def show_notes() -> None:
    """What the last use of a source had to say, as errors and warnings, once: no stale message
    stays on screen after later actions."""
    for level, text in st.session_state.pop(NOTES_KEY, []):
        (st.error if level == "error" else st.warning)(plain(text))


def queue_sources(store: LabelStore, catalogue: Catalogue, record: RunRecord | None, actor: Actor) -> None:
    """The sources, in an expander open while there is no queue and titled with what fills the queue
    (no line of its own: the item under review stays in the window), then its notes."""
    st.session_state.setdefault(SOURCE_OPEN_KEY, not st.session_state.get(QUEUE_KEY))
    source = st.session_state.get(QUEUE_SOURCE_KEY) if st.session_state.get(QUEUE_KEY) else None
    with st.expander(f"Queue: {plain(source)}" if source else "Queue: photos or catalogue rows to review",
                     key=SOURCE_OPEN_KEY, on_change="rerun", icon=":material/list:"):
        queue_source(store, catalogue, record, actor)
    show_notes()


def queue_source(store: LabelStore, catalogue: Catalogue, record: RunRecord | None, actor: Actor) -> None:
    """The choice of source and its controls; filling the queue replaces it."""
    source = st.segmented_control("Source", SOURCES, default=SOURCES[0], key="review.source") or SOURCES[0]
    if source == SOURCES[0]:
        photo_source(store, catalogue, actor)
    elif source == SOURCES[1]:
        least_confident_source(store, catalogue, record, actor)
    else:
        label_issues_source(store, catalogue, record, actor)


def photo_source(store: LabelStore, catalogue: Catalogue, actor: Actor) -> None:
    st.text_input("Source of the uploads", DEFAULT_SOURCES[ItemKind.EXTERNAL], key=UPLOAD_SOURCE_KEY, max_chars=100,
                  help="Where these photos come from (an upload batch, a supplier): the promise of accepted tags is "
                       "kept per source (Evaluate → Trust). A photo keeps the source it first came in; a folder's "
                       "photos take the folder's name.")
    uploads = st.file_uploader("Photos", type=list(ACCEPTED_EXTENSIONS), accept_multiple_files=True,
                               key="review.uploads", help="JPEG, PNG, WebP or AVIF; several at once.",
                               on_change=_source_used)
    added = st.session_state.setdefault("review.uploaded", {})  # upload file_id -> item, or the reason it was refused
    fresh = [upload for upload in uploads or [] if upload.file_id not in added]
    for upload in fresh:
        try:
            added[upload.file_id] = store.add_image(catalogue.root, upload.getvalue(), upload.name, actor).item
        except ImageRejected as error:
            added[upload.file_id] = str(error)
    if fresh:
        current = [added[upload.file_id] for upload in uploads or []]
        name_source(store, [entry for entry in current if isinstance(entry, int)], actor)
        items = store.items([entry for entry in current if isinstance(entry, int)])
        if items:  # nothing readable: the queue under review stays
            start_queue(catalogue, items, f"{len(items):,} uploaded photos")
        for entry in current:
            if isinstance(entry, str):
                _note("error", entry)
    added_before(store, catalogue)
    if not actor.may(Permission.LOAD_FOLDER):  # a folder on the server: admins only
        return
    with st.form("review.folder_form", border=False):
        left, right = st.columns([4, 1], vertical_alignment="bottom")
        folder = left.text_input("…or a folder of photos on this machine", key="review.folder",
                                 placeholder="/data/new-arrivals")
        load = right.form_submit_button("Load folder", on_click=_source_used)
    if load:
        load_folder(store, catalogue, folder.strip(), actor)


def name_source(store: LabelStore, items: list[int], actor: Actor) -> None:
    """The uploads' source, as typed (a photo keeps the source it first came in)."""
    try:
        store.set_source(items, st.session_state.get(UPLOAD_SOURCE_KEY) or DEFAULT_SOURCES[ItemKind.EXTERNAL], actor)
    except ValueError as error:  # a name that breaks a rule: the photos keep the default source
        _note("error", f"Source of the uploads: {error}; they were added as {DEFAULT_SOURCES[ItemKind.EXTERNAL]}.")


def added_before(store: LabelStore, catalogue: Catalogue) -> None:
    """Every new photo added to this dataset before (uploads and folders, by anyone), queued again."""
    photos = store.dataset_items(catalogue.root, ItemKind.EXTERNAL)
    if photos and st.button(f"Queue the {len(photos):,} new photos added to this dataset so far",
                            key="review.queue_added", icon=":material/history:", on_click=_source_used,
                            help="Uploads and folders of every session, oldest first; the filter shows the "
                                 "unreviewed ones."):
        start_queue(catalogue, photos, f"the {len(photos):,} new photos added to this dataset")


def load_folder(store: LabelStore, catalogue: Catalogue, folder: str, actor: Actor) -> None:
    if not folder:
        _note("error", "Type a folder path first.")
        return
    bar = st.progress(0.0, text="Adding photos…")
    try:
        items, refused = load_photo_folder(
            store, catalogue.root, folder, actor,
            progress=lambda done, total: bar.progress(done / total, text=f"Adding photos: {done:,} of {total:,}"))
    except ValueError as error:  # not a folder, or no photo in it
        bar.empty()
        _note("warning", str(error))
        return
    except AccessDenied as error:  # outside the allowed folders: the same words whether it exists or not
        bar.empty()
        _note("error", str(error))
        return
    bar.empty()
    for reason in refused:
        _note("error", reason)
    if not items:  # nothing readable: the queue under review stays
        _note("warning", f"No photo of {folder} could be read: the queue is as it was.")
        return
    st.toast(f"{len(items):,} photos queued" + (f", {len(refused):,} refused" if refused else ""))
    start_queue(catalogue, items, f"the photos of the folder {folder}")


def least_confident_source(store: LabelStore, catalogue: Catalogue, record: RunRecord | None, actor: Actor) -> None:
    """Catalogue rows by the model's confidence, from any run's predictions on this catalogue (the
    chosen run's first); the chosen run can predict every row."""
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    limit = right.number_input("Queue length", 1, 5000, 100, key="review.limit")
    found = dataset_predictions(str(catalogue.root), record)
    if record is not None:
        job = evaluation_job(record, catalogue.root)
        if (record, job.name) not in found.values():
            predict_every_row(record, catalogue, job, actor)
    if not found:
        if record is None:
            st.info("Ranking rows by confidence needs a model: no run has predicted this catalogue yet.")
        return
    what = left.selectbox("Predictions from", list(found), key="review.evaluation")
    if st.button("Load the least confident rows", key="review.load_confident", on_click=_source_used):
        run, name = found[what]
        predictions = load_evaluation(RunFolder(run.folder).evaluation(name)).predictions
        queue_catalogue(store, catalogue, least_confident_ids(predictions, run.config["heads"], int(limit)), actor,
                        f"the least confident rows of {what}")


def label_issues_source(store: LabelStore, catalogue: Catalogue, record: RunRecord | None, actor: Actor) -> None:
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    limit = right.number_input("Queue length", 1, 5000, 100, key="review.limit")
    sources = {f"run {record.id} (its validation split)": record.folder} if record is not None else {}
    sources |= {f"cross-validation {c.id} ({c.rows:,} rows)": c.folder for c in list_crossvals()
                if c.status == RunState.FINISHED and same_dataset(c.config["data"], catalogue.root)}
    sources[TAXONOMY_SOURCE] = None
    name = left.selectbox("Ranking from", list(sources), key="review.issues_source",
                          help="python -m training crossval --data DIR --folds K ranks every catalogue row; the "
                               "taxonomy is learned from this catalogue (Explore → Taxonomy).")
    heads = st.multiselect("Issues of", heads_of(record), key="review.issue_heads",
                           placeholder="every head")
    if st.button("Load the label issues", key="review.load_issues", on_click=_source_used):
        if name == TAXONOMY_SOURCE:
            _, broken = taxonomy_of(catalogue)
            ids = taxonomy_issue_ids(broken, int(limit), heads=heads)
        else:
            try:
                ids = label_issue_ids(label_issues_of(sources[name]), int(limit), heads=heads)
            except FileNotFoundError as error:
                _note("error", str(error))
                return
        queue_catalogue(store, catalogue, ids, actor,
                        f"label issues: {name}" + (f", of {', '.join(heads)}" if heads else ""))


def predict_every_row(record: RunRecord, catalogue: Catalogue, job: EvaluationJob, actor: Actor) -> None:
    """Offer, start and follow the run's evaluation on every row of the open catalogue (a background process)."""
    if job.running:
        follow_evaluation(record, str(catalogue.root))
        return
    if job.started is not None and not job.finished_since_launch(record.folder):
        st.error("Predicting every row failed:")
        st.code(log_tail(job.log), language=None)
    if not actor.may(Permission.EVALUATE):
        st.caption("No predictions on every row yet: an admin starts them.")
        return
    if st.button(f"Predict all {len(catalogue.frame):,} rows of this catalogue", key="review.predict_all",
                 icon=":material/play_arrow:",
                 help=f"python -m training evaluate {record.id} --data {catalogue.root}, in the background"):
        launch_evaluation(record, catalogue.root, actor)
        st.rerun()


@st.fragment(run_every=2)
def follow_evaluation(record: RunRecord, data: str) -> None:
    job = evaluation_job(record, data)
    if job.running:
        st.info(f"Predicting every row in the background for {time.time() - job.started:.0f} s; the queue "
                "can be loaded from it when it is done. You may leave this page meanwhile.",
                icon=":material/hourglass_top:")
    else:
        st.rerun()  # the whole page: the new predictions are listed


def queue_catalogue(store: LabelStore, catalogue: Catalogue, ids: list[int], actor: Actor, source: str) -> None:
    present = in_catalogue(catalogue, ids)
    if len(present) < len(ids):
        _note("warning", f"{len(ids) - len(present):,} ranked ids are no longer in this catalogue and are left out.")
    start_queue(catalogue, store.add_catalogue_items(catalogue, present, actor), source)


def queue_view(store: LabelStore, heads: list[str]) -> tuple[list[int], pd.DataFrame]:
    """Filters over the queue; returns (the items shown, in order; the queue's summary)."""
    queue = st.session_state.get(QUEUE_KEY) or []
    summary = store.summary(queue).reindex(queue)
    done = reviewed_count(summary)
    left, middle, right = st.columns([1, 2, 2], vertical_alignment="bottom")
    which = left.selectbox("Show", list(FILTERS), key=FILTER_KEY)
    corrected_in = middle.multiselect("Corrected in", heads, key=CORRECTED_IN_KEY, placeholder="any head")
    right.progress(done / len(queue) if queue else 0.0, text=f"**{done:,} of {len(queue):,} reviewed**")
    return filter_items(summary, which, corrected_in), summary
