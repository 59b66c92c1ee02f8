"""Review: the model proposes labels for new photos or doubtful catalogue rows, a person decides,
and every decision lands in the label store, ready to export or to train on."""

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from core import workspace
from core.corrections import export_dataset
from core.data import CatalogueError
from core.data.catalogue import Catalogue
from core.evaluation import VALIDATION, evaluated_dataset, evaluation_names, load_evaluation, read_report
from core.images import ACCEPTED_EXTENSIONS, ImageRejected
from core.label_issues import read_label_issues
from core.labelstore import EXTERNAL, NOT_PRODUCT, SKIPPED, Item, LabelStore, UndoConflict
from core.prediction import Predictor, expand_paths
from core.review import (
    FILTERS, Proposal, accept_confident, bulk_preview, choices, filter_items, label_issue_ids, least_confident_ids,
    next_item, proposed_label, reviewed_count, top_proposals, undo_bulk,
)
from dashboard.datasets import current_catalogue, head_values, thumbnail, use_dataset
from dashboard.labels import label_store
from dashboard.runs import REVIEW_RUN_KEY
from dashboard.shortcuts import keyboard_shortcuts
from training.checkpoints import checkpoint_path, has_checkpoint, load_predictor
from training.crossval import list_crossvals
from training.launcher import EvaluationJob, evaluation_job, launch_evaluation, log_tail
from training.registry import RunRecord, RunRegistry

QUEUE_KEY, CURRENT_KEY, REVIEWER_KEY = "review.queue", "review.current", "review.reviewer"
BULK_MESSAGE_KEY = "review.bulk_message"  # what the last bulk acceptance did, shown once after its rerun
BULK_UNDO_KEY = "review.bulk_undo_actions"  # the store actions of this session's last bulk acceptance
BULK_CHECKED_KEY = "review.bulk_checked"  # (run, new photos) the user asked the model to check for bulk acceptance
BULK_CHUNK = 64  # new photos per cached batch of proposals: the progress bar moves between them
BULK_THRESHOLD = 0.9  # default: accept a new photo when every head's proposal is at least this sure
SOURCES = ("Photos (upload or folder)", "Catalogue: least confident first", "Catalogue: label issues")
# Keyboard: modifier combinations, so typing in a text field never triggers an action.
SHORTCUTS = {"review_save": "ctrl+enter", "review_previous": "ctrl+arrowleft", "review_next": "ctrl+arrowright",
             "review_skip": "ctrl+arrowdown", "review_not_product": "ctrl+x", "review_undo": "ctrl+z"}
TOP_K = 3
LOW_CONFIDENCE = 0.5  # a proposal below this probability is marked "unsure": look twice


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def _predictor(folder: str, stamp: int) -> Predictor:
    return load_predictor(folder, "best")


def _checkpoint_stamp(record: RunRecord) -> int:
    """Changes when the run's best checkpoint does, so cached models and proposals are renewed."""
    return checkpoint_path(record.folder, "best").stat().st_mtime_ns


def predictor_of(record: RunRecord) -> Predictor:
    """The run's best checkpoint, loaded once per version of the file."""
    return _predictor(record.folder, _checkpoint_stamp(record))


@st.cache_data(show_spinner=False, max_entries=4096)
def _guesses(folder: str, stamp: int, path: str, image_stamp: int) -> dict[str, list[tuple[str, float]]] | str:
    [result] = _predictor(folder, stamp).predict_files([path], top_k=TOP_K)
    if result.error is not None:
        return result.error
    return {head: [(guess.label, guess.p) for guess in guesses] for head, guesses in result.predictions.items()}


def guesses_for(record: RunRecord, item: Item) -> dict[str, list[tuple[str, float]]] | str:
    """Per head the model's top labels with probabilities, or the reason the photo cannot be read."""
    try:
        image_stamp = item.path.stat().st_mtime_ns
    except OSError as error:
        return f"{item.path}: {error.strerror}"
    return _guesses(record.folder, _checkpoint_stamp(record), str(item.path), image_stamp)


def reviewer_field() -> str:
    with st.sidebar:
        st.subheader("Reviewer")
        return st.text_input("Your name", key=REVIEWER_KEY, placeholder="recorded with every decision").strip()


def choose_run() -> RunRecord | None:
    runs = {record.id: record for record in RunRegistry().list(limit=200)
            if record.status == "finished" and has_checkpoint(record.folder)}
    if not runs:
        st.info("No finished run yet: the model's proposals come from a trained run.")
        st.page_link("../pages/train.py", label="Train a model", icon=":material/model_training:")
        return None
    run_id = st.selectbox("Model (a finished run's best checkpoint)", list(runs), key=REVIEW_RUN_KEY,
                          format_func=lambda i: f"{i} · {runs[i].config.get('backbone')} · "
                                                f"{runs[i].best_metric_name} {runs[i].best_metric or 0:.3f}")
    return runs[run_id]


def start_queue(items: list[Item]) -> None:
    """Review `items` from the first; the same photo twice is one item, queued once."""
    st.session_state[QUEUE_KEY] = list(dict.fromkeys(item.item for item in items))
    st.session_state[CURRENT_KEY] = items[0].item if items else None


def photo_source(store: LabelStore, catalogue: Catalogue, reviewer: str) -> None:
    uploads = st.file_uploader("Photos", type=list(ACCEPTED_EXTENSIONS), accept_multiple_files=True,
                               key="review.uploads", help="JPEG, PNG, WebP or AVIF; several at once.")
    added = st.session_state.setdefault("review.uploaded", {})  # upload file_id -> item, or the reason it was refused
    fresh = [upload for upload in uploads or [] if upload.file_id not in added]
    for upload in fresh:
        try:
            added[upload.file_id] = store.add_image(catalogue.root, upload.getvalue(), upload.name, reviewer or "unknown").item
        except ImageRejected as error:
            added[upload.file_id] = str(error)
    if fresh:
        current = [added[upload.file_id] for upload in uploads or []]
        start_queue(store.items([entry for entry in current if isinstance(entry, int)]))
    for upload in uploads or []:
        if isinstance(added.get(upload.file_id), str):
            st.error(added[upload.file_id])
    with st.form("review.folder_form", border=False):
        left, right = st.columns([4, 1], vertical_alignment="bottom")
        folder = left.text_input("…or a folder of photos on this machine", key="review.folder",
                                 placeholder="/data/new-arrivals")
        load = right.form_submit_button("Load folder")
    if load:
        load_folder(store, catalogue, folder.strip(), reviewer)


def load_folder(store: LabelStore, catalogue: Catalogue, folder: str, reviewer: str) -> None:
    if not folder or not Path(folder).is_dir():
        st.error(f"Not a folder: {folder or '(empty)'}")
        return
    paths = expand_paths([folder])
    if not paths:
        st.warning(f"{folder} holds no {', '.join(ACCEPTED_EXTENSIONS)} files.")
        return
    items, refused = [], []
    bar = st.progress(0.0, text=f"Adding {len(paths):,} photos…")
    for done, path in enumerate(paths, 1):
        try:
            items.append(store.add_image_file(catalogue.root, path, reviewer or "unknown"))
        except ImageRejected as error:
            refused.append(str(error))
        bar.progress(done / len(paths), text=f"Adding photos: {done:,} of {len(paths):,}")
    bar.empty()
    for reason in refused:
        st.error(reason)
    st.toast(f"{len(items):,} photos queued" + (f", {len(refused):,} refused" if refused else ""))
    start_queue(items)


def catalogue_source(store: LabelStore, catalogue: Catalogue, record: RunRecord, reviewer: str, source: str) -> None:
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    limit = right.number_input("Queue length", 1, 5000, 100, key="review.limit")
    if source == SOURCES[1]:
        evaluations = [name for name in evaluation_names(record.folder)
                       if evaluated_dataset(read_report(record.folder, name), record.config["data"]) == str(catalogue.root)]
        job = evaluation_job(record, catalogue.root)
        if job.name not in evaluations:
            predict_every_row(record, catalogue, job)
        if not evaluations:
            return
        name = left.selectbox("Predictions from", evaluations, key="review.evaluation",
                              format_func=lambda n: "the run's validation split" if n == VALIDATION else f"every row ({n})")
        if st.button("Load the least confident rows", key="review.load_confident"):
            predictions = load_evaluation(record.folder, name).predictions
            ids = least_confident_ids(predictions, record.config["heads"], int(limit))
            queue_catalogue(store, catalogue, ids, reviewer)
    else:
        sources = {f"run {record.id} (its validation split)": record.folder}
        sources |= {f"cross-validation {c.id} ({c.rows:,} rows)": c.folder for c in list_crossvals()
                    if c.status == "finished" and c.config.get("data") == str(catalogue.root)}
        name = left.selectbox("Ranking from", list(sources), key="review.issues_source",
                              help="python -m training crossval --data DIR --folds K ranks every catalogue row.")
        heads = st.multiselect("Issues of", list(record.config["heads"]), key="review.issue_heads",
                               placeholder="every head")
        if st.button("Load the label issues", key="review.load_issues"):
            try:
                issues = read_label_issues(sources[name])
            except FileNotFoundError as error:
                st.error(str(error))
                return
            queue_catalogue(store, catalogue, label_issue_ids(issues, int(limit), heads=heads), reviewer)


def predict_every_row(record: RunRecord, catalogue: Catalogue, job: EvaluationJob) -> None:
    """Offer, start and follow the run's evaluation on every row of the open catalogue (a background process)."""
    if job.running:
        follow_evaluation(record, str(catalogue.root))
        return
    if job.started is not None and not job.finished_since_launch(record.folder):
        st.error(f"Predicting every row failed:\n\n```\n{log_tail(job.log)}\n```")
    if st.button(f"Predict all {len(catalogue.frame):,} rows of this catalogue", key="review.predict_all",
                 icon=":material/play_arrow:",
                 help=f"python -m training evaluate {record.id} --data {catalogue.root}, in the background"):
        launch_evaluation(record, catalogue.root)
        st.rerun()


@st.fragment(run_every=2)
def follow_evaluation(record: RunRecord, data: str) -> None:
    job = evaluation_job(record, data)
    if job.running:
        st.info(f"Predicting every row in the background for {time.time() - job.started:.0f} s; the queue "
                "can be loaded from it when it is done. You may leave this page meanwhile.", icon=":material/hourglass_top:")
    else:
        st.rerun()  # the whole page: the new predictions are listed


def queue_catalogue(store: LabelStore, catalogue: Catalogue, ids: list[int], reviewer: str) -> None:
    known = set(catalogue.frame["id"].tolist())
    present = [product_id for product_id in ids if product_id in known]
    if len(present) < len(ids):
        st.warning(f"{len(ids) - len(present):,} ranked ids are no longer in this catalogue and are left out.")
    start_queue(store.add_catalogue_items(catalogue, present, reviewer or "unknown"))


def queue_view(store: LabelStore, heads: list[str]) -> tuple[list[int], pd.DataFrame]:
    """Filters over the queue; returns (the items shown, in order; the queue's summary)."""
    queue = st.session_state.get(QUEUE_KEY) or []
    summary = store.summary(queue).reindex(queue)
    done = reviewed_count(summary)
    left, middle, right = st.columns([1, 2, 2], vertical_alignment="bottom")
    which = left.selectbox("Show", list(FILTERS), key="review.filter")
    corrected_in = middle.multiselect("Corrected in", heads, key="review.corrected_in", placeholder="any head")
    right.progress(done / len(queue) if queue else 0.0, text=f"**{done:,} of {len(queue):,} reviewed**")
    return filter_items(summary, which, corrected_in), summary


@st.cache_data(show_spinner=False, max_entries=1024)
def _proposals(folder: str, stamp: int, photos: tuple[tuple[int, str, int], ...]) -> dict[int, Proposal | str]:
    """The run's top proposals for (item, path, file stamp) photos, once per checkpoint and photos."""
    return top_proposals(_predictor(folder, stamp), {item: path for item, path, _ in photos})


def proposals_for(record: RunRecord, photos: list[Item]) -> dict[int, Proposal | str]:
    """The run's top proposals for `photos`, computed (and cached) BULK_CHUNK photos at a time,
    with a progress bar."""
    stamps = [(item.item, str(item.path), _file_stamp(item.path)) for item in photos]
    bar, proposals = st.empty(), {}
    for start in range(0, len(stamps), BULK_CHUNK):
        bar.progress(start / len(stamps), text=f"Checking the new photos: {start:,} of {len(stamps):,}")
        proposals.update(_proposals(record.folder, _checkpoint_stamp(record), tuple(stamps[start:start + BULK_CHUNK])))
    bar.empty()
    return proposals


def _file_stamp(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:  # gone: the proposal says so
        return -1


def bulk_accept(store: LabelStore, record: RunRecord, reviewer: str) -> None:
    """Accept in one go the proposals for the queue's unreviewed new photos that the model is sure
    of in every head; the rest stay for a person."""
    message = st.session_state.pop(BULK_MESSAGE_KEY, None)
    if message:
        st.success(message, icon=":material/done_all:")
    undo_bulk_button(store, reviewer)
    photos = [item for item in store.items(st.session_state.get(QUEUE_KEY) or []) if item.kind == EXTERNAL]
    if not photos:
        return
    # Keyed, with a rerun on toggle: it stays open across reruns, and costs nothing while closed.
    section = st.expander("Accept the sure ones in bulk (new photos)", key="review.bulk", on_change="rerun")
    if not section.open:
        return
    with section:
        checked = (record.id, tuple(item.item for item in photos))
        if st.session_state.get(BULK_CHECKED_KEY) != checked:
            st.caption(f"First the model proposes labels for the queue's {len(photos):,} new photos "
                       "(about 10 ms each on two CPU cores).")
            st.button("Check the new photos", key="review.bulk_check", icon=":material/search_check:",
                      on_click=lambda: st.session_state.update({BULK_CHECKED_KEY: checked}))
            return
        proposals = proposals_for(record, photos)
        threshold = st.slider(
            "Every head's proposal at least", 0.0, 1.0, BULK_THRESHOLD, 0.01, key="review.bulk_threshold",
            help="A photo is accepted as proposed only when every head's top label reaches this probability "
                 "(and is not the rare-class bucket); the others stay unreviewed.",
        )
        sure, readable = bulk_preview(store, photos, proposals, threshold)
        st.markdown(f"**{sure:,} of {readable:,}** unreviewed new photos reach {threshold:.2f} in every head.")
        st.caption("Each accepted photo is a decision of yours, logged as accepted proposals with their p, and "
                   "can be undone or reviewed again like any other. Catalogue rows are never accepted in bulk.")
        if not st.button(f"Accept {sure:,} photos", key="review.bulk_accept", disabled=not reviewer or not sure,
                         icon=":material/done_all:"):
            return
        result = accept_confident(store, photos, proposals, threshold, reviewer, run_id=record.id)
    left = f"{len(result.unsure):,} left for you"
    if result.unreadable:
        left += f", {len(result.unreadable):,} unreadable"
    st.session_state[BULK_MESSAGE_KEY] = (
        f"Accepted {len(result.accepted):,} new photos sure to at least {threshold:.2f} in every head; {left}.")
    st.session_state[BULK_UNDO_KEY] = result.actions
    st.rerun()


def undo_bulk_button(store: LabelStore, reviewer: str) -> None:
    """Undo this session's last bulk acceptance, as far as it is still what the reviewer did last."""
    actions = st.session_state.get(BULK_UNDO_KEY)
    if not actions or not st.button(f"Undo the bulk acceptance ({len(actions):,} photos)", key="review.bulk_undo",
                                    disabled=not reviewer, icon=":material/undo:"):
        return
    undone = {action.action for action in undo_bulk(store, reviewer, actions)}
    left = [action for action in actions if action not in undone]
    st.session_state[BULK_UNDO_KEY] = left
    if left:
        st.warning(f"Undid {len(undone):,} of {len(actions):,} photos: you decided something else since, "
                   "and that comes first. Undo it (Ctrl+Z), then this again.")
    else:
        st.session_state[BULK_MESSAGE_KEY] = f"Undid the bulk acceptance: {len(undone):,} photos are unreviewed again."
        st.rerun()


def item_view(store: LabelStore, record: RunRecord, catalogue: Catalogue, item: Item, shown: list[int],
              reviewer: str) -> None:
    position = shown.index(item.item) + 1
    current = store.current([item.item])[item.item]
    status = current["status"]
    st.markdown(f"**{position:,} of {len(shown):,}** · `{item.name}` · "
                + (f"{status.replace('_', ' ')}" if status else "unreviewed"))
    guesses = guesses_for(record, item)
    picture, labels = st.columns([2, 3])
    image = thumbnail(str(item.path), 512)
    if image is not None:
        picture.image(image, width="stretch")
    if isinstance(guesses, str):
        picture.error(guesses)
        guesses = {}
    heads = list(record.config["heads"])
    schema = predictor_of(record).schema
    chosen, predicted, new_values = {}, {}, st.session_state.setdefault("review.new_values", {})
    reviewer_values = store.values(catalogue.root)
    with labels:
        for head in heads:
            vocabulary = [*head_values(catalogue, head), *reviewer_values[head]]
            offered = choices(schema.classes[head], vocabulary, current[head])
            extra = new_values.get((item.item, head))
            if extra is not None:
                offered.append(extra)
            start = extra or proposed_label(guesses.get(head, []), current[head], status == "reviewed", offered)
            chosen[head] = st.selectbox(head, offered, index=offered.index(start) if start in offered else None,
                                        key=f"review.{item.item}.{head}", placeholder="no label")
            head_guesses = guesses.get(head, [])
            if head_guesses:
                predicted[head] = head_guesses[0]
            notes = " · ".join(f"{label} {p:.2f}" for label, p in head_guesses)
            if item.baseline.get(head) is not None:
                notes += f" · catalogue: {item.baseline[head]}"
            unsure = bool(head_guesses) and head_guesses[0][1] < LOW_CONFIDENCE
            st.caption(f":orange[model: {notes} · unsure]" if unsure else f"model: {notes}" if notes else "no prediction")
    actions(store, record, item, shown, reviewer, chosen, predicted, new_values)
    new_value_form(item, heads, new_values)
    with st.expander("History of this item"):
        history = store.history(item.item)
        if history.empty:
            st.caption("No decisions yet.")
        else:
            st.dataframe(history, hide_index=True)


def actions(store: LabelStore, record: RunRecord, item: Item, shown: list[int], reviewer: str,
            chosen: dict, predicted: dict, new_values: dict) -> None:
    columns = st.columns(6)
    disabled = not reviewer
    save = columns[0].button("Save & next", key="review_save", type="primary", disabled=disabled,
                             help=f"Accept the labels shown (with your corrections) · {SHORTCUTS['review_save']}")
    previous = columns[1].button("Previous", key="review_previous", help=SHORTCUTS["review_previous"])
    following = columns[2].button("Next", key="review_next", help=SHORTCUTS["review_next"])
    skip = columns[3].button("Skip", key="review_skip", disabled=disabled, help=SHORTCUTS["review_skip"])
    not_product = columns[4].button("Not a product", key="review_not_product", disabled=disabled,
                                    help=f"Drop it from the catalogue and from training · {SHORTCUTS['review_not_product']}")
    undo = columns[5].button("Undo", key="review_undo", disabled=disabled,
                             help=f"Undo your last decision · {SHORTCUTS['review_undo']}")
    keyboard_shortcuts(**SHORTCUTS)
    st.caption("Enter your name in the sidebar to record decisions." if disabled else
               "Keys: Ctrl+Enter save & next · Ctrl+← / Ctrl+→ previous / next · Ctrl+↓ skip · "
               "Ctrl+X not a product · Ctrl+Z undo")
    step = 1 if following else -1 if previous else 0
    if save:
        missing = [head for head, value in chosen.items() if value is None]
        if missing:
            st.error(f"Choose a label for {', '.join(missing)} first.")
            return
        store.review(item.item, chosen, reviewer, run_id=record.id, predicted=predicted,
                     new_values=[head for head in chosen if new_values.get((item.item, head)) == chosen[head]])
        step = 1
    elif skip or not_product:
        store.mark(item.item, SKIPPED if skip else NOT_PRODUCT, reviewer, run_id=record.id)
        step = 1
    elif undo:
        try:
            undone = store.undo_last(reviewer)
        except UndoConflict as error:
            st.error(str(error))
            return
        if undone is None:
            st.toast("Nothing of yours to undo.")
            return
        for field in undone.changes:  # the choices start again from the restored values
            st.session_state.pop(f"review.{undone.item}.{field}", None)
        st.session_state[CURRENT_KEY] = undone.item
        st.rerun()
    if step:
        following_item = next_item(shown, item.item, step)
        if following_item is None and step > 0:
            st.toast("That was the last one in this view.")
        st.session_state[CURRENT_KEY] = following_item if following_item is not None else item.item
        st.rerun()


def new_value_form(item: Item, heads: list[str], new_values: dict) -> None:
    with st.expander("A label that is not in the list"):
        with st.form(f"review.new_value.{item.item}", border=False):
            left, right = st.columns(2)
            head = left.selectbox("Head", heads, key=f"review.new_head.{item.item}")
            value = right.text_input("New value", key=f"review.new_text.{item.item}").strip()
            confirmed = st.checkbox("Yes, add it as a new value of this head", key=f"review.new_confirm.{item.item}")
            submitted = st.form_submit_button("Use this value")
        if submitted:
            if not value or not confirmed:
                st.error("Type the value and tick the confirmation: new values grow the vocabulary for everyone.")
                return
            new_values[(item.item, head)] = value
            st.session_state.pop(f"review.{item.item}.{head}", None)
            st.rerun()


def export_section(store: LabelStore, catalogue: Catalogue) -> None:
    log = store.log_frame(catalogue.root)
    st.markdown(f"**{len(log):,} logged decisions** on `{catalogue.root}` "
                f"({log['product_id'].nunique() if not log.empty else 0:,} items).")
    if not log.empty:
        st.dataframe(log.tail(200), hide_index=True)
        st.download_button("Corrections with history (CSV)", log.to_csv(index=False), "corrections.csv", "text/csv",
                           on_click="ignore", icon=":material/download:")
    # A new folder per session by default: an export never lands on an earlier one.
    st.session_state.setdefault("review.export_to", str(workspace.workspace_dir() / "exports" /
                                                        f"{catalogue.root.name}-corrected-{time.strftime('%Y%m%d-%H%M%S')}"))
    with st.form("review.export_form", border=False):
        folder = st.text_input("Export the corrected catalogue to", key="review.export_to",
                               help="A new or empty folder: styles.csv, images/<id>.jpg and corrections.csv.")
        export = st.form_submit_button("Export", icon=":material/output:")
    if export:
        bar = st.progress(0.0, text="Exporting…")
        try:
            report = export_dataset(catalogue, store, Path(folder.strip()).expanduser(),
                                    progress=lambda done, total: bar.progress(done / max(total, 1),
                                                                              text=f"Exporting photos: {done:,} of {total:,}"))
        except (ValueError, OSError, CatalogueError) as error:
            bar.empty()
            st.error(f"Export failed: {error}")
            return
        bar.empty()
        st.success(f"Exported {report.rows:,} rows to `{report.out}`: {report.corrected_rows:,} corrected, "
                   f"{report.dropped_rows:,} dropped as not a product, {report.external_rows:,} new photos. "
                   "Train on the corrections from the Train page, or open the export as a dataset.")
        st.button("Open the exported dataset", on_click=use_dataset, args=(str(report.out),),
                  icon=":material/folder_open:", key="review.open_export")


def main() -> None:
    st.title("Review")
    reviewer = reviewer_field()
    catalogue = current_catalogue()
    if catalogue is None:
        return
    record = choose_run()
    if record is None:
        return
    store = label_store()
    review_tab, export_tab = st.tabs(["Review", "Export"], key="review.section", on_change="rerun")
    if export_tab.open:
        with export_tab:
            export_section(store, catalogue)
    if not review_tab.open:
        return
    with review_tab:
        source = st.segmented_control("Source", SOURCES, default=SOURCES[0], key="review.source") or SOURCES[0]
        if source == SOURCES[0]:
            photo_source(store, catalogue, reviewer)
        else:
            catalogue_source(store, catalogue, record, reviewer, source)
        if not st.session_state.get(QUEUE_KEY):
            st.info("Upload photos, load a folder, or load a catalogue queue to start reviewing.")
            return
        shown, _ = queue_view(store, list(record.config["heads"]))
        bulk_accept(store, record, reviewer)
        if not shown:
            st.info("No item in this view: change the filter.")
            return
        current = st.session_state.get(CURRENT_KEY)
        [item] = store.items([current if current in shown else shown[0]])
        item_view(store, record, catalogue, item, shown, reviewer)


main()
