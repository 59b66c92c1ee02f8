"""The Review queue's state, apart from where its items come from (dashboard.review_queue): item
ids in QUEUE_KEY, the item shown in CURRENT_KEY, what filled it in QUEUE_SOURCE_KEY, its view; kept
in the label store per person and dataset (`remember_queue`), so that it comes back on a reload or
on another device (`restore_queue`); and `queue_for_review`, how another page hands rows to Review.
Imports nothing of training: Explore and Data health hand rows over without loading it."""

from __future__ import annotations

import streamlit as st

from core.access.roles import Actor
from core.data.catalogue import Catalogue, DatasetKey
from core.labels.queues import FILTERS, in_catalogue
from core.labels.store import LabelStore
from core.labels.tables import Item, SavedQueue
from dashboard import pages
from dashboard.identity import person
from dashboard.labels import label_store
from dashboard.shared_queue import mixed_with_gold

QUEUE_KEY, CURRENT_KEY = "review.queue", "review.current"
QUEUE_SOURCE_KEY = "review.queue_source"  # what filled the queue, said for a person
QUEUE_OWNER_KEY = "review.queue_owner"  # (identity, dataset) whose queue the session holds
QUEUE_KEPT_KEY = "review.queue_kept"  # the SavedQueue last kept in the store: saved again only when it changes
FILTER_KEY, CORRECTED_IN_KEY = "review.filter", "review.corrected_in"
SOURCE_OPEN_KEY = "review.source_open"  # the sources' expander is open
TAXONOMY_SOURCE = "rows that break the catalogue's taxonomy"


def start_queue(catalogue: Catalogue, items: list[Item], source: str) -> None:
    """Review `items` of `catalogue` from the first; the same photo twice is one item, queued once.
    `source` says what they are (shown above the queue, kept with it); the view shows all of them."""
    st.session_state.update({FILTER_KEY: "all", CORRECTED_IN_KEY: []})
    items = mixed_with_gold(label_store(), catalogue, items, person())
    st.session_state[QUEUE_KEY] = list(dict.fromkeys(item.item for item in items))
    st.session_state[CURRENT_KEY] = items[0].item if items else None
    st.session_state[QUEUE_SOURCE_KEY] = source
    st.session_state[QUEUE_OWNER_KEY] = (person().identity, DatasetKey.of(catalogue))


def restore_queue(store: LabelStore, catalogue: Catalogue, actor: Actor) -> None:
    """The queue `actor` kept on `catalogue` (a reload, another device, another name typed, another
    dataset opened) in place of the session's; with none kept, the session's queue stays when it is
    of this dataset."""
    owner = (actor.identity, DatasetKey.of(catalogue))
    if st.session_state.get(QUEUE_OWNER_KEY) == owner:
        return
    held = st.session_state.get(QUEUE_OWNER_KEY)
    st.session_state[QUEUE_OWNER_KEY] = owner
    saved = store.saved_queue(catalogue.root, actor)
    if saved is None:
        if held is not None and held[1] != owner[1]:
            st.session_state[QUEUE_KEY] = []
        return
    st.session_state.update({QUEUE_KEY: list(saved.items), CURRENT_KEY: saved.current,
                             QUEUE_SOURCE_KEY: saved.source, QUEUE_KEPT_KEY: saved,
                             FILTER_KEY: saved.filter if saved.filter in FILTERS else "all",
                             CORRECTED_IN_KEY: list(saved.corrected_in)})


def remember_queue(store: LabelStore, catalogue: Catalogue, actor: Actor, shown: list[int]) -> None:
    """The item to show (CURRENT_KEY: the first of `shown`, the items the view keeps, when the
    current one is not among them); then the session's queue, its view and that item kept in the
    label store, when they changed."""
    queue = st.session_state.get(QUEUE_KEY) or []
    current = st.session_state.get(CURRENT_KEY)
    if shown and current not in shown:
        current = st.session_state[CURRENT_KEY] = shown[0]
    kept = SavedQueue(st.session_state.get(QUEUE_SOURCE_KEY) or "", tuple(queue),
                      st.session_state.get(FILTER_KEY) or "all", tuple(st.session_state.get(CORRECTED_IN_KEY) or ()),
                      current if current in queue else None)
    if st.session_state.get(QUEUE_KEPT_KEY) != kept:
        store.keep_queue(catalogue.root, kept, actor)
        st.session_state[QUEUE_KEPT_KEY] = kept


def queue_for_review(catalogue: Catalogue, ids: list[int], source: str) -> None:
    """Make catalogue rows `ids` the Review page's queue and go there (from another page's finding)."""
    start_queue(catalogue, label_store().add_catalogue_items(catalogue, in_catalogue(catalogue, ids), person()),
                source)
    st.session_state[SOURCE_OPEN_KEY] = False
    pages.switch_to(pages.REVIEW)
