"""The label store's tables, the kinds their rows hold, and the records the store returns for them.

Three tables in the workspace database (`core.access.database`: SQLite, or PostgreSQL shared by a team):

  review_items    one row per reviewable photo: a catalogue product, or an external image a
                  reviewer brought. item (PK, autoincrement), dataset (the resolved dataset
                  folder, core.data.catalogue.DatasetKey), kind (ItemKind), product_id (the
                  catalogue id; for an external image EXTERNAL_ID_BASE + item), file (its photo),
                  name (display name), sha256 (external images: of the bytes), baseline (JSON: the
                  HEADS before any review), added, added_by. Unique (dataset, product_id) and
                  (dataset, sha256).
  corrections     the append-only log: one row per field a user action wrote. seq (PK,
                  autoincrement: the order of writes), action (uuid4 hex shared by the rows of
                  one action), item, field (a head, or STATUS), old, new, kind (LogKind), reviewer
                  (the identity of the person who acted, core.access.roles.Actor), at, run_id /
                  predicted / p (the model's suggestion shown), undoes (on undo rows: the action
                  undone), batch (uuid4 hex shared by the actions of one bulk edit: one label set on
                  many items, undone as a whole). Rows are never updated or deleted.
  current_labels  the current-labels view: (item, field) -> value and the seq of the log row
                  that wrote it; written in the same transaction as that log row.

And the trust layer's per-source records (core.trust.sources, core.labels.sources):

  review_items.source  where the photo came from (a folder's name, an upload batch; NULL: the
                  kind's default, DEFAULT_SOURCES); corrections.threshold / typicality / batch:
                  on AUTO_ACCEPT rows, the threshold that accepted the tag, the photo's
                  typicality, and the batch of acceptances it belongs to (undone as one).
  source_settings (dataset, source) -> audit_share (NULL: the default, core.labels.sources.audit_share).
  source_calibrations  append-only: a source's certification from its reviewed decisions for a run
                  (selections: JSON head -> core.trust.abstention.Selection), by whom and when; the
                  latest per (dataset, source, run_id) holds, and resets the source's alarms.
  audits          one row per head an auto-acceptance left for a person instead (an audit): item,
                  field, the run's proposal (predicted, p), threshold, the target error it was
                  certified at, typicality, batch, at.

And a review team's (core.labels.team): corrections.seconds (a person's action: seconds from the
item shown to the decision, measured on the server), gold_items (item -> the trusted labels a
lead set; reviewers' decisions on it are scored against them), gold_answers (append-only: each
reviewer's decision on a gold item in a shared queue, LabelStore.answer_gold, one row per head as
a review's log rows would be: seq, action, item, field, new, kind, reviewer, at, run_id /
predicted / p, seconds; kept apart from the log and the current labels, so that the catalogue
keeps its trusted values and every reviewer who gets the item decides it), leases (item -> the
reviewer it is shown to, until when: a shared queue's items go to one person at a time,
core.labels.leases), team_settings (dataset -> the shares of gold items mixed into queues and of
items reviewed twice).
  review_queues   each person's review queue per dataset, so that it comes back on a reload and on
                  another device: (reviewer, dataset) -> source (what filled it, said for a
                  person), items (JSON list of item ids, in order), filter and corrected_in (the
                  view over it), current (the item shown), saved. Replaced whole on every save.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
)

from core.data import HEADS

STATUS = "status"  # a pseudo-field logged next to the HEADS: the item's review state
FIELDS = (*HEADS, STATUS)
EXTERNAL_ID_BASE = 1_000_000_000  # export ids of external images: EXTERNAL_ID_BASE + item


class ReviewStatus(enum.StrEnum):
    """An item's STATUS once decided; None while unreviewed."""

    REVIEWED = "reviewed"
    SKIPPED = "skipped"  # look at it later
    NOT_PRODUCT = "not_product"  # not a product photo: left out of exports and training


class ItemKind(enum.StrEnum):
    CATALOGUE = "catalogue"  # a product of the dataset's styles.csv
    EXTERNAL = "external"  # a photo a reviewer brought (an upload, a folder)


DEFAULT_SOURCES = {ItemKind.CATALOGUE: "catalogue", ItemKind.EXTERNAL: "uploads"}  # an item's source when none was set


class LogKind(enum.StrEnum):
    """A log row's kind: a head's row of a review is ACCEPT, CORRECT or NEW_VALUE, its STATUS row
    REVIEW; `mark` writes one STATUS row, SKIP or NOT_PRODUCT; undo rows are UNDO."""

    ACCEPT = "accept"
    CORRECT = "correct"
    NEW_VALUE = "new_value"
    REVIEW = "review"
    SKIP = "skip"
    NOT_PRODUCT = "not_product"
    UNDO = "undo"
    AUTO_ACCEPT = "auto_accept"  # a head the model's certified proposal decided, with no person


PERSON_DECISIONS = (LogKind.ACCEPT, LogKind.CORRECT, LogKind.NEW_VALUE)  # a head's rows a person decided


class ActionKind(enum.StrEnum):
    """What a user action was (Action.kind)."""

    REVIEW = "review"
    SKIP = "skip"
    NOT_PRODUCT = "not_product"
    UNDO = "undo"
    AUTO_ACCEPT = "auto_accept"


metadata = MetaData()
items_table = Table(
    "review_items",
    metadata,
    Column("item", Integer, primary_key=True, autoincrement=True),
    Column("dataset", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("product_id", BigInteger),  # an external image's is set right after its insert (it needs item)
    Column("file", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("sha256", String(64)),
    Column("baseline", Text, nullable=False),  # JSON {head: value | null}
    Column("added", String(40), nullable=False),  # UTC ISO 8601, microseconds
    Column("added_by", String(255), nullable=False),
    Column("source", Text),  # NULL: DEFAULT_SOURCES of its kind
    UniqueConstraint("dataset", "product_id", name="review_items_dataset_product"),
    UniqueConstraint("dataset", "sha256", name="review_items_dataset_sha256"),
)
log_table = Table(
    "corrections",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("action", String(32), nullable=False),
    Column("item", Integer, ForeignKey("review_items.item"), nullable=False),
    Column("field", String(32), nullable=False),
    Column("old", Text),
    Column("new", Text),
    Column("kind", String(16), nullable=False),
    Column("reviewer", String(255), nullable=False),
    Column("at", String(40), nullable=False),
    Column("run_id", String(64)),
    Column("predicted", Text),
    Column("p", Float),
    Column("undoes", String(32)),
    Column("threshold", Float),
    Column("typicality", Float),
    Column("batch", String(32)),
    Column("seconds", Float),  # a person's action: from the item shown to the decision, measured by the server
    Index("corrections_item_field_seq", "item", "field", "seq"),
    Index("corrections_reviewer_seq", "reviewer", "seq"),
    Index("corrections_action", "action"),
    Index("corrections_undoes", "undoes"),
    Index("corrections_batch", "batch"),
)
current_table = Table(
    "current_labels",
    metadata,
    Column("item", Integer, ForeignKey("review_items.item"), primary_key=True),
    Column("field", String(32), primary_key=True),
    Column("value", Text),
    Column("seq", Integer, nullable=False),
)
source_settings_table = Table(
    "source_settings",
    metadata,
    Column("dataset", Text, primary_key=True),
    Column("source", Text, primary_key=True),
    Column("audit_share", Float),
    Column("set_by", String(255), nullable=False),
    Column("at", String(40), nullable=False),
)
source_calibrations_table = Table(
    "source_calibrations",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("dataset", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("selections", Text, nullable=False),  # JSON head -> Selection.to_dict()
    Column("by", String(255), nullable=False),
    Column("at", String(40), nullable=False),
    Index("source_calibrations_source", "dataset", "source", "run_id", "seq"),
)
gold_table = Table(
    "gold_items",
    metadata,
    Column("item", Integer, ForeignKey("review_items.item"), primary_key=True),
    Column("labels", Text, nullable=False),  # JSON {head: the trusted value}
    Column("set_by", String(255), nullable=False),
    Column("at", String(40), nullable=False),
)
gold_answers_table = Table(
    "gold_answers",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("action", String(32), nullable=False),
    Column("item", Integer, ForeignKey("review_items.item"), nullable=False),
    Column("field", String(32), nullable=False),
    Column("new", Text),
    Column("kind", String(16), nullable=False),  # one of PERSON_DECISIONS
    Column("reviewer", String(255), nullable=False),
    Column("at", String(40), nullable=False),
    Column("run_id", String(64)),
    Column("predicted", Text),
    Column("p", Float),
    Column("seconds", Float),
    Index("gold_answers_item_reviewer", "item", "reviewer"),
)
leases_table = Table(
    "leases",
    metadata,
    Column("item", Integer, ForeignKey("review_items.item"), primary_key=True),
    Column("reviewer", String(255), nullable=False),
    Column("until", String(40), nullable=False),  # UTC ISO 8601: free again after this
)
team_settings_table = Table(
    "team_settings",
    metadata,
    Column("dataset", Text, primary_key=True),
    Column("gold_share", Float, nullable=False),
    Column("double_share", Float, nullable=False),
    Column("set_by", String(255), nullable=False),
    Column("at", String(40), nullable=False),
)
audits_table = Table(
    "audits",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("batch", String(32), nullable=False),
    Column("item", Integer, ForeignKey("review_items.item"), nullable=False),
    Column("field", String(32), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("predicted", Text, nullable=False),
    Column("p", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("target", Float),  # the error the threshold was certified at; NULL in stores from before it was kept
    Column("typicality", Float),
    Column("at", String(40), nullable=False),
    Index("audits_item_field", "item", "field"),
)
queues_table = Table(
    "review_queues",
    metadata,
    Column("reviewer", String(255), primary_key=True),
    Column("dataset", Text, primary_key=True),
    Column("source", Text, nullable=False),
    Column("items", Text, nullable=False),  # JSON [item, ...]
    Column("filter", String(32), nullable=False),
    Column("corrected_in", Text, nullable=False),  # JSON [head, ...]
    Column("current", Integer),
    Column("saved", String(40), nullable=False),  # UTC ISO 8601, microseconds
)


@dataclasses.dataclass(frozen=True)
class SavedQueue:
    """A person's review queue on a dataset as the store keeps it (a review_queues row)."""

    source: str  # what filled it, for a person: "uploads", "label issues of run …", …
    items: tuple[int, ...]  # item ids, in review order
    filter: str = "all"  # the view's filter (core.labels.queues.FILTERS)
    corrected_in: tuple[str, ...] = ()  # the view's heads (HEADS)
    current: int | None = None  # the item shown


@dataclasses.dataclass(frozen=True)
class Batch:
    """One bulk edit (LabelStore.label_many): `head` set to `value` on the items that held another value."""

    batch: str  # uuid4 hex shared by its actions' log rows; "" when nothing changed (nothing written)
    head: str
    value: str | None
    changed: tuple[int, ...]  # items whose value it changed, one action each
    actions: tuple[str, ...]  # those actions, in the same order (undo_action of any undoes the batch)
    unchanged: tuple[int, ...]  # items that held the value already: no row written


@dataclasses.dataclass(frozen=True)
class Item:
    """One reviewable photo of a dataset (a review_items row)."""

    item: int  # the store's id
    dataset: str  # the resolved dataset folder it belongs to
    kind: ItemKind
    product_id: int  # the catalogue id; for an external image EXTERNAL_ID_BASE + item
    path: Path  # its photo: in the catalogue, or the stored copy under <workspace>/uploads
    name: str  # display name: the original file name, sanitised, or "<id>.jpg"
    baseline: dict[str, str | None]  # the HEADS before any review; all None for an external image
    added: str  # UTC ISO time
    added_by: str
    source: str  # where it came from (DEFAULT_SOURCES where none was set)


@dataclasses.dataclass(frozen=True)
class Action:
    """One user action: the log rows it wrote, as field -> (old, new)."""

    action: str  # uuid4 hex shared by its log rows
    item: int
    reviewer: str
    at: str
    kind: ActionKind
    changes: dict[str, tuple[str | None, str | None]]


def undone_actions():
    """The ids of the actions an undo took back: a subquery, for `action.not_in(...)`."""
    return select(log_table.c.undoes).where(log_table.c.undoes.is_not(None))
