"""The review queue's rules, apart from the page: which catalogue rows come first, what each head
offers and starts at, which items a filter keeps, where the reviewer goes next, and which new
photos are accepted in bulk (and undone as a whole).

Shapes: `predictions` is an evaluation's predictions.parquet (id, per head `<head>_p`, the top
probability); `issues` is core.label_issues' ranking (id, head, score, is_issue, rank); `summary`
is LabelStore.summary (index item; status None (unreviewed) or a ReviewStatus;
corrected: the heads whose current value differs from the catalogue's); a `Proposal` is one
photo's top label and p per head (top_proposals).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.catalogue import Catalogue
from core.data.schema import OTHER_CLASS
from core.images import ImageRejected
from core.labelstore import Action, Item, ItemKind, LabelStore, ReviewStatus
from core.prediction import Predictor

# Filters over a queue, by name -> what they keep (given the summary row's status and corrected heads).
FILTERS = {
    "all": lambda status, corrected: True,
    "unreviewed": lambda status, corrected: status is None,
    "reviewed": lambda status, corrected: status == ReviewStatus.REVIEWED,
    "corrected": lambda status, corrected: bool(corrected),
    "skipped": lambda status, corrected: status == ReviewStatus.SKIPPED,
    "not a product": lambda status, corrected: status == ReviewStatus.NOT_PRODUCT,
}


def least_confident_ids(predictions: pd.DataFrame, heads: Sequence[str], limit: int) -> list[int]:
    """Ids ordered by their least confident head (the lowest top probability over `heads`), lowest first."""
    _check_limit(limit)
    missing = [f"{head}_p" for head in heads if f"{head}_p" not in predictions.columns]
    if missing:
        raise ValueError(f"the predictions have no column(s) {', '.join(missing)}")
    confidence = predictions[[f"{head}_p" for head in heads]].min(axis=1).to_numpy()
    order = np.argsort(confidence, kind="stable")[:limit]
    return predictions["id"].to_numpy()[order].astype(int).tolist()


def label_issue_ids(issues: pd.DataFrame, limit: int, flagged_only: bool = True,
                    heads: Collection[str] = ()) -> list[int]:
    """Ids in label-issue order (lowest label quality first, over `heads` or every head; an id once,
    at its worst)."""
    _check_limit(limit)
    rows = issues[issues["is_issue"]] if flagged_only else issues
    if heads:
        rows = rows[rows["head"].isin(list(heads))]
    ranked = rows.sort_values(["score", "rank"], kind="stable").drop_duplicates("id")
    return ranked["id"].astype(int).head(limit).tolist()


def add_photo_files(store: LabelStore, dataset: str | Path, paths: Sequence[Path], reviewer: str,
                    progress: Callable[[int, int], None] | None = None) -> tuple[list[Item], list[str]]:
    """Add each photo file to `dataset` as a new photo to review (LabelStore.add_image_file);
    returns (the items, in order; why each refused file was refused). progress(done, total)."""
    items, refused = [], []
    for done, path in enumerate(paths, 1):
        try:
            items.append(store.add_image_file(dataset, path, reviewer))
        except ImageRejected as error:
            refused.append(str(error))
        if progress is not None:
            progress(done, len(paths))
    return items, refused


def in_catalogue(catalogue: Catalogue, ids: Sequence[int]) -> list[int]:
    """`ids` (in order) that the catalogue holds: a ranking made earlier may name rows since removed."""
    known = set(catalogue.frame["id"].tolist())
    return [product_id for product_id in ids if product_id in known]


def choices(classes: Sequence[str], catalogue_values: Collection[str], current: str | None) -> list[str]:
    """What a head offers: the run's classes and the catalogue's values, sorted, without OTHER_CLASS
    (a bucket of rare classes, not a label to write), plus the item's current value."""
    offered = {str(value) for value in (*classes, *catalogue_values) if value is not None and value != OTHER_CLASS}
    if current is not None:
        offered.add(current)
    return sorted(offered, key=str.casefold)


def proposed_label(guesses: Sequence[tuple[str, float]], current: str | None, reviewed: bool,
                   offered: Collection[str]) -> str | None:
    """Where a head's choice starts: the decided value once reviewed; otherwise the model's best
    guess that is an offered label (OTHER_CLASS is not), else the current value."""
    if reviewed:
        return current
    return next((label for label, _ in guesses if label in offered), current)


def filter_items(summary: pd.DataFrame, which: str, corrected_in: Collection[str] = ()) -> list[int]:
    """Items of `summary` (in its order) that filter `which` keeps and, with `corrected_in`, that
    were corrected in at least one of those heads."""
    if which not in FILTERS:
        raise ValueError(f"unknown filter {which!r}; choose one of {', '.join(FILTERS)}")
    keep = FILTERS[which]
    wanted = set(corrected_in)
    statuses = summary["status"].astype(object).where(summary["status"].notna(), None)  # NaN or NA -> None
    return [int(item) for item, status, corrected in zip(summary.index, statuses, summary["corrected"])
            if keep(status, corrected) and (not wanted or wanted & set(corrected))]


def reviewed_count(summary: pd.DataFrame) -> int:
    """Items with a decision (reviewed, skipped or not a product)."""
    return int(summary["status"].notna().sum())


def next_item(order: Sequence[int], current: int | None, step: int = 1) -> int | None:
    """The item `step` places after `current` in `order` (None past either end); from an item not
    in `order`, the first one."""
    if not order:
        return None
    if current not in order:
        return order[0]
    position = list(order).index(current) + step
    return order[position] if 0 <= position < len(order) else None


Proposal = dict[str, tuple[str, float]]  # head -> the model's top label and its p


def top_proposals(predictor: Predictor, photos: Mapping[int, str | Path], batch_size: int = 32) -> dict[int, Proposal | str]:
    """Per item of `photos` (item -> its photo, in order): each head's top label and p, or the
    reason the photo could not be read."""
    results = predictor.iter_predict_files(list(photos.values()), top_k=1, batch_size=batch_size)
    return {item: result.error if result.error is not None else {
                head: (guesses[0].label, guesses[0].p) for head, guesses in result.predictions.items()}
            for item, result in zip(photos, results)}


def least_sure(proposal: Proposal) -> float | None:
    """How sure the model is of a whole photo: its lowest top p over the heads; None when a head's
    top label is OTHER_CLASS (a bucket of rare classes, never a label to accept) or there is none."""
    if not proposal or any(label == OTHER_CLASS for label, _ in proposal.values()):
        return None
    return min(p for _, p in proposal.values())


def sure_enough(proposal: Proposal, threshold: float) -> bool:
    """Whether bulk acceptance takes `proposal`: every head's top label is a real label with p >= threshold."""
    least = least_sure(proposal)
    return least is not None and least >= threshold


@dataclass(frozen=True)
class BulkAcceptance:
    """What accept_confident did, by item id, in the order given."""

    accepted: list[int]  # reviewed with the model's top label in every head
    actions: list[str]  # their store actions' ids, in the same order (undo_bulk takes them)
    unsure: list[int]  # some head under the threshold (or the rare-class bucket): left for a person
    unreadable: list[int]  # the photo could not be read: left as it was
    threshold: float


def open_proposals(store: LabelStore, items: Sequence[Item], proposals: Mapping[int, Proposal | str]
                   ) -> dict[int, Proposal | str]:
    """The proposals bulk acceptance considers, in `items` order: those of new photos (external
    items) without a status. A confident model that disagrees with a catalogue row is a label
    issue for a person to see, not to accept in bulk; an item decided since its proposal was made
    keeps that decision. A str proposal: the photo could not be read."""
    current = store.current([item.item for item in items])
    return {item.item: proposals[item.item] for item in items
            if item.kind == ItemKind.EXTERNAL and current[item.item]["status"] is None and item.item in proposals}


def bulk_preview(store: LabelStore, items: Sequence[Item], proposals: Mapping[int, Proposal | str],
                 threshold: float) -> tuple[int, int]:
    """(how many photos accept_confident would accept now, of how many open, readable ones)."""
    readable = [proposal for proposal in open_proposals(store, items, proposals).values()
                if not isinstance(proposal, str)]
    return sum(sure_enough(proposal, threshold) for proposal in readable), len(readable)


def accept_confident(store: LabelStore, items: Sequence[Item], proposals: Mapping[int, Proposal | str],
                     threshold: float, reviewer: str, run_id: str | None = None) -> BulkAcceptance:
    """Review, as proposed, each of the `open_proposals` that is `sure_enough` at `threshold`
    (0..1): one store.review each, logged as accepted predictions with `run_id` and p, and
    undoable like any other decision."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a probability between 0 and 1, got {threshold!r}")
    accepted, actions, unsure, unreadable = [], [], [], []
    for item, proposal in open_proposals(store, items, proposals).items():
        if isinstance(proposal, str):
            unreadable.append(item)
        elif sure_enough(proposal, threshold):
            action = store.review(item, {head: label for head, (label, _) in proposal.items()}, reviewer,
                                  run_id=run_id, predicted=proposal)
            accepted.append(item)
            actions.append(action.action)
        else:
            unsure.append(item)
    return BulkAcceptance(accepted, actions, unsure, unreadable, float(threshold))


def undo_bulk(store: LabelStore, reviewer: str, actions: Collection[str]) -> list[Action]:
    """Undo `reviewer`'s latest actions while each is one of a bulk acceptance's `actions`
    (BulkAcceptance.actions), latest first; stops at any other action, which comes first.
    Returns the actions undone, latest first."""
    pending, undone = set(actions), []
    while (latest := store.undoable(reviewer)) is not None and latest.action in pending:
        store.undo_last(reviewer)
        pending.discard(latest.action)
        undone.append(latest)
    return undone


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")
