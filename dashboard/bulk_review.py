"""Accept in one go what the model is sure of for the Review queue's new photos, and undo that as a whole."""

from __future__ import annotations

import streamlit as st

from core.labelstore import ItemKind, LabelStore
from core.review import accept_confident, bulk_preview, undo_bulk
from dashboard.models import proposals_for
from dashboard.review_queue import QUEUE_KEY
from training.registry import RunRecord

BULK_MESSAGE_KEY = "review.bulk_message"  # what the last bulk acceptance did, shown once after its rerun
BULK_UNDO_KEY = "review.bulk_undo_actions"  # the store actions of this session's last bulk acceptance
BULK_CHECKED_KEY = "review.bulk_checked"  # (run, new photos) the user asked the model to check for bulk acceptance
BULK_THRESHOLD = 0.9  # default: accept a new photo when every head's proposal is at least this sure


def bulk_accept(store: LabelStore, record: RunRecord, reviewer: str) -> None:
    """Accept in one go the proposals for the queue's unreviewed new photos that the model is sure
    of in every head; the rest stay for a person."""
    message = st.session_state.pop(BULK_MESSAGE_KEY, None)
    if message:
        st.success(message, icon=":material/done_all:")
    undo_bulk_button(store, reviewer)
    photos = [item for item in store.items(st.session_state.get(QUEUE_KEY) or []) if item.kind == ItemKind.EXTERNAL]
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
