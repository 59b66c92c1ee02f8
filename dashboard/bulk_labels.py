"""One label set on every photo of a selection (a box or lasso on Data health's map, a near-duplicate
group, Explore's filtered grid) as one bulk edit of the label store (LabelStore.label_many): the
count it changes first, a confirmation, then an undo of the whole edit."""

from __future__ import annotations

import streamlit as st

from core.access.roles import Permission
from core.data import HEADS
from core.data.catalogue import Catalogue
from core.labels.queues import label_changes
from core.labels.store import UndoConflict
from dashboard.datasets import head_values
from dashboard.identity import person
from dashboard.labels import label_store
from dashboard.text import plain

LAST_EDIT_KEY = "bulk_labels.last"  # {selection key: the Batch} of this session's last bulk edit per selection


def bulk_label(catalogue: Catalogue, ids: list[int], key: str) -> None:
    """A form that sets one head to one value on the catalogue photos `ids` (reviewers and admins),
    and what the last edit from this selection did, with its undo. `key` names the selection."""
    actor = person()
    if not ids or not actor.may(Permission.REVIEW):
        return
    last_edit(key)
    # Keyed, with a rerun on toggle: it stays open across reruns, and costs nothing while closed.
    section = st.expander(f"Set a label on these {len(ids):,} photos", icon=":material/edit_note:",
                          key=f"{key}.bulk_open", on_change="rerun")
    if not section.open:
        return
    with section:
        left, right = st.columns(2)
        head = left.selectbox("Head", HEADS, index=HEADS.index("articleType"), key=f"{key}.bulk_head")
        store = label_store()
        values = sorted({*head_values(catalogue, head), *store.values(catalogue.root)[head]}, key=str.casefold)
        value = right.selectbox("Value", values, index=None, key=f"{key}.bulk_value", placeholder="choose a value")
        if value is None:
            return
        changing = label_changes(store, catalogue, ids, head, value)
        st.markdown(f"**{len(changing):,} of {len(ids):,} photos** would change to {head} = {plain(value)}; "
                    f"{len(ids) - len(changing):,} have it already. One decision of yours, undone as a whole.")
        confirmed = st.checkbox(f"Yes, set {head} to {plain(value)} on {len(changing):,} photos",
                                key=f"{key}.bulk_confirm")
        if not st.button("Set the label", key=f"{key}.bulk_apply", icon=":material/done_all:",
                         disabled=not (confirmed and changing)):
            return
        items = store.add_catalogue_items(catalogue, changing, actor)
        batch = store.label_many([item.item for item in items], head, value, actor)
    st.session_state.setdefault(LAST_EDIT_KEY, {})[key] = batch
    st.session_state.pop(f"{key}.bulk_confirm", None)  # the next edit is confirmed again
    st.rerun()


def last_edit(key: str) -> None:
    """What this selection's last bulk edit did, and a button undoing it whole."""
    batch = st.session_state.get(LAST_EDIT_KEY, {}).get(key)
    if batch is None or not batch.actions:
        return
    left, right = st.columns([3, 1], vertical_alignment="center")
    left.success(f"Set {batch.head} to {plain(batch.value)} on {len(batch.changed):,} photos.",
                 icon=":material/done_all:")
    if not right.button("Undo this edit", key=f"{key}.bulk_undo", icon=":material/undo:"):
        return
    try:
        label_store().undo_action(batch.actions[0], person())
    except (UndoConflict, ValueError) as error:  # changed since, or undone already (Review's undo)
        st.error(plain(error))
        return
    del st.session_state[LAST_EDIT_KEY][key]
    st.toast(f"Undid the edit: {len(batch.changed):,} photos are as they were.")
    st.rerun()
