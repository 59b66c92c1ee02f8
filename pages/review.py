"""Review: the model proposes labels for new photos or doubtful catalogue rows, a person decides,
and every decision lands in the label store, ready to export or to train on."""

import time
from pathlib import Path

import streamlit as st

from core import workspace
from core.access.roles import Actor, Permission
from core.data import CatalogueError
from core.data.catalogue import Catalogue
from core.data.schema import OTHER_CLASS
from core.labels.corrections import export_dataset
from core.labels.queues import choices, disagreement, history_table, next_item, shown_label, undo_choices
from core.labels.store import LabelStore, UndoConflict
from core.labels.tables import Item, ItemKind, ReviewStatus
from core.trust.typicality import UNLIKE_CALIBRATION
from core.untrusted import check_typed, spreadsheet_csv
from dashboard import pages
from dashboard.bulk_review import bulk_accept
from dashboard.datasets import current_catalogue, fitted_width, head_values, thumbnail, use_dataset
from dashboard.identity import person
from dashboard.labels import label_store
from dashboard.models import Guesses, guesses_for, predictor_of
from dashboard.queue_state import CURRENT_KEY, QUEUE_KEY, remember_queue, restore_queue
from dashboard.review_queue import queue_sources, queue_view
from dashboard.review_timer import seconds_on, start_clock
from dashboard.runs import REVIEW_RUN_KEY, heads_of
from dashboard.shared_queue import (
    leased_item,
    lost_hold,
    save_decision,
    save_mark,
    shared,
    undo_stops_at_an_answer,
)
from dashboard.shortcuts import keyboard_shortcuts
from dashboard.text import code, plain
from training.registry import (
    DATASET_SCORE,
    RunRecord,
    RunRegistry,
    RunState,
    best_first,
    dataset_score,
    trained_on,
)
from training.run_folder import RunFolder

# Keyboard: modifier combinations, so typing in a text field never triggers an action.
SHORTCUTS = {"review_save": "ctrl+enter", "review_previous": "ctrl+arrowleft", "review_next": "ctrl+arrowright",
             "review_skip": "ctrl+arrowdown", "review_not_product": "ctrl+x", "review_undo": "ctrl+z"}
LOW_CONFIDENCE = 0.5  # a proposal below this probability is marked "unsure": look twice
PHOTO_BOX = (280, 330)  # the item's photo at most this wide and tall (px): the item fits a 1400 x 900 window


def choose_run(catalogue: Catalogue) -> RunRecord | None:
    """The model whose proposals stand beside the labels: by default the best run on this catalogue
    (training.registry.best_first), said in the sidebar; None without a finished run (people decide
    from the catalogue's values alone)."""
    finished = [record for record in RunRegistry().list(limit=200)
                if record.status == RunState.FINISHED and RunFolder(record.folder).has_checkpoint()]
    runs = {record.id: record for record in best_first(finished, catalogue.root)}
    if not runs:
        st.sidebar.caption("No finished run yet: you decide from the catalogue's values, without a model's "
                           "proposals.")
        with st.sidebar:
            pages.link(pages.TRAIN, "Train a model")
        return None
    run_id = st.sidebar.selectbox("Model (a finished run's best checkpoint)", list(runs), key=REVIEW_RUN_KEY,
                                  format_func=lambda i: f"{i} · {runs[i].config.get('backbone')} · "
                                                        + run_score(runs[i], catalogue))
    st.sidebar.caption(model_choice_note(runs[run_id], next(iter(runs.values())), catalogue))
    return runs[run_id]


def run_score(record: RunRecord, catalogue: Catalogue) -> str:
    if not trained_on(record, catalogue.root):
        return "another dataset"
    score = dataset_score(record)
    return "no score" if score is None else str(score)


def model_choice_note(chosen: RunRecord, best: RunRecord, catalogue: Catalogue) -> str:
    """Which model proposes, and why it is the default."""
    if run_score(best, catalogue) == "another dataset":
        return (f"Proposals from run {chosen.id}. No run was trained on this dataset: the newest run of another "
                "dataset proposes.")
    ranked = f"by {DATASET_SCORE}, {run_score(best, catalogue)}"
    if chosen.id == best.id:
        return f"Proposals from run {chosen.id}: the best run on this dataset {ranked}."
    return (f"Proposals from run {chosen.id} ({run_score(chosen, catalogue)}); the best on this dataset is "
            f"{best.id} ({ranked}).")


def item_view(store: LabelStore, record: RunRecord | None, catalogue: Catalogue, item: Item, shown: list[int],
              actor: Actor) -> None:
    """The photo, one choice per head and the actions, sized to fit a 1400 x 900 window. Each head
    shows its current value (the catalogue's, or a decision); where the model proposes something
    else, the proposal and its calibrated confidence stand beside it, one key away."""
    position = shown.index(item.item) + 1
    start_clock(item.item)
    current = store.current([item.item])[item.item]
    status = current["status"]
    guesses = guesses_for(record, item) if record is not None else Guesses({}, {})  # no model: no proposal
    picture, labels = st.columns([1, 3])
    unlike = not isinstance(guesses, str) and not guesses.typical
    picture.caption(f"{position:,} of {len(shown):,} · {plain(item.name)} · "
                    + (status.replace("_", " ") if status else "unreviewed")
                    + (f" · :material/help: **{UNLIKE_CALIBRATION}**" if unlike else ""))
    image = thumbnail(str(item.path), 384)
    if isinstance(image, str):  # why it cannot be shown, naming the file: plain text
        picture.text(image)
    else:
        picture.image(image, width=fitted_width(image, PHOTO_BOX[0], PHOTO_BOX[1]))
    if isinstance(guesses, str):
        picture.error(plain(guesses))
        guesses = Guesses({}, {})
    heads = heads_of(record)
    classes = predictor_of(record).schema.classes if record is not None else {}
    chosen, predicted, takes = {}, {}, {}
    new_values = st.session_state.setdefault("review.new_values", {})
    reviewer_values = store.values(catalogue.root)
    grid = [column for _ in range(-(-len(heads) // 3)) for column in labels.columns(3)]  # 3 heads a row
    for index, (head, cell) in enumerate(zip(heads, grid)):
        with cell:
            vocabulary = [*head_values(catalogue, head), *reviewer_values[head]]
            offered = choices(classes.get(head, ()), vocabulary, current[head])
            extra = new_values.get((item.item, head))
            if extra is not None:
                offered.append(extra)
            head_guesses = guesses.labels.get(head, [])
            start = extra or shown_label(head_guesses, current[head], status == ReviewStatus.REVIEWED, offered)
            key = f"review.{item.item}.{head}"
            chosen[head] = st.selectbox(head, offered, index=offered.index(start) if start in offered else None,
                                        key=key, placeholder="no label")
            if head_guesses:
                predicted[head] = head_guesses[0]
            proposal = disagreement(head_guesses, chosen[head])
            if proposal is not None and proposal[0] in offered:
                takes[f"review_take_{index + 1}"] = take_button(key, proposal, index + 1, guesses.accepted.get(head))
            elif record is not None:  # without a model the head shows the catalogue's value alone
                st.caption(model_note(head_guesses, guesses.accepted.get(head), proposed=current[head] is None))
    actions(store, record, item, shown, actor, chosen, predicted, new_values, takes)
    if actor.may(Permission.REVIEW):
        new_value_form(item, heads, new_values)
    with st.expander("History of this item"):
        item_history(store, item, actor)


def item_history(store: LabelStore, item: Item, actor: Actor) -> None:
    """The item's decisions (who, when, what) and a way to undo one: a reviewer their own, an
    admin anyone's (the label store checks it again)."""
    history = store.history(item.item)
    if history.empty:
        st.caption("No decisions yet.")
        return
    st.dataframe(history_table(history), hide_index=True, width="stretch")
    if not actor.may(Permission.REVIEW):
        return
    undoable = undo_choices(store.open_actions(item.item), actor)
    if not undoable:
        st.caption("None of these decisions is yours to undo." if not actor.may(Permission.UNDO_ANY)
                   else "Nothing left to undo.")
        return
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    chosen = left.selectbox("Undo a decision", list(undoable), key=f"review.undo_choice.{item.item}",
                            format_func=undoable.get,
                            help="Yours, newest first"
                                 + ("; as an admin, anyone's" if actor.may(Permission.UNDO_ANY) else ""))
    if right.button("Undo it", key=f"review.undo_action.{item.item}", icon=":material/undo:"):
        try:
            undone = store.undo_action(chosen, actor)
        except (UndoConflict, ValueError, KeyError) as error:
            st.error(plain(error))
            return
        for field in undone.changes:  # the choices start again from the restored values
            st.session_state.pop(f"review.{undone.item}.{field}", None)
        st.rerun()


def take_button(key: str, proposal: tuple[str, float], number: int, sure: bool | None) -> str:
    """A button putting the model's proposal into the head's choice; returns its shortcut (Alt+number)."""
    label, p = proposal
    st.button(f"Take {plain(label)} ({p:.2f}{', sure' if sure else ''}) · Alt+{number}", key=f"review_take_{number}",
              type="tertiary", icon=":material/swap_horiz:", on_click=_choose, args=(key, label),
              help="The model proposes another label than the one shown; this takes it. Saving keeps what is shown.")
    return f"alt+{number}"


def _choose(key: str, label: str) -> None:
    st.session_state[key] = label


def model_note(guesses: list[tuple[str, float]], sure: bool | None, proposed: bool) -> str:
    """One line under a head: what the model thinks of the label shown (`proposed`: the label
    shown is the model's own proposal, the head having no value yet)."""
    if not guesses:
        return "no proposal"
    label, p = guesses[0]
    if label == OTHER_CLASS:
        return f"model: a rare class ({p:.2f}); choose by eye"
    return (f"{'proposed' if proposed else 'model agrees'} · {p:.2f}"
            + (" · sure" if sure else " · unsure" if p < LOW_CONFIDENCE else ""))


def actions(store: LabelStore, record: RunRecord | None, item: Item, shown: list[int], actor: Actor,
            chosen: dict, predicted: dict, new_values: dict, takes: dict[str, str]) -> None:
    columns = st.columns(6)
    disabled = not actor.may(Permission.REVIEW)
    save = columns[0].button("Save & next", key="review_save", type="primary", disabled=disabled,
                             help=f"Keep the labels shown (with your changes) · {SHORTCUTS['review_save']}")
    previous = columns[1].button("Previous", key="review_previous", help=SHORTCUTS["review_previous"])
    following = columns[2].button("Next", key="review_next", help=SHORTCUTS["review_next"])
    skip = columns[3].button("Skip", key="review_skip", disabled=disabled, help=SHORTCUTS["review_skip"])
    not_product = columns[4].button("Not a product", key="review_not_product", disabled=disabled,
                                    help="Drop it from the catalogue and from training · "
                                         f"{SHORTCUTS['review_not_product']}")
    undo = columns[5].button("Undo", key="review_undo", disabled=disabled,
                             help=f"Undo your last decision · {SHORTCUTS['review_undo']}")
    keyboard_shortcuts(**SHORTCUTS, **takes)
    st.caption(f"You are a {actor.role}: you can look, not decide (reviewers and admins decide)." if disabled else
               "Keys: Ctrl+Enter save & next · Ctrl+← / Ctrl+→ previous / next · Ctrl+↓ skip · "
               "Ctrl+X not a product · Ctrl+Z undo · Alt+n take the model's proposal for head n")
    step = 1 if following else -1 if previous else 0
    run_id = record.id if record is not None else None
    if save:
        missing = [head for head, value in chosen.items()
                   if value is None and (item.kind == ItemKind.EXTERNAL or item.baseline.get(head) is not None)]
        if missing:  # a catalogue row may keep a label it never had missing
            st.error(f"Choose a label for {', '.join(missing)} first.")
            return
        save_decision(store, item, chosen, actor, run_id=run_id, predicted=predicted,
                      new_values=[head for head in chosen if new_values.get((item.item, head)) == chosen[head]],
                      seconds=seconds_on(item.item))
        step = 1
    elif skip or not_product:
        save_mark(store, item, ReviewStatus.SKIPPED if skip else ReviewStatus.NOT_PRODUCT, actor, run_id)
        step = 1
    elif undo:
        if undo_stops_at_an_answer():
            return
        try:
            undone = store.undo_last(actor)
        except UndoConflict as error:
            st.error(plain(error))
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
            try:
                value = check_typed(value, f"a new {head} value")
            except ValueError as error:  # named rule, the value as inert text
                st.error(plain(error))
                return
            new_values[(item.item, head)] = value
            st.session_state.pop(f"review.{item.item}.{head}", None)
            st.rerun()


def export_section(store: LabelStore, catalogue: Catalogue, actor: Actor) -> None:
    log = store.log_frame(catalogue.root)
    st.markdown(f"**{len(log):,} logged decisions** on {code(catalogue.root)} "
                f"({log['product_id'].nunique() if not log.empty else 0:,} items).")
    if not log.empty:
        st.dataframe(log.tail(200), hide_index=True)
        st.download_button("Corrections with history (CSV)", spreadsheet_csv(log, index=False), "corrections.csv",
                           "text/csv", on_click="ignore", icon=":material/download:")
    if not actor.may(Permission.EXPORT):
        st.caption(f"Exporting the corrected catalogue is for admins; you are a {actor.role}.")
        return
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
            report = export_dataset(catalogue, store, Path(folder.strip()).expanduser(), actor,
                                    progress=lambda done, total: bar.progress(done / max(total, 1),
                                                                              text=f"Exporting photos: {done:,} "
                                                                                   f"of {total:,}"))
        except (ValueError, OSError, CatalogueError) as error:  # AccessDenied (a folder refused) included
            bar.empty()
            st.error(f"Export failed: {plain(error)}")
            return
        bar.empty()
        st.success(f"Exported {report.rows:,} rows to {code(report.out)}: {report.corrected_rows:,} corrected, "
                   f"{report.dropped_rows:,} dropped as not a product, {report.external_rows:,} new photos. "
                   "Train on the corrections from the Train page, or open the export as a dataset.")
        if report.skipped_images:
            st.warning(f"{len(report.skipped_images):,} photo(s) could not be exported: their rows are in "
                       "styles.csv without a photo (why, below).")
        if report.notes():  # file names and reasons: plain text
            st.text("\n".join(report.notes()))
        st.button("Open the exported dataset", on_click=use_dataset, args=(str(report.out),),
                  icon=":material/folder_open:", key="review.open_export")


def main() -> None:
    st.title("Review")
    actor = person()
    catalogue = current_catalogue()
    if catalogue is None:
        return
    record = choose_run(catalogue)
    store = label_store()
    review_tab, export_tab = st.tabs(["Review", "Export"], key="review.section", on_change="rerun")
    if export_tab.open:
        with export_tab:
            export_section(store, catalogue, actor)
    if not review_tab.open:
        return
    with review_tab:
        if not actor.may(Permission.REVIEW):
            st.info(f"You are a {actor.role}: you can read the decisions (Export tab) but not make them. "
                    "An admin gives you the reviewer role in the access file.")
            return
        restore_queue(store, catalogue, actor)
        queue_sources(store, catalogue, record, actor)
        if not st.session_state.get(QUEUE_KEY):
            st.info("Upload photos, load a folder, or load a catalogue queue to start reviewing.")
            return
        shown, _ = queue_view(store, heads_of(record))
        remember_queue(store, catalogue, actor, shown)
        if shown and shared():  # a team's queue: the next item nobody else is looking at
            queue = st.session_state[QUEUE_KEY]
            current = leased_item(store, catalogue, queue, st.session_state.get(CURRENT_KEY), actor)
            if lost_hold(current, st.session_state.get(CURRENT_KEY)):
                st.session_state[CURRENT_KEY] = current
                st.rerun()  # the buttons' clicks were for the photo taken: this run must not apply them
            if current is None:
                st.info("Every open photo of this queue is being reviewed by someone else right now, or is "
                        "decided. Photos come back here when their reviewer moves on without deciding them.")
            else:
                st.session_state[CURRENT_KEY] = current
                item_view(store, record, catalogue, store.items([current])[0], queue, actor)
        elif shown:
            [item] = store.items([st.session_state[CURRENT_KEY]])
            item_view(store, record, catalogue, item, shown, actor)
        else:
            st.info("No item in this view: change the filter.")
        if record is not None:
            bulk_accept(store, record, actor)


main()
