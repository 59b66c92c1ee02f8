"""Accept in one go the heads the model is sure of for the Review queue's new photos, at a chosen
error rate, each source's photos under their own rules (core.labels.sources), and undo that as a
whole; the other heads wait for a person."""

from __future__ import annotations

import streamlit as st

from core.access.roles import Actor
from core.labels.queues import accept_confident, bulk_preview
from core.labels.sources import SourceTrust, source_policy
from core.labels.store import LabelStore
from core.labels.tables import ItemKind
from core.trust.abstention import TARGET_ERROR
from dashboard.models import predictor_of, proposals_for
from dashboard.queue_state import QUEUE_KEY
from dashboard.text import plain
from training.registry import RunRecord

BULK_MESSAGE_KEY = "review.bulk_message"  # what the last bulk acceptance did, shown once after its rerun
BULK_UNDO_KEY = "review.bulk_undo_batch"  # (batch id, photos) of this session's last bulk acceptance
BULK_CHECKED_KEY = "review.bulk_checked"  # (run, new photos) the user asked the model to check for bulk acceptance
TARGET_ERRORS = (0.01, 0.02, 0.05, 0.1)  # the choices offered, TARGET_ERROR by default


def bulk_accept(store: LabelStore, record: RunRecord, actor: Actor) -> None:
    """Accept in one go, for the queue's unreviewed new photos, every head whose proposal needs no
    person at the chosen error rate; the other heads stay for a person."""
    message = st.session_state.pop(BULK_MESSAGE_KEY, None)
    if message:
        st.success(message, icon=":material/done_all:")
    undo_bulk_button(store, actor)
    photos = [item for item in store.items(st.session_state.get(QUEUE_KEY) or []) if item.kind == ItemKind.EXTERNAL]
    if not photos:
        return
    # Keyed, with a rerun on toggle: it stays open across reruns, and costs nothing while closed.
    section = st.expander("Accept the sure heads in bulk (new photos)", key="review.bulk", on_change="rerun")
    if not section.open:
        return
    with section:
        trust = predictor_of(record).trust
        if trust is None or trust.calibration is None:
            st.info(f"Run {record.id} has no calibration, so no head can be accepted without a person. "
                    f"Calibrate it: `python -m training calibrate {record.id}`.")
            return
        checked = (record.id, tuple(item.item for item in photos))
        if st.session_state.get(BULK_CHECKED_KEY) != checked:
            st.caption(f"First the model proposes labels for the queue's {len(photos):,} new photos "
                       "(about 10 ms each on two CPU cores).")
            st.button("Check the new photos", key="review.bulk_check", icon=":material/search_check:",
                      on_click=lambda: st.session_state.update({BULK_CHECKED_KEY: checked}))
            return
        proposals = proposals_for(record, photos)
        target = st.segmented_control(
            "Error rate allowed among accepted labels", TARGET_ERRORS, default=TARGET_ERROR,
            key="review.bulk_target", format_func=lambda e: f"≤ {e:.0%}",
            help="Per head, the proposals at or above the confidence that keeps this error rate, certified on "
                 "held-out rows (95 % guarantee); a head that cannot be certified always goes to a person.",
        ) or TARGET_ERROR
        policy, standing = source_policy(store, photos[0].dataset, [item.source for item in photos], record.id,
                                         trust, target)
        stopped_heads(standing)
        rows_to_certify(standing, target)
        preview = bulk_preview(store, photos, proposals, policy)
        st.markdown(f"**{preview.heads_accepted:,} of {preview.heads_open:,}** open head decisions on "
                    f"{preview.photos_open:,} new photos need no person at ≤ {target:.0%} error; "
                    f"**{preview.heads_left:,}** are left for you, and {preview.photos_complete:,} photos "
                    "would be complete.")
        if preview.photos_reviewed_whole:
            st.caption(f"{preview.photos_reviewed_whole:,} of the new photos come from sources not yet certified on "
                       "their own reviewed photos: a person decides all their heads, so that the promise holds on "
                       "every source, and what the run's thresholds would have accepted is audited (Evaluate → "
                       "Trust shows how they would have done; an admin may lower a source's audit share there).")
        if preview.photos_unlike:
            st.caption(f"{preview.photos_unlike:,} of the new photos are unlike the calibration photos (the "
                       "photos the error rate was certified on): the promise does not cover them, so a person "
                       "decides every one of their heads.")
        st.caption("Each accepted head is logged as the model's, with the run, its confidence, the threshold it met "
                   "and the photo's typicality, and the whole acceptance can be undone at once. Catalogue rows are "
                   "never accepted in bulk: a model that disagrees with the catalogue is for a person to see.")
        if not st.button(f"Accept {preview.heads_accepted:,} head decisions", key="review.bulk_accept",
                         disabled=not preview.heads_accepted, icon=":material/done_all:"):
            return
        result = accept_confident(store, photos, proposals, policy, actor, run_id=record.id)
    left = f"{result.heads_left:,} head decisions left for you"
    if result.unreadable:
        left += f", {len(result.unreadable):,} photos unreadable"
    st.session_state[BULK_MESSAGE_KEY] = (
        f"Accepted {result.heads_accepted:,} head decisions at ≤ {target:.0%} error: {len(result.completed):,} photos "
        f"complete, {len(result.partial):,} in part; {left}.")
    if result.actions:
        st.session_state[BULK_UNDO_KEY] = (result.batch, len(result.actions))
    st.rerun()


def stopped_heads(standing: dict[str, SourceTrust]) -> None:
    """Say which heads a source's alarm stopped, and why."""
    for source, entry in standing.items():
        for head, rule in entry.rules.items():
            if head in entry.alarms and entry.alarms[head].fired:
                st.warning(plain(f"{head} of the photos from {source!r} is not accepted without a person: "
                                 f"{rule.why}."),
                           icon=":material/notifications_active:")


def rows_to_certify(standing: dict[str, SourceTrust], target: float) -> None:
    """Per source not yet certified on its own photos, the heads its next reviewed photos would certify."""
    for source, entry in standing.items():
        if entry.calibration is not None:
            continue
        needed = {head: entry.more_needed(head, target) for head in entry.selections}
        near = sorted((count, head) for head, count in needed.items() if count is not None)[:2]
        if near:
            st.caption(plain("; ".join(
                (f"{head} of {source} can be certified now on its reviewed photos (an admin recalibrates it: "
                 "Evaluate → Trust)" if count == 0 else
                 f"{count:,} more reviewed photos of {source} certify {head} at {target:.0%}") for count, head in near)
                + "."))


def undo_bulk_button(store: LabelStore, actor: Actor) -> None:
    """Undo this session's last bulk acceptance, but where a person decided a photo since."""
    last = st.session_state.get(BULK_UNDO_KEY)
    if not last or not st.button(f"Undo the bulk acceptance ({last[1]:,} photos)", key="review.bulk_undo",
                                 icon=":material/undo:"):
        return
    undone, kept = store.undo_batch(last[0], actor)
    st.session_state.pop(BULK_UNDO_KEY)
    message = f"Undid the bulk acceptance: {len(undone):,} photos are as they were."
    if kept:
        message += f" {len(kept):,} were decided by a person since, and keep that decision."
    st.session_state[BULK_MESSAGE_KEY] = message
    st.rerun()
