"""A team's shared Review queue (core.labels.leases): in team mode each item shown is leased to the
person looking at it, so that two reviewers on one queue never see the same item at once (unless
it is drawn for double review, or is gold), and a lead's gold items are mixed into a new queue,
where each reviewer's decision on one is their answer, scored, and leaves the catalogue as it was
(core.labels.team). Alone on one machine (local mode) none of it shows: the queue is the person's own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from core.access.roles import Actor
from core.data.catalogue import Catalogue
from core.labels.leases import decided_by, next_leased, open_for, release, team_settings
from core.labels.queues import with_gold
from core.labels.store import LabelStore
from core.labels.tables import Action, Item, ReviewStatus
from core.labels.team import decisions, gold_labels
from dashboard.identity import login_configured


def shared() -> bool:
    """Whether queues are shared: team mode (a login)."""
    return login_configured()


def leased_item(store: LabelStore, catalogue: Catalogue, queue: list[int], current: int | None,
                actor: Actor) -> int | None:
    """The item `actor` reviews now: `current` when it is decided and theirs (to look back, undo),
    else the first item from `current` on that is open to them and free (leased to them now), else
    `current` when it is decided (nothing open is free: looking at a decided item collides with
    nobody); None when someone else holds every open item."""
    share = team_settings(store, catalogue.root).double_share
    decided = current in queue and current not in open_for(store, [current], actor, share)
    if decided and decided_by(store, current, actor):
        return current
    leased = next_leased(store, queue, actor, share, start=current)
    return current if leased is None and decided else leased


ANSWERED_KEY = "review.answered_gold"  # the gold item this session's last decision answered (shared queues)


def save_decision(store: LabelStore, item: Item, labels: Mapping[str, str | None], actor: Actor,
                  **decision: Any) -> Action:
    """Save `actor`'s labels of `item` (`decision`: LabelStore.review's run_id, predicted,
    new_values, seconds): in a shared queue a gold item's are their answer (LabelStore.answer_gold),
    any other item's a review, and their hold of the item ends: a gold or double-review item goes
    on to the next reviewer now, not when the hold runs out."""
    st.session_state.pop(ANSWERED_KEY, None)
    if not shared():
        return store.review(item.item, labels, actor, **decision)
    gold = item.item in gold_labels(store, item.dataset)
    action = (store.answer_gold if gold else store.review)(item.item, labels, actor, **decision)
    release(store, item.item, actor)
    if gold:
        st.session_state[ANSWERED_KEY] = item.item
    return action


def save_mark(store: LabelStore, item: Item, status: ReviewStatus, actor: Actor, run_id: str | None) -> Action:
    """Mark `item` skipped or not a product (LabelStore.mark): an action in the log, so the next undo is of it."""
    st.session_state.pop(ANSWERED_KEY, None)
    return store.mark(item.item, status, actor, run_id=run_id)


def undo_stops_at_an_answer() -> bool:
    """Whether an undo pressed now must stop: this session's last decision was an answer on a gold
    item, which is not in the log an undo walks back, so it would reach past it and undo an older
    decision. Says so (without naming the item gold) once; the next undo goes on as usual."""
    if st.session_state.pop(ANSWERED_KEY, None) is None:
        return False
    st.toast("Your last decision cannot be undone (decide that photo again to change it), so nothing was undone. "
             "Press Undo again to undo the decision before it.", icon=":material/undo:")
    return True


DECISION_BUTTONS = ("review_save", "review_skip", "review_not_product")  # the keys of the Review page's decisions
LOST_KEY = "review.lost_hold"  # a decision was not saved: its photo went to someone else meanwhile


def lost_hold(leased: int | None, shown: int | None) -> bool:
    """Whether this run's decision button was pressed for the photo `shown` but the reviewer now
    holds another, `leased` (their hold ran out and another reviewer took it): then nothing may be
    saved; the reviewer is told on the next run (the caller makes `leased` the current item and
    runs the page again, which resets the buttons)."""
    if leased == shown or not any(st.session_state.get(key) for key in DECISION_BUTTONS):
        note = st.session_state.pop(LOST_KEY, None)
        if note:
            st.warning(note, icon=":material/person_alert:")
        return False
    st.session_state[LOST_KEY] = ("Nothing was saved: the photo you were deciding went to another reviewer after "
                                  "your 5-minute hold of it ran out. Here is the next free one.")
    return True


def mixed_with_gold(store: LabelStore, catalogue: Catalogue, items: list[Item], actor: Actor) -> list[Item]:
    """A new queue's items with the lead's gold items mixed in (team mode, a gold share set), those
    `actor` decided before left out."""
    share = team_settings(store, catalogue.root).gold_share
    if not shared() or not share:
        return items
    gold = gold_labels(store, catalogue.root)
    if not gold:
        return items
    decided = decisions(store, catalogue.root)
    seen = set(decided.loc[decided["reviewer"] == actor.identity, "item"])
    order = with_gold([item.item for item in items], sorted(gold), share, seen)
    return store.items(order)
