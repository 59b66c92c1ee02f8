"""The durable label store: reviewers' corrections to a catalogue's labels, with their history
(core.labels.corrections applies them to a catalogue and exports it).

Its tables (and the Item and Action records it returns) are in core.labels.tables, its input checks
in core.labels.checks; uploaded photos go under the workspace it is given (core.labels.uploads).

Every write is one transaction that first locks the item's review_items row (SELECT ... FOR
UPDATE; SQLite's BEGIN IMMEDIATE serialises all writers anyway), then reads the current values,
appends log rows and updates current_labels. So writers of one item are serialised and, for each
(item, field) in seq order, every row's old is the previous row's new (the first row's old is the
baseline) and current_labels holds the last row's new: no update is ever lost. A reviewer's
answer on a gold item (answer_gold) writes neither: it goes to gold_answers, append-only.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Row

from core.access.database import create_tables, database_url, db_engine, dialect_insert, read_only, upsert
from core.access.roles import Actor, Permission, require, require_folder
from core.data import HEADS
from core.data.catalogue import Catalogue, DatasetKey
from core.images.reading import ImageRejected, read_image_checked
from core.labels.checks import catalogue_value, check_heads, check_id, check_prediction, clean_label
from core.labels.tables import (
    DEFAULT_SOURCES,
    EXTERNAL_ID_BASE,
    STATUS,
    Action,
    ActionKind,
    Batch,
    Item,
    ItemKind,
    LogKind,
    ReviewStatus,
    SavedQueue,
    audits_table,
    current_table,
    gold_answers_table,
    gold_table,
    items_table,
    log_table,
    metadata,
    queues_table,
    undone_actions,
)
from core.labels.uploads import display_name, store_upload
from core.trust.abstention import check_target
from core.trust.sources import check_source
from core.untrusted import check_typed

_MARKS = {ReviewStatus.SKIPPED: (LogKind.SKIP, ActionKind.SKIP),
          ReviewStatus.NOT_PRODUCT: (LogKind.NOT_PRODUCT, ActionKind.NOT_PRODUCT)}  # what `mark` logs
MAX_FILTER_CHARS, MAX_SOURCE_CHARS = 32, 1_000  # a queue's filter name and its source's description
_CHUNK = 5_000  # ids per IN (...) list: under SQLite's and PostgreSQL's bound-parameter limits
HISTORY_COLUMNS = (
    "seq", "action", "at", "reviewer", "field", "old", "new", "kind", "run_id", "predicted", "p", "undoes", "seconds",
)
LOG_COLUMNS = (
    "seq", "at", "reviewer", "product_id", "name", "field", "old", "new", "kind", "run_id", "predicted", "p",
    "action", "undoes",
)


Accepted = Mapping[str, tuple[str, float, float]]  # head -> the model's label, its confidence, the threshold it met


class UndoConflict(RuntimeError):
    """An undo would overwrite a later change by someone else; the message names the field and who."""


class LabelStore:
    """Reviewers' labels of datasets, durable in the workspace database. Every method is one
    transaction; one that writes raises core.access.database.DatabaseBusy when another process holds the
    lock too long (nothing written), one that only reads never waits for a writer.

    Every write is by an `actor` (core.access.roles.Actor), whose identity the rows record; it raises
    core.access.roles.AccessDenied, writing nothing, when the actor's role does not allow it: writing
    needs Permission.REVIEW (a viewer writes nothing), undoing another person's action
    Permission.UNDO_ANY, adding a photo file from the server Permission.LOAD_FOLDER and a path
    under the actor's roots.

    Uploaded photos are stored under `workspace` (<workspace>/uploads, never the current folder);
    the database is `db_url`, else core.access.database.database_url(workspace): FASHION_TAGGER_DB_URL,
    else the workspace's SQLite file."""

    def __init__(self, *, workspace: Path, db_url: str | None = None) -> None:
        self.workspace = Path(workspace).resolve()  # items keep absolute paths to their uploads
        self.workspace.mkdir(parents=True, exist_ok=True)  # created on first use, as core.workspace.workspace_dir()
        self.engine = db_engine(db_url or database_url(self.workspace))
        self.reader = read_only(self.engine)  # reads never wait for a writer
        create_tables(self.engine, metadata)

    # --- items -------------------------------------------------------------------------------

    def add_catalogue_items(self, catalogue: Catalogue, ids: Iterable[int], actor: Actor) -> list[Item]:
        """The items of catalogue products `ids`, in that order, added by `actor` when new (their
        baseline: the catalogue row's HEADS); adding again returns the existing items unchanged."""
        require(actor, Permission.REVIEW)
        added_by = actor.identity
        ids = [check_id(product_id) for product_id in ids]
        rows = catalogue.frame[catalogue.frame["id"].isin(set(ids))]
        unknown = sorted(set(ids) - set(rows["id"].tolist()))
        if unknown:
            raise ValueError(f"product id(s) not in the catalogue {catalogue.root}: {_some(unknown)}")
        too_large = sorted(product_id for product_id in set(ids) if product_id >= EXTERNAL_ID_BASE)
        if too_large:  # that range names external images in exports
            raise ValueError(
                f"product id(s) {_some(too_large)} collide with external image ids (>= {EXTERNAL_ID_BASE:,})"
            )
        dataset, now = DatasetKey.of(catalogue), _now()
        new_rows = [
            {
                "dataset": dataset, "kind": ItemKind.CATALOGUE, "product_id": product_id,
                "file": str(catalogue.image_path(product_id)), "name": f"{product_id}.jpg", "sha256": None,
                "baseline": json.dumps({head: catalogue_value(record[head]) for head in HEADS}),
                "added": now, "added_by": added_by,
            }
            for product_id, record in zip(rows["id"].tolist(), rows.to_dict("records"))
        ]
        found: dict[int, Item] = {}
        with self.engine.begin() as connection:
            for chunk in _chunks(new_rows):
                _insert_ignore(connection, chunk, ("dataset", "product_id"))
            for chunk in _chunks(sorted(set(ids))):
                query = select(items_table).where(items_table.c.dataset == dataset, items_table.c.product_id.in_(chunk))
                found.update((row.product_id, _item(row)) for row in connection.execute(query))
        return [found[product_id] for product_id in ids]

    def add_image(self, dataset: str | Path | Catalogue, data: bytes, name: str, actor: Actor) -> Item:
        """An external image (the bytes of an upload) as an item of `dataset`, unlabelled, added by `actor`.

        The image is checked first (ImageRejected, nothing written); its copy is stored as
        <workspace>/uploads/<sha256>.<ext of its format>, whatever `name` says: the name is only
        kept, sanitised, for display. The same bytes added to the same dataset again give the same item.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        require(actor, Permission.REVIEW)
        data, display, added_by = bytes(data), display_name(name), actor.identity
        dataset = DatasetKey.of(dataset)
        read_image_checked(data, display)
        digest = hashlib.sha256(data).hexdigest()
        path = store_upload(self.workspace, data, digest)
        row = {
            "dataset": dataset, "kind": ItemKind.EXTERNAL, "product_id": None, "file": str(path), "name": display,
            "sha256": digest, "baseline": json.dumps(dict.fromkeys(HEADS)), "added": _now(), "added_by": added_by,
        }
        where = (items_table.c.dataset == dataset, items_table.c.sha256 == digest)
        with self.engine.begin() as connection:
            _insert_ignore(connection, [row], ("dataset", "sha256"))
            item = connection.execute(select(items_table.c.item).where(*where)).scalar_one()
            connection.execute(
                update(items_table).where(items_table.c.item == item, items_table.c.product_id.is_(None))
                .values(product_id=EXTERNAL_ID_BASE + item)
            )
            return _item(connection.execute(select(items_table).where(items_table.c.item == item)).one())

    def add_image_file(self, dataset: str | Path | Catalogue, path: str | Path, actor: Actor) -> Item:
        """add_image with the bytes of the file at `path`, its file name as the display name: a file
        on the server, so `actor` needs Permission.LOAD_FOLDER and the path must lie under their
        roots (core.access.roles.FolderRefused otherwise, whether the file exists or not)."""
        require_folder(actor, Permission.LOAD_FOLDER, path)
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ImageRejected(f"{path}: cannot read the file ({err.strerror or err})") from err
        return self.add_image(dataset, data, path.name, actor)

    def items(self, item_ids: Iterable[int]) -> list[Item]:
        """The items `item_ids`, in that order; KeyError naming unknown ids."""
        item_ids = [check_id(item, "item") for item in item_ids]
        with self.reader.begin() as connection:
            return [found for found, _ in self._state(connection, item_ids)]

    def set_source(self, item_ids: Iterable[int], source: str, actor: Actor) -> None:
        """Name the source the items `item_ids` arrived in (a folder's name, an upload batch) where
        none is set yet: a photo keeps the source it first came in, whose promise covers it
        (core.trust.sources). The name is text a person types (core.untrusted.check_typed)."""
        require(actor, Permission.REVIEW)
        source = check_source(source)
        check_typed(source, "the source's name")
        item_ids = sorted({check_id(item, "item") for item in item_ids})
        with self.engine.begin() as connection:
            for chunk in _chunks(item_ids):
                connection.execute(update(items_table).where(items_table.c.item.in_(chunk),
                                                             items_table.c.source.is_(None)).values(source=source))

    def dataset_items(self, dataset: str | Path | Catalogue, kind: ItemKind | None = None) -> list[Item]:
        """Every item of `dataset` (of `kind`, when given), in the order added."""
        if kind is not None and kind not in tuple(ItemKind):
            raise ValueError(f"kind must be one of {', '.join(ItemKind)} or None, got {kind!r}")
        query = select(items_table).where(items_table.c.dataset == DatasetKey.of(dataset)).order_by(items_table.c.item)
        if kind is not None:
            query = query.where(items_table.c.kind == kind)
        with self.reader.begin() as connection:
            return [_item(row) for row in connection.execute(query)]

    # --- labels ------------------------------------------------------------------------------

    def current(self, item_ids: Iterable[int]) -> dict[int, dict[str, str | None]]:
        """item -> every FIELDS key: the current value (the baseline where never written; STATUS None)."""
        item_ids = [check_id(item, "item") for item in item_ids]
        with self.reader.begin() as connection:
            return {found.item: values for found, values in self._state(connection, item_ids)}

    def review(
        self,
        item: int,
        labels: Mapping[str, str | None],
        actor: Actor,
        run_id: str | None = None,
        predicted: Mapping[str, tuple[str, float]] | None = None,
        new_values: Collection[str] = (),
        complete: bool = True,
        seconds: float | None = None,
    ) -> Action:
        """Record `actor`'s labels of `item` and, when `complete`, mark it reviewed.

        One log row per head in `labels`: NEW_VALUE for the heads in `new_values` (a value the
        schema did not know), else ACCEPT when the label keeps the current value or takes the
        model's prediction (predicted[head][0]), else CORRECT. `run_id`, the predicted label and
        its probability are kept on the rows, and `seconds`, how long the item was shown before this
        decision (the effort a Team page measures). Then, when `complete`, STATUS -> REVIEWED;
        without it the item stays open for a person to decide its other heads (bulk acceptance of
        the heads the model is sure of).

        A label that changes a head's value is text a person may type (core.untrusted.check_typed:
        no control characters, no leading formula character, at most MAX_LABEL_CHARS); ValueError
        naming the rule otherwise, nothing written.
        """
        item, labels, predicted, new_values = _checked_decision(actor, item, labels, predicted, new_values, seconds)
        with self.engine.begin() as connection:
            _lock(connection, item)
            current = self._state(connection, [item])[0][1]
            rows = _decision_rows(current, labels, predicted, new_values, run_id, seconds)
            if complete:
                rows.append({"field": STATUS, "new": ReviewStatus.REVIEWED, "kind": LogKind.REVIEW, "run_id": run_id,
                             "seconds": seconds})
            return _append(connection, item, current, rows, actor.identity, ActionKind.REVIEW)

    def answer_gold(
        self,
        item: int,
        labels: Mapping[str, str | None],
        actor: Actor,
        run_id: str | None = None,
        predicted: Mapping[str, tuple[str, float]] | None = None,
        new_values: Collection[str] = (),
        seconds: float | None = None,
    ) -> Action:
        """Record `actor`'s labels of the gold item `item` as their answer (a shared queue's gold
        item, core.labels.team): checked, and kept or changed or typed, as `review` records them, in
        gold_answers, to be scored against the item's trusted labels. The catalogue is left as it
        was (no log row, no current label, no status), so that a wrong answer is never applied and
        every reviewer who gets the item is shown the same values and decides it in turn. Returns
        the action (its changes: each head's value shown -> the answer). ValueError naming the item
        when it is not gold (nothing written)."""
        item, labels, predicted, new_values = _checked_decision(actor, item, labels, predicted, new_values, seconds)
        with self.engine.begin() as connection:
            if connection.execute(select(gold_table.c.item).where(gold_table.c.item == item)).first() is None:
                raise ValueError(f"item {item} is not a gold item: a decision on it is a review")
            current = self._state(connection, [item])[0][1]
            rows = _decision_rows(current, labels, predicted, new_values, run_id, seconds)
            action, at = uuid.uuid4().hex, _now()
            if rows:
                connection.execute(insert(gold_answers_table),
                                   [{**row, "action": action, "item": item, "reviewer": actor.identity, "at": at}
                                    for row in rows])
        return Action(action=action, item=item, reviewer=actor.identity, at=at, kind=ActionKind.REVIEW,
                      changes={row["field"]: (current[row["field"]], row["new"]) for row in rows})

    def mark(self, item: int, status: ReviewStatus, actor: Actor, run_id: str | None = None) -> Action:
        """Mark `item` SKIPPED (look at it later) or NOT_PRODUCT (not a product photo: left out of exports)."""
        if status not in _MARKS:
            raise ValueError(f"status must be {ReviewStatus.SKIPPED!r} or {ReviewStatus.NOT_PRODUCT!r}, got {status!r}")
        log_kind, action_kind = _MARKS[status]
        require(actor, Permission.REVIEW)
        item = check_id(item, "item")
        with self.engine.begin() as connection:
            _lock(connection, item)
            current = self._state(connection, [item])[0][1]
            row = {"field": STATUS, "new": ReviewStatus(status), "kind": log_kind, "run_id": run_id}
            return _append(connection, item, current, [row], actor.identity, action_kind)

    def auto_accept(self, item: int, accepted: Accepted, typicality: float | None, actor: Actor, run_id: str,
                    batch: str, complete: bool) -> Action:
        """Write the heads the model decided with no person: one AUTO_ACCEPT log row per head of
        `accepted` (head -> label, confidence, the threshold it met), with `run_id`, the photo's
        `typicality` and the `batch` of acceptances it belongs to (undo_batch); STATUS -> REVIEWED
        too when `complete`. `actor` is who started the acceptance (Permission.REVIEW). A head
        decided since the proposal was made (its current value is set) is left as it is."""
        require(actor, Permission.REVIEW)
        item = check_id(item, "item")
        accepted = {head: (*check_prediction(head, guess[:2]), float(guess[2]))
                    for head, guess in check_heads(accepted, "accepted").items()}
        with self.engine.begin() as connection:
            _lock(connection, item)
            current = self._state(connection, [item])[0][1]
            rows = [{"field": head, "new": clean_label(head, label), "kind": LogKind.AUTO_ACCEPT, "run_id": run_id,
                     "predicted": label, "p": p, "threshold": threshold, "typicality": typicality, "batch": batch}
                    for head, (label, p, threshold) in accepted.items() if current[head] is None]
            if complete:
                rows.append({"field": STATUS, "new": ReviewStatus.REVIEWED, "kind": LogKind.AUTO_ACCEPT,
                             "run_id": run_id, "batch": batch})
            return _append(connection, item, current, rows, actor.identity, ActionKind.AUTO_ACCEPT)

    def add_audit(self, item: int, audited: Accepted, typicality: float | None, run_id: str, batch: str,
                  target_error: float) -> None:
        """Record that the heads `audited` (head -> label, confidence, threshold certified at
        `target_error`) of `item` would have been accepted and were left for a person instead
        (core.trust.sources): their decision will say whether the accepted tag would have been right."""
        item, at, target = check_id(item, "item"), _now(), check_target(target_error)
        rows = [{"batch": batch, "item": item, "field": head, "run_id": run_id, "predicted": str(label), "p": float(p),
                 "threshold": float(threshold), "target": target, "typicality": typicality, "at": at}
                for head, (label, p, threshold) in check_heads(audited, "audited").items()]
        if rows:
            with self.engine.begin() as connection:
                connection.execute(insert(audits_table), rows)

    def undo_batch(self, batch: str, actor: Actor) -> tuple[list[Action], list[str]]:
        """Undo every action of an auto-acceptance `batch` still in force, newest first: by the
        person who started it, or anyone with Permission.UNDO_ANY. Returns (the undo actions, one
        line per action kept because a person changed its photo since: their decision comes first)."""
        require(actor, Permission.REVIEW)
        undone = undone_actions()
        with self.reader.begin() as connection:
            targets = connection.execute(
                select(log_table.c.action, log_table.c.item, log_table.c.reviewer, func.max(log_table.c.seq))
                .where(log_table.c.batch == batch, log_table.c.action.not_in(undone))
                .group_by(log_table.c.action, log_table.c.item, log_table.c.reviewer)
                .order_by(func.max(log_table.c.seq).desc())
            ).all()
        if any(reviewer != actor.identity for _, _, reviewer, _ in targets):
            require(actor, Permission.UNDO_ANY)
        actions, kept = [], []
        for action, item, _, _ in targets:
            try:
                with self.engine.begin() as connection:
                    _lock(connection, item)
                    actions.append(self._undo(connection, action, item, actor))
            except UndoConflict as conflict:
                kept.append(str(conflict))
        return actions, kept
    def label_many(self, item_ids: Iterable[int], head: str, value: str | None, actor: Actor) -> Batch:
        """Set `head` to `value` on every item of `item_ids` that holds another value, as one bulk
        edit: one transaction, one action (a CORRECT row) per item changed, all sharing one batch id,
        so that undoing any of them (undo_last, undo_action) undoes the whole batch. The items stay
        as reviewed or unreviewed as they were: one head is not a review. `value` is checked as
        `review` checks a typed label; ValueError naming the rule, KeyError naming unknown items,
        nothing written."""
        require(actor, Permission.REVIEW)
        item_ids = list(dict.fromkeys(check_id(item, "item") for item in item_ids))
        value = clean_label(head, check_heads({head: value}, "labels")[head])
        if value is not None:
            check_typed(value, f"the {head} label")
        batch, changed, actions, unchanged = uuid.uuid4().hex, [], [], []
        with self.engine.begin() as connection:
            for item in sorted(item_ids):  # one order for every writer: two batches never deadlock
                _lock(connection, item)
            for found, current in self._state(connection, item_ids):
                if current[head] == value:
                    unchanged.append(found.item)
                    continue
                row = {"field": head, "new": value, "kind": LogKind.CORRECT, "batch": batch}
                action = _append(connection, found.item, current, [row], actor.identity, ActionKind.REVIEW)
                actions.append(action.action)
                changed.append(found.item)
        return Batch(batch if changed else "", head, value, tuple(changed), tuple(actions), tuple(unchanged))

    def undoable(self, actor: Actor) -> Action | None:
        """The action undo_last(actor) would undo now, or None."""
        require(actor, Permission.REVIEW)
        with self.reader.begin() as connection:
            candidate = _undo_candidate(connection, actor.identity)
            return None if candidate is None else _action(connection, candidate[0])

    def undo_last(self, actor: Actor) -> Action | None:
        """Undo `actor`'s latest action that is neither an undo nor undone already; return the undo.

        Appends "undo" rows restoring each field the action wrote (their `undoes` is its id), so
        calling again walks further back. UndoConflict, writing nothing, when someone changed one
        of those fields since (a later write not itself undone); None when there is nothing to undo.
        """
        require(actor, Permission.REVIEW)
        with self.engine.begin() as connection:
            while True:  # lock the candidate's items, then make sure it is still the candidate
                candidate = _undo_candidate(connection, actor.identity)
                if candidate is None:
                    return None
                targets = _with_batch(connection, *candidate)
                for item in sorted({item for _, item in targets}):
                    _lock(connection, item)
                if _undo_candidate(connection, actor.identity) == candidate:
                    break
            return [self._undo(connection, action, item, actor) for action, item in targets][-1]

    def undo_action(self, action: str, actor: Actor) -> Action:
        """Undo the given `action` (an Action's id), as undo_last does: one's own with
        Permission.REVIEW, another person's with Permission.UNDO_ANY (an admin); the undo rows
        record `actor`. KeyError for an unknown action, ValueError for an undo or an action undone
        already, UndoConflict when one of its fields was changed since."""
        require(actor, Permission.REVIEW)
        with self.engine.begin() as connection:
            first = connection.execute(
                select(log_table).where(log_table.c.action == action).order_by(log_table.c.seq).limit(1)
            ).first()
            if first is None:
                raise KeyError(f"no action {action!r} in the label store")
            if first.reviewer != actor.identity:
                require(actor, Permission.UNDO_ANY)
            targets = _with_batch(connection, action, first.item)
            for item in sorted({item for _, item in targets}):
                _lock(connection, item)
            if first.kind == LogKind.UNDO:
                raise ValueError(f"action {action} is an undo itself: decide again instead")
            if connection.execute(select(log_table.c.seq).where(log_table.c.undoes == action).limit(1)).first():
                raise ValueError(f"action {action} was undone already")
            undone = [self._undo(connection, other, item, actor) for other, item in targets]
            return next(found for found, (other, _) in zip(undone, targets) if other == action)

    def open_actions(self, item: int) -> list[Action]:
        """The actions on `item` that can still be undone (neither an undo nor undone), newest first."""
        item = check_id(item, "item")
        undone = undone_actions()
        with self.reader.begin() as connection:
            self._state(connection, [item])  # KeyError for an unknown item
            ids = connection.execute(
                select(log_table.c.action, func.max(log_table.c.seq).label("last"))
                .where(log_table.c.item == item, log_table.c.kind != LogKind.UNDO, log_table.c.action.not_in(undone))
                .group_by(log_table.c.action).order_by(func.max(log_table.c.seq).desc())
            ).scalars().all()
            return [_action(connection, action) for action in ids]

    def _undo(self, connection: Connection, target: str, item: int, actor: Actor) -> Action:
        """Append the undo of action `target` on the locked `item`, by `actor` (undo_last)."""
        undone = undone_actions()
        current = self._state(connection, [item])[0][1]
        rows = []
        written_rows = connection.execute(
            select(log_table).where(log_table.c.action == target).order_by(log_table.c.seq)
        ).all()
        for written in written_rows:
            later = connection.execute(
                select(log_table).where(
                    log_table.c.item == item, log_table.c.field == written.field, log_table.c.seq > written.seq,
                    log_table.c.kind != LogKind.UNDO, log_table.c.action.not_in(undone),
                ).order_by(log_table.c.seq.desc()).limit(1)
            ).first()
            if later is not None or current[written.field] != written.new:
                who = f"by {later.reviewer} at {later.at}" if later is not None else "by another write"
                raise UndoConflict(
                    f"cannot undo {written.reviewer}'s action on item {item}: its {written.field} was changed since "
                    f"{who} (now {current[written.field]!r}, was set to {written.new!r})"
                )
            rows.append({"field": written.field, "new": written.old, "kind": LogKind.UNDO, "undoes": target})
        return _append(connection, item, current, rows, actor.identity, ActionKind.UNDO)

    # --- reading -----------------------------------------------------------------------------

    def history(self, item: int) -> pd.DataFrame:
        """Every log row of `item`, oldest first; columns HISTORY_COLUMNS."""
        item = check_id(item, "item")
        with self.reader.begin() as connection:
            self._state(connection, [item])  # KeyError for an unknown item
            rows = connection.execute(
                select(*(log_table.c[column] for column in HISTORY_COLUMNS))
                .where(log_table.c.item == item).order_by(log_table.c.seq)
            ).all()
        return _frame(rows, HISTORY_COLUMNS)

    def summary(self, item_ids: Iterable[int]) -> pd.DataFrame:
        """Index item (in the order given); columns status (None when unreviewed), corrected (the
        heads whose current value differs from the baseline), reviewed_by and reviewed_at (the
        last write of any kind, None when never written)."""
        item_ids = [check_id(item, "item") for item in item_ids]
        with self.reader.begin() as connection:
            state = self._state(connection, item_ids)
            last: dict[int, Row] = {}
            for chunk in _chunks(sorted(set(item_ids))):
                newest = select(func.max(log_table.c.seq)).where(log_table.c.item.in_(chunk)).group_by(log_table.c.item)
                query = select(log_table.c.item, log_table.c.reviewer, log_table.c.at)
                last.update((row.item, row) for row in connection.execute(query.where(log_table.c.seq.in_(newest))))
        records = [
            {
                "item": found.item, "status": values[STATUS],
                "corrected": [head for head in HEADS if values[head] != found.baseline[head]],
                "reviewed_by": last[found.item].reviewer if found.item in last else None,
                "reviewed_at": last[found.item].at if found.item in last else None,
            }
            for found, values in state
        ]
        # dtype=object: None stays None (pandas would make missing text NaN).
        columns = ["item", "status", "corrected", "reviewed_by", "reviewed_at"]
        frame = pd.DataFrame(records, columns=columns, dtype=object)
        return frame.set_index(pd.Index(frame.pop("item").tolist(), dtype="int64", name="item"))

    def log_frame(self, dataset: str | Path | Catalogue) -> pd.DataFrame:
        """The corrections-with-history table of `dataset`: every log row of its items, oldest first;
        columns LOG_COLUMNS (product_id and name from the item)."""
        with self.reader.begin() as connection:
            return _log_frame(connection, dataset)

    def values(self, dataset: str | Path | Catalogue) -> dict[str, list[str]]:
        """Per head (every one of HEADS), the distinct labels reviewers gave it on `dataset`'s items
        (new values included), sorted; one query."""
        query = (
            select(current_table.c.field, current_table.c.value).distinct()
            .select_from(current_table.join(items_table, current_table.c.item == items_table.c.item))
            .where(items_table.c.dataset == DatasetKey.of(dataset), current_table.c.field.in_(HEADS),
                   current_table.c.value.is_not(None))
        )
        given: dict[str, list[str]] = {head: [] for head in HEADS}
        with self.reader.begin() as connection:
            for field, value in connection.execute(query):
                given[field].append(value)
        return {head: sorted(values) for head, values in given.items()}

    def dataset_state(self, dataset: str | Path | Catalogue) -> list[tuple[Item, dict[str, str | None]]]:
        """Every item of `dataset` with its current values (as `current`), in the order added."""
        with self.reader.begin() as connection:
            return self._dataset_state(connection, dataset)

    def dataset_snapshot(
        self, dataset: str | Path | Catalogue,
    ) -> tuple[list[tuple[Item, dict[str, str | None]]], pd.DataFrame]:
        """(dataset_state, log_frame) of `dataset` read in one transaction on one snapshot, so the
        current values are the log's last news whatever writers commit meanwhile (an export's
        styles.csv and corrections.csv). PostgreSQL's default READ COMMITTED gives each statement its
        own snapshot, hence REPEATABLE READ; SQLite's WAL reader keeps the snapshot of its first read
        until the transaction ends. A read-only transaction never waits for a writer at either level."""
        reader = (self.reader.execution_options(isolation_level="REPEATABLE READ")
                  if self.engine.dialect.name == "postgresql" else self.reader)
        with reader.begin() as connection:
            return self._dataset_state(connection, dataset), _log_frame(connection, dataset)

    def _dataset_state(
        self, connection: Connection, dataset: str | Path | Catalogue,
    ) -> list[tuple[Item, dict[str, str | None]]]:
        rows = connection.execute(
            select(items_table).where(items_table.c.dataset == DatasetKey.of(dataset)).order_by(items_table.c.item)
        ).all()
        return self._state(connection, [row.item for row in rows], rows)

    # --- queues ------------------------------------------------------------------------------

    def keep_queue(self, dataset: str | Path | Catalogue, queue: SavedQueue, actor: Actor) -> None:
        """Keep `queue` as `actor`'s review queue on `dataset`, replacing the one kept before; it
        comes back with `saved_queue` in any later session of the same person, on any device.
        ValueError naming what is wrong with it (nothing written)."""
        require(actor, Permission.REVIEW)
        items = [check_id(item, "item") for item in queue.items]
        if queue.current is not None and queue.current not in items:
            raise ValueError(f"the current item {queue.current!r} is not in the queue")
        unknown = sorted(set(queue.corrected_in) - set(HEADS))
        if unknown:
            raise ValueError(f"corrected_in names unknown head(s) {', '.join(map(str, unknown))}")
        if not isinstance(queue.filter, str) or not 0 < len(queue.filter) <= MAX_FILTER_CHARS:
            raise ValueError(f"the filter must be a name of at most {MAX_FILTER_CHARS} characters, "
                             f"got {queue.filter!r}")
        if not isinstance(queue.source, str) or len(queue.source) > MAX_SOURCE_CHARS:
            raise ValueError(f"the source must be a text of at most {MAX_SOURCE_CHARS} characters")
        row = {"reviewer": actor.identity, "dataset": DatasetKey.of(dataset), "source": queue.source,
               "items": json.dumps(items), "filter": queue.filter, "corrected_in": json.dumps(list(queue.corrected_in)),
               "current": queue.current, "saved": _now()}
        with self.engine.begin() as connection:  # one statement: two tabs saving at once never clash
            connection.execute(upsert(connection, queues_table, row, ("reviewer", "dataset")))

    def saved_queue(self, dataset: str | Path | Catalogue, actor: Actor) -> SavedQueue | None:
        """`actor`'s review queue on `dataset` as last kept (`keep_queue`), without the items that are
        no longer in the store; None when they kept none."""
        where = (queues_table.c.reviewer == actor.identity, queues_table.c.dataset == DatasetKey.of(dataset))
        with self.reader.begin() as connection:
            row = connection.execute(select(queues_table).where(*where)).first()
            if row is None:
                return None
            items = json.loads(row.items)
            known: set[int] = set()
            for chunk in _chunks(sorted(set(items))):
                known.update(connection.execute(select(items_table.c.item).where(items_table.c.item.in_(chunk)))
                             .scalars())
        items = tuple(item for item in items if item in known)
        return SavedQueue(source=row.source, items=items, filter=row.filter,
                          corrected_in=tuple(json.loads(row.corrected_in)),
                          current=row.current if row.current in known else None)

    def _state(
        self, connection: Connection, item_ids: list[int], rows: list[Row] | None = None,
    ) -> list[tuple[Item, dict[str, str | None]]]:
        """(item, current values) for `item_ids` in order (`rows`: their review_items rows, when
        already read); KeyError naming the unknown ones."""
        found: dict[int, Item] = {} if rows is None else {row.item: _item(row) for row in rows}
        values: dict[int, dict[str, str | None]] = {}
        for chunk in _chunks(sorted(set(item_ids))):
            if rows is None:
                query = select(items_table).where(items_table.c.item.in_(chunk))
                found.update((row.item, _item(row)) for row in connection.execute(query))
            query = select(current_table.c.item, current_table.c.field, current_table.c.value)
            for item, field, value in connection.execute(query.where(current_table.c.item.in_(chunk))):
                values.setdefault(item, {})[field] = value
        unknown = sorted(set(item_ids) - set(found))
        if unknown:
            raise KeyError(f"no item(s) {_some(unknown)} in the label store")
        return [(found[item], {**found[item].baseline, STATUS: None, **values.get(item, {})}) for item in item_ids]


# --- helpers ----------------------------------------------------------------------------------


def _lock(connection: Connection, item: int) -> None:
    """Lock `item`'s review_items row until the transaction ends: its writers go one at a time."""
    found = connection.execute(select(items_table.c.item).where(items_table.c.item == item).with_for_update()).first()
    if found is None:
        raise KeyError(f"no item {item!r} in the label store")


def _checked_decision(
    actor: Actor, item: int, labels: Mapping[str, str | None], predicted: Mapping[str, tuple[str, float]] | None,
    new_values: Collection[str], seconds: float | None,
) -> tuple[int, dict[str, str | None], dict[str, tuple[str, float]], set[str]]:
    """A person's decision (LabelStore.review, answer_gold) checked: (item, labels, predicted,
    new_values) cleaned; AccessDenied without Permission.REVIEW, ValueError naming what is wrong."""
    require(actor, Permission.REVIEW)
    item = check_id(item, "item")
    labels = {head: clean_label(head, value) for head, value in check_heads(labels, "labels").items()}
    predicted = {head: check_prediction(head, guess)
                 for head, guess in check_heads(predicted or {}, "predicted").items()}
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not 0 <= seconds < 86_400 * 365):
        raise ValueError(f"seconds must be a duration in seconds, got {seconds!r}")
    if isinstance(new_values, str):  # "usage" would read as the heads u, s, a, g, e
        raise ValueError(f"new_values must be a collection of heads, got the text {new_values!r}")
    new_values = set(new_values)
    strays = sorted(new_values - set(labels))
    if strays:
        raise ValueError(f"new_values names head(s) without a label: {', '.join(map(str, strays))}")
    return item, labels, predicted, new_values


def _decision_rows(
    current: dict[str, str | None], labels: dict[str, str | None], predicted: dict[str, tuple[str, float]],
    new_values: set[str], run_id: str | None, seconds: float | None,
) -> list[dict[str, Any]]:
    """One row per head of `labels` (in HEADS order): field, new, kind (NEW_VALUE for `new_values`,
    ACCEPT for the `current` value or the model's prediction, else CORRECT), run_id, predicted, p,
    seconds; a label that changes a head's value checked as typed text (core.untrusted.check_typed)."""
    rows = []
    for head in (head for head in HEADS if head in labels):
        guess, p = predicted.get(head, (None, None))
        if labels[head] is not None and labels[head] != current[head]:
            check_typed(labels[head], f"the {head} label")
        kind = (LogKind.NEW_VALUE if head in new_values else
                LogKind.ACCEPT if labels[head] in (current[head], guess) else LogKind.CORRECT)
        rows.append({"field": head, "new": labels[head], "kind": kind, "run_id": run_id, "predicted": guess, "p": p,
                     "seconds": seconds})
    return rows


def _append(
    connection: Connection,
    item: int,
    current: dict[str, str | None],
    rows: list[dict[str, Any]],
    reviewer: str,
    kind: ActionKind,
) -> Action:
    """Append `rows` (field, new, kind, ...) as one action on the locked `item`; update current_labels."""
    action, at = uuid.uuid4().hex, _now()
    changes = {}
    for row in rows:
        old = current[row["field"]]
        seq = connection.execute(
            insert(log_table).values(action=action, item=item, old=old, reviewer=reviewer, at=at, **row)
        ).inserted_primary_key[0]
        where = (current_table.c.item == item, current_table.c.field == row["field"])
        if connection.execute(update(current_table).where(*where).values(value=row["new"], seq=seq)).rowcount == 0:
            connection.execute(insert(current_table).values(item=item, field=row["field"], value=row["new"], seq=seq))
        current[row["field"]] = row["new"]
        changes[row["field"]] = (old, row["new"])
    return Action(action=action, item=item, reviewer=reviewer, at=at, kind=kind, changes=changes)


def _log_frame(connection: Connection, dataset: str | Path | Catalogue) -> pd.DataFrame:
    """LabelStore.log_frame, read on `connection`."""
    columns = [
        items_table.c[column] if column in ("product_id", "name") else log_table.c[column] for column in LOG_COLUMNS
    ]
    query = (
        select(*columns).select_from(log_table.join(items_table, log_table.c.item == items_table.c.item))
        .where(items_table.c.dataset == DatasetKey.of(dataset)).order_by(log_table.c.seq)
    )
    return _frame(connection.execute(query).all(), LOG_COLUMNS)


def _undo_candidate(connection: Connection, reviewer: str) -> tuple[str, int] | None:
    """(action, item) of the reviewer's latest action that is neither an undo nor undone."""
    undone = undone_actions()
    row = connection.execute(
        select(log_table.c.action, log_table.c.item)
        .where(log_table.c.reviewer == reviewer, log_table.c.kind != LogKind.UNDO, log_table.c.action.not_in(undone))
        .order_by(log_table.c.seq.desc()).limit(1)
    ).first()
    return None if row is None else (row.action, row.item)


def _with_batch(connection: Connection, action: str, item: int) -> list[tuple[str, int]]:
    """(action, item) of every action of `action`'s bulk edit (LabelStore.label_many) in log order,
    or of `action` alone when it is none's; an action undone already is left out."""
    batch = connection.execute(select(log_table.c.batch).where(log_table.c.action == action).limit(1)).scalar()
    if batch is None:
        return [(action, item)]
    undone = undone_actions()
    rows = connection.execute(
        select(log_table.c.action, log_table.c.item)
        .where(log_table.c.batch == batch, log_table.c.action.not_in(undone)).order_by(log_table.c.seq)
    ).all()
    return list(dict.fromkeys((row.action, row.item) for row in rows))  # an action writes one row per field


def _action(connection: Connection, action: str) -> Action:
    rows = connection.execute(select(log_table).where(log_table.c.action == action).order_by(log_table.c.seq)).all()
    kinds = {row.kind for row in rows}
    # An action's rows: a review's head rows and its REVIEW row, one mark row, undo rows, or the model's.
    kind = next((ActionKind(kind) for kind in (LogKind.UNDO, LogKind.REVIEW, LogKind.SKIP, LogKind.NOT_PRODUCT,
                                               LogKind.AUTO_ACCEPT) if kind in kinds), ActionKind.REVIEW)
    first = rows[0]
    return Action(action=action, item=first.item, reviewer=first.reviewer, at=first.at, kind=kind,
                  changes={row.field: (row.old, row.new) for row in rows})


def _insert_ignore(connection: Connection, rows: list[dict[str, Any]], unique: tuple[str, ...]) -> None:
    """Insert `rows`, skipping those that clash on the `unique` columns (concurrent adds included)."""
    if not rows:
        return
    insert_or_skip = dialect_insert(connection)
    if insert_or_skip is not None:
        connection.execute(insert_or_skip(items_table).on_conflict_do_nothing(index_elements=list(unique)), rows)
        return
    for row in rows:  # another database: look first (a concurrent add may still clash: IntegrityError)
        same = (items_table.c[column] == row[column] for column in unique)
        if connection.execute(select(items_table.c.item).where(*same)).first() is None:
            connection.execute(insert(items_table).values(row))


def _item(row: Row) -> Item:
    return Item(
        item=row.item, dataset=row.dataset, kind=ItemKind(row.kind), product_id=row.product_id, path=Path(row.file),
        name=row.name, baseline=json.loads(row.baseline), added=row.added, added_by=row.added_by,
        source=row.source or DEFAULT_SOURCES[ItemKind(row.kind)],
    )


def _frame(rows: list[Row], columns: tuple[str, ...]) -> pd.DataFrame:
    """Rows as a frame: seq/product_id int64, p float, the rest objects with None for missing."""
    frame = pd.DataFrame([tuple(row) for row in rows], columns=list(columns), dtype=object)
    types = {column: "int64" for column in ("seq", "product_id") if column in columns}
    return frame.astype({**types, "p": "float64"})


def _chunks(values: list, size: int = _CHUNK) -> Iterable[list]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _some(values: list, shown: int = 10) -> str:
    """The first `shown` values, and how many more."""
    more = len(values) - shown
    return ", ".join(map(str, values[:shown])) + (f" and {more:,} more" if more > 0 else "")


def _now() -> str:
    """The UTC time now, ISO 8601 with microseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")
