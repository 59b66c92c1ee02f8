"""The review queue's rules, apart from the page: which catalogue rows come first, what each head
offers and starts at, which items a filter keeps, where the reviewer goes next, and which heads of
new photos are accepted in bulk (and undone as a whole).

Shapes: `predictions` is an evaluation's predictions.parquet (id, per head `<head>_p`, the top
probability); `issues` is core.evaluation.label_issues' ranking (id, head, score, is_issue, rank); `summary`
is LabelStore.summary (index item; status None (unreviewed) or a ReviewStatus;
corrected: the heads whose current value differs from the catalogue's); a `Proposal` is one
photo's proposed label and confidence per head (top_proposals, through the run's trust layer).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.access.roles import AccessDenied, Actor, Permission, require_folder
from core.data import HEADS
from core.data.catalogue import Catalogue
from core.data.schema import OTHER_CLASS
from core.data.split import id_uniform
from core.images.reading import ACCEPTED_EXTENSIONS, ImageRejected, expand_paths
from core.labels.checks import catalogue_value
from core.labels.store import LabelStore
from core.labels.tables import Action, Item, ItemKind, ReviewStatus
from core.trust.abstention import TARGET_ERROR
from core.trust.sources import AUDIT_SHARE, HeadRule, audit_draw

_GOLD_SALT = 0x676f6c64  # "gold": where gold items go in a queue, independent of the other hashed draws

if TYPE_CHECKING:  # the predictor brings torch: the queues load with the dashboard, torch-free
    from core.model.predictor import Predictor

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


def taxonomy_issue_ids(broken: pd.DataFrame, limit: int, heads: Collection[str] = ()) -> list[int]:
    """Ids of the rows that break the taxonomy (core.trust.taxonomy.Taxonomy.violations), each once, in
    its order; with `heads`, only rows breaking a relation one of those heads is part of."""
    _check_limit(limit)
    if heads:
        broken = broken[broken["head"].isin(list(heads)) | broken["parent_head"].isin(list(heads))]
    return broken["id"].drop_duplicates().astype(int).head(limit).tolist()


def load_photo_folder(store: LabelStore, dataset: str | Path, folder: str, actor: Actor,
                      progress: Callable[[int, int], None] | None = None) -> tuple[list[Item], list[str]]:
    """Add the photos of a folder on the server to `dataset` as new photos to review, by `actor`
    (an admin: Permission.LOAD_FOLDER, a folder under their roots, core.access.roles.FolderRefused
    otherwise), their source (core.trust.sources) the folder's name unless they came before;
    returns add_photo_files'. ValueError naming the folder when it is not one or holds no photo."""
    path = require_folder(actor, Permission.LOAD_FOLDER, folder)
    if not path.is_dir():
        raise ValueError(f"not a folder: {folder}")
    paths = expand_paths([path])
    if not paths:
        raise ValueError(f"{folder} holds no {', '.join(ACCEPTED_EXTENSIONS)} files")
    items, refused = add_photo_files(store, dataset, paths, actor, progress)
    store.set_source([item.item for item in items], path.name or str(path), actor)
    return store.items([item.item for item in items]), refused


def add_photo_files(store: LabelStore, dataset: str | Path, paths: Sequence[Path], actor: Actor,
                    progress: Callable[[int, int], None] | None = None) -> tuple[list[Item], list[str]]:
    """Add each photo file to `dataset` as a new photo to review, by `actor`
    (LabelStore.add_image_file); returns (the items, in order; why each refused file was refused:
    unreadable, or a link out of the actor's roots). progress(done, total)."""
    items, refused = [], []
    for done, path in enumerate(paths, 1):
        try:
            items.append(store.add_image_file(dataset, path, actor))
        except (ImageRejected, AccessDenied) as error:
            refused.append(str(error))
        if progress is not None:
            progress(done, len(paths))
    return items, refused


def in_catalogue(catalogue: Catalogue, ids: Sequence[int]) -> list[int]:
    """`ids` (in order) that the catalogue holds: a ranking made earlier may name rows since removed."""
    known = set(catalogue.frame["id"].tolist())
    return [product_id for product_id in ids if product_id in known]


def label_changes(store: LabelStore, catalogue: Catalogue, ids: Sequence[int], head: str,
                  value: str | None) -> list[int]:
    """Of catalogue rows `ids`, those a bulk edit setting `head` to `value` would change: their
    current value (a decision in the store, else the catalogue's) is another."""
    decided = {item.product_id: values[head] for item, values in store.dataset_state(catalogue.root)
               if item.kind == ItemKind.CATALOGUE}
    catalogue_values = dict(zip(catalogue.frame["id"].tolist(), catalogue.frame[head].tolist()))
    return [product_id for product_id in ids
            if (decided[product_id] if product_id in decided else catalogue_value(catalogue_values.get(product_id)))
            != value]


def choices(classes: Sequence[str], catalogue_values: Collection[str], current: str | None) -> list[str]:
    """What a head offers: the run's classes and the catalogue's values, sorted, without OTHER_CLASS
    (a bucket of rare classes, not a label to write), plus the item's current value."""
    offered = {str(value) for value in (*classes, *catalogue_values) if value is not None and value != OTHER_CLASS}
    if current is not None:
        offered.add(current)
    return sorted(offered, key=str.casefold)


def shown_label(guesses: Sequence[tuple[str, float]], current: str | None, reviewed: bool,
                offered: Collection[str]) -> str | None:
    """Where a head's choice starts, so that saving what is shown never changes a label by
    accident: the current value (the catalogue's, or a decision) whenever there is one, and once
    reviewed; only a head with no value yet (a new photo's) starts at the model's best guess that
    is an offered label (OTHER_CLASS is not)."""
    if current is not None or reviewed:
        return current
    return next((label for label, _ in guesses if label in offered), None)


def disagreement(guesses: Sequence[tuple[str, float]], shown: str | None) -> tuple[str, float] | None:
    """The model's proposal (its first guess) when it differs from the label shown and is a real
    label (not OTHER_CLASS), else None."""
    if not guesses or guesses[0][0] == shown or guesses[0][0] == OTHER_CLASS:
        return None
    return guesses[0]


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


Proposal = dict[str, tuple[str, float]]  # head -> the model's proposed label and its confidence


@dataclass(frozen=True)
class PhotoProposal:
    """A new photo's proposal, and whether it is like the photos the run's thresholds were certified
    on (core.trust.typicality): of a photo unlike them no gated head is accepted without a person."""

    heads: Proposal
    typical: bool = True
    typicality: float | None = None  # the gate's score; None without a gate


Rules = Mapping[str, HeadRule]  # head -> how it is accepted with no person (core.trust.sources.head_rules)


def gated_rules(thresholds: Mapping[str, float | None]) -> dict[str, HeadRule]:
    """Rules from a run's thresholds alone (head -> lowest confidence accepted, None: never), of
    photos the typicality gate lets through: what a source without its own certification gets."""
    return {head: HeadRule(threshold, True, "certified on the run's validation photos; only photos like them"
                           if threshold is not None else "not certified on the run's validation photos: a person "
                                                         "decides")
            for head, threshold in thresholds.items()}


@dataclass(frozen=True)
class SourcePolicy:
    """How bulk acceptance treats each source's photos (Item.source): its heads' rules and its
    audit share; a source not named gets `default` and `default_share`. A source in `trials` has
    every photo go to a person, and those rules are tried on them as audits (core.trust.sources)."""

    rules: Mapping[str, Rules] = field(default_factory=dict)
    default: Rules = field(default_factory=dict)
    audit_shares: Mapping[str, float] = field(default_factory=dict)
    default_share: float = AUDIT_SHARE
    trials: Mapping[str, Rules] = field(default_factory=dict)
    target_error: float = TARGET_ERROR  # the error the rules were certified at, recorded with each audit

    @classmethod
    def everywhere(cls, thresholds: Mapping[str, float | None], audit_share: float = AUDIT_SHARE,
                   target_error: float = TARGET_ERROR) -> SourcePolicy:
        """The run's gated thresholds (certified at `target_error`) for every source, at one audit share."""
        return cls(default=gated_rules(thresholds), default_share=audit_share, target_error=target_error)

    def rules_of(self, item: Item) -> Rules:
        return self.rules_for(item.source)

    def rules_for(self, source: str | None) -> Rules:
        """The rules of a source's photos; `default` for a source not named (None: no source)."""
        return self.rules.get(source, self.default)

    def trial_of(self, item: Item) -> Rules:
        """The rules tried as audits on `item`'s source while a person decides all its photos ({} else)."""
        return self.trials.get(item.source, {})

    def audited(self, item: Item) -> bool:
        """Whether `item` is drawn for an audit at its source's share (core.trust.sources.audit_draw)."""
        return bool(audit_draw([item.item], self.audit_shares.get(item.source, self.default_share))[0])


def top_proposals(predictor: Predictor, photos: Mapping[int, str | Path],
                  batch_size: int = 32) -> dict[int, PhotoProposal | str]:
    """Per item of `photos` (item -> its photo, in order): each head's proposal and its
    confidence with the gate's verdict, or the reason the photo could not be read."""
    results = predictor.iter_predict_files(list(photos.values()), top_k=1, batch_size=batch_size)
    return {item: result.error if result.error is not None else PhotoProposal(
                {head: (guesses[0].label, guesses[0].p) for head, guesses in result.predictions.items()},
                result.typical, None if result.typicality is None else float(result.typicality[0]))
            for item, result in zip(photos, results)}


def sure_heads(proposal: PhotoProposal, rules: Rules) -> dict[str, tuple[str, float, float]]:
    """The heads of `proposal` that need no person under `rules`: confidence at or above the head's
    threshold, of a photo the gate lets through where the rule is gated, and a real label
    (OTHER_CLASS is a bucket of rare classes, never a label to accept); head -> (label,
    confidence, the threshold it met)."""
    sure = {}
    for head, (label, p) in proposal.heads.items():
        rule = rules.get(head)
        if (rule is not None and rule.threshold is not None and label != OTHER_CLASS and p >= rule.threshold
                and (proposal.typical or not rule.gated)):
            sure[head] = (label, p, rule.threshold)
    return sure


@dataclass(frozen=True)
class OpenPhoto:
    """A new photo bulk acceptance considers: its proposal, and the heads still without a label."""

    item: Item
    proposal: PhotoProposal | str  # str: the photo could not be read
    undecided: tuple[str, ...]

    def sure_under(self, rules: Rules) -> dict[str, tuple[str, float, float]]:
        """`sure_heads` of its (readable) proposal under `rules`, of the heads still undecided."""
        return {head: guess for head, guess in sure_heads(self.proposal, rules).items() if head in self.undecided}


def open_photos(store: LabelStore, items: Sequence[Item],
                proposals: Mapping[int, PhotoProposal | str]) -> list[OpenPhoto]:
    """The new photos (external items) of `items`, in order, that are unreviewed and have a
    proposal. A confident model that disagrees with a catalogue row is a label issue for a person
    to see, not to accept in bulk; a head decided since (by a person or an earlier acceptance)
    keeps that decision."""
    current = store.current([item.item for item in items])
    return [OpenPhoto(item, proposals[item.item], tuple(head for head, value in current[item.item].items()
                                                         if head in HEADS and value is None))
            for item in items
            if item.kind == ItemKind.EXTERNAL and current[item.item]["status"] is None and item.item in proposals]


@dataclass(frozen=True)
class BulkPreview:
    """What accept_confident would do now: head decisions taken of those open, photos completed."""

    heads_accepted: int
    heads_open: int  # undecided heads of the open, readable photos
    photos_complete: int  # photos whose every open head would be accepted
    photos_open: int
    photos_unlike: int  # open photos unlike the calibration photos: their gated heads for a person
    photos_reviewed_whole: int = 0  # open photos of sources whose every photo goes to a person (SourcePolicy.trials)

    @property
    def heads_left(self) -> int:
        """Head decisions left for a person."""
        return self.heads_open - self.heads_accepted


def bulk_preview(store: LabelStore, items: Sequence[Item], proposals: Mapping[int, PhotoProposal | str],
                 policy: SourcePolicy) -> BulkPreview:
    """What accept_confident would accept, audits aside (they are not announced)."""
    readable = [photo for photo in open_photos(store, items, proposals) if not isinstance(photo.proposal, str)]
    taken = [set(photo.sure_under(policy.rules_of(photo.item))) for photo in readable]
    return BulkPreview(sum(map(len, taken)), sum(len(photo.undecided) for photo in readable),
                       sum(heads == set(photo.undecided) for heads, photo in zip(taken, readable)), len(readable),
                       sum(not photo.proposal.typical for photo in readable),
                       sum(bool(policy.trial_of(photo.item)) for photo in readable))


@dataclass(frozen=True)
class BulkAcceptance:
    """What accept_confident did, by item id, in the order given."""

    batch: str  # the log's batch id of every acceptance it wrote (LabelStore.undo_batch)
    completed: list[int]  # every head now labelled: reviewed
    partial: list[int]  # some heads accepted, the others wait for a person
    actions: list[str]  # the store actions of both, in order
    untouched: list[int]  # no head sure enough, or drawn for an audit: a person decides
    unreadable: list[int]  # the photo could not be read: left as it was
    heads_accepted: int
    heads_left: int  # for a person
    audited: list[int] = field(default_factory=list)  # left for a person as an audit (core.trust.sources)


def accept_confident(store: LabelStore, items: Sequence[Item], proposals: Mapping[int, PhotoProposal | str],
                     policy: SourcePolicy, actor: Actor, run_id: str | None = None) -> BulkAcceptance:
    """For each of the `open_photos`, accept every undecided head that is `sure_heads` under its
    source's rules (`policy`): one LabelStore.auto_accept per photo (logged as the model's, with
    `run_id`, each head's confidence and threshold, the photo's typicality, and one batch id for
    all), the photo reviewed once no head is left. A photo drawn for an audit at its source's share
    (none without a `run_id`) is left for a person instead, unannounced, and what would have been
    accepted is recorded."""
    batch = uuid.uuid4().hex
    completed, partial, actions, untouched, unreadable, audited, accepted, left = [], [], [], [], [], [], 0, 0
    photos = open_photos(store, items, proposals)
    for photo in photos:
        if isinstance(photo.proposal, str):
            unreadable.append(photo.item.item)
            continue
        sure = photo.sure_under(policy.rules_of(photo.item))
        # What would be accepted: the rules', or while a person decides every photo of the source, its trial rules'.
        would = sure or photo.sure_under(policy.trial_of(photo.item))
        if would and run_id is not None and policy.audited(photo.item):
            store.add_audit(photo.item.item, would, photo.proposal.typicality, run_id, batch, policy.target_error)
            audited.append(photo.item.item)
            sure = {}
        accepted, left = accepted + len(sure), left + len(photo.undecided) - len(sure)
        if not sure:
            untouched.append(photo.item.item)
            continue
        complete = set(sure) == set(photo.undecided)
        action = store.auto_accept(photo.item.item, sure, photo.proposal.typicality, actor, run_id or "", batch,
                                   complete)
        (completed if complete else partial).append(photo.item.item)
        actions.append(action.action)
    return BulkAcceptance(batch, completed, partial, actions, untouched, unreadable, accepted, left, audited)


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")


HISTORY_TABLE_COLUMNS = ["when (UTC)", "reviewer", "field", "old", "new", "what", "model proposed", "run"]
_WHAT = {"accept": "kept or took the proposal", "correct": "corrected", "new_value": "a new value",
         "review": "reviewed", "skip": "skipped", "not_product": "not a product", "undo": "undone"}


def history_table(history: pd.DataFrame) -> pd.DataFrame:
    """An item's history (LabelStore.history) as a person reads it, oldest first: the time to the
    second, who, which field and its change, what the decision was, the model's proposal with its
    p, and the run; the store's sequence and action ids left out."""
    proposed = [f"{label} ({p:.2f})" if label is not None and pd.notna(p) else (label or "")
                for label, p in zip(history["predicted"], history["p"])]
    return pd.DataFrame({
        "when (UTC)": history["at"].str.slice(0, 19).str.replace("T", " "), "reviewer": history["reviewer"],
        "field": history["field"], "old": history["old"], "new": history["new"],
        "what": history["kind"].map(_WHAT).fillna(history["kind"]), "model proposed": proposed,
        "run": history["run_id"].fillna(""),
    }, columns=HISTORY_TABLE_COLUMNS)


def undo_choices(actions: Sequence[Action], actor: Actor) -> dict[str, str]:
    """Of an item's open actions (LabelStore.open_actions, newest first), those `actor` may undo
    (their own; anyone's with Permission.UNDO_ANY), as {action id: one line saying when, who and
    what}; the label store checks it again when one is undone."""
    return {
        action.action: f"{action.at[:19].replace('T', ' ')} · {action.reviewer} · {action.kind}: "
                       + ", ".join(f"{field} {old or '–'} → {new or '–'}"
                                   for field, (old, new) in action.changes.items())
        for action in actions if action.reviewer == actor.identity or actor.may(Permission.UNDO_ANY)
    }


def with_gold(items: Sequence[int], gold: Sequence[int], share: float, seen: Collection[int] = ()) -> list[int]:
    """`items` with gold items mixed in at `share`, each gold item once, none already in `items` or
    `seen` (decided by this reviewer before); `items` unchanged at share 0 or without gold.

    Systematic sampling, so that the share holds on average whatever the queue's length: a gold item
    follows the i-th item (from 1) where i * share + u passes a whole number, u in [0, 1) drawn by a
    hash of the queue's first item. A queue of n items gets floor(n * share + u) gold items, n * share
    on average: a queue of 3 at 10 % gets one in 3 draws of 10, never one rounded up every time. Each
    goes to a place in its stretch (since the gold item before) drawn by a hash of it, so that it
    looks like any other."""
    fresh = [item for item in dict.fromkeys(gold) if item not in set(items) | set(seen)]
    if not share or not fresh or not items:
        return list(items)
    start = float(id_uniform(np.array([items[0]]), _GOLD_SALT)[0])
    mixed, extra, stretch = [], iter(fresh), 0
    for position, item in enumerate(items, 1):
        mixed.append(item)
        stretch += 1
        if math.floor(position * share + start) > math.floor((position - 1) * share + start):
            gold_item = next(extra, None)
            if gold_item is not None:
                place = int(id_uniform(np.array([gold_item]), _GOLD_SALT)[0] * stretch)  # 0: after the stretch
                mixed.insert(len(mixed) - place, gold_item)
                stretch = 0
    return mixed
