"""The label schema: per head, the class vocabulary, the rare-class policy and the encoding.

A schema is fitted once on the training catalogue, saved as JSON with every run and used
unchanged at prediction time; a checkpoint's output indices mean nothing without it.

Rare-class policies (a class is rare when it has fewer than `rare_min_count` rows):
  ignore  the seed notebook's step: rare classes become None, encoded IGNORE_INDEX, so they
          are left out of the loss and the metrics;
  other   rare classes are merged into one class named OTHER_CLASS, last in the vocabulary,
          present only if something was merged;
  keep    every class is kept.
Under every policy a missing value is ignored (IGNORE_INDEX / NA), never guessed.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.choices import Choice
from core.data import HEADS, CatalogueError


class RarePolicy(Choice):
    """What becomes of a rare class (module docstring)."""

    IGNORE = "ignore"
    OTHER = "other"
    KEEP = "keep"


OTHER_CLASS = "Other"
IGNORE_INDEX = -100  # torch CrossEntropyLoss's default ignore_index
FORMAT_VERSION = 1


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    """Raise CatalogueError naming every one of `columns` that `frame` lacks."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise CatalogueError(f"catalogue has no column(s) {', '.join(missing)}; it has {', '.join(frame.columns)}")


def _check_rare_min_count(rare_min_count: int) -> None:
    if isinstance(rare_min_count, bool) or not isinstance(rare_min_count, numbers.Integral) or rare_min_count < 0:
        raise ValueError(f"rare_min_count must be a non-negative integer, got {rare_min_count!r}")


def _check_policy(rare_policy: str, rare_min_count: int) -> RarePolicy:
    _check_rare_min_count(rare_min_count)
    return RarePolicy.parse(rare_policy, "rare_policy")


def _class_counts(column: pd.Series) -> dict[str, int]:
    """Rows per value, missing values left out; by count descending, then name."""
    counts = ((str(value), int(rows)) for value, rows in column.value_counts(dropna=True).items())
    return dict(sorted(counts, key=lambda item: (-item[1], item[0])))


def head_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per head (index = HEADS, in order).

    Columns: classes, missing, largest, smallest (rows of the biggest/smallest class; 0 when
    the head has no value), imbalance_ratio (largest / smallest; NaN when no class),
    top_class (the biggest class; NA when no class).
    """
    require_columns(frame, HEADS)
    rows = []
    for head in HEADS:
        counts = list(_class_counts(frame[head]).items())
        largest = counts[0][1] if counts else 0
        smallest = counts[-1][1] if counts else 0
        rows.append({
            "classes": len(counts),
            "missing": int(frame[head].isna().sum()),
            "largest": largest,
            "smallest": smallest,
            "imbalance_ratio": largest / smallest if counts else float("nan"),
            "top_class": counts[0][0] if counts else None,
        })
    return pd.DataFrame(rows, index=pd.Index(HEADS, name="head"))


def rare_classes(frame: pd.DataFrame, head: str, rare_min_count: int) -> pd.DataFrame:
    """Per class of `head`, by count descending: class, count, rare (count < rare_min_count)."""
    require_columns(frame, (head,))
    _check_rare_min_count(rare_min_count)
    counts = _class_counts(frame[head])
    return pd.DataFrame({
        "class": pd.Series(list(counts), dtype=object),
        "count": pd.Series(list(counts.values()), dtype="int64"),
        "rare": pd.Series([rows < rare_min_count for rows in counts.values()], dtype=bool),
    })


def imbalance_table(frame: pd.DataFrame, rare_min_count: int) -> pd.DataFrame:
    """One row per head: what a rare-class threshold would touch.

    Columns: head, classes, imbalance_ratio, classes_under_threshold, rows_affected (rows whose
    class has fewer than `rare_min_count` rows), rows_affected_share (of the head's labelled
    rows; NaN when none is labelled).
    """
    _check_rare_min_count(rare_min_count)
    summary = head_summary(frame)
    rows = []
    for head in HEADS:
        counts = rare_classes(frame, head, rare_min_count)
        rare_rows = int(counts["count"][counts["rare"]].sum())
        labelled = int(counts["count"].sum())
        rows.append({
            "head": head,
            "classes": len(counts),
            "imbalance_ratio": summary.loc[head, "imbalance_ratio"],
            "classes_under_threshold": int(counts["rare"].sum()),
            "rows_affected": rare_rows,
            "rows_affected_share": rare_rows / labelled if labelled else float("nan"),
        })
    return pd.DataFrame(rows)


@dataclass
class LabelSchema:
    """The vocabulary of every head after the rare-class policy, and how labels map to indices.

    Values not seen at fit time (e.g. labels of another catalogue) map to OTHER_CLASS under the
    `other` policy when that class exists, and are ignored (IGNORE_INDEX / NA) otherwise.
    """

    rare_policy: str  # a RarePolicy
    rare_min_count: int  # classes with fewer rows than this are rare
    classes: dict[str, list[str]]  # head -> class names in index order
    counts: dict[str, dict[str, int]]  # head -> original value -> rows, before the policy

    def __post_init__(self) -> None:
        _check_policy(self.rare_policy, self.rare_min_count)
        if list(self.classes) != list(self.counts):
            raise ValueError(f"classes heads {list(self.classes)} differ from counts heads {list(self.counts)}")

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        rare_policy: str = "ignore",
        rare_min_count: int = 500,
        heads: tuple[str, ...] = HEADS,
    ) -> LabelSchema:
        """Count every head's values in `frame` and apply the rare-class policy.

        Raises ValueError when a head would be left with no class at all (every value rare
        under `ignore`, or no value at all): lower the threshold or leave the head out.
        """
        rare_policy = _check_policy(rare_policy, rare_min_count).value  # a plain str: schemas travel in checkpoints
        require_columns(frame, tuple(heads))
        counts = {head: _class_counts(frame[head]) for head in heads}
        classes = {}
        for head, head_counts in counts.items():
            kept = [name for name, rows in head_counts.items()
                    if rare_policy == RarePolicy.KEEP or rows >= rare_min_count]
            if rare_policy == RarePolicy.OTHER and len(kept) < len(head_counts) and OTHER_CLASS not in kept:
                kept.append(OTHER_CLASS)
            if not kept:
                largest = max(head_counts.values(), default=0)
                raise ValueError(
                    f"head {head!r} has no class left under rare_policy={rare_policy!r}, "
                    f"rare_min_count={rare_min_count} (its largest class has {largest} rows); "
                    "lower rare_min_count or leave the head out of `heads`"
                )
            classes[head] = kept
        return cls(rare_policy=rare_policy, rare_min_count=int(rare_min_count), classes=classes, counts=counts)

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.classes)

    def num_classes(self) -> dict[str, int]:
        return {head: len(names) for head, names in self.classes.items()}

    def _other_index(self, head: str) -> int:
        """Index rare and unseen values take: OTHER_CLASS under `other`, else IGNORE_INDEX."""
        if self.rare_policy == RarePolicy.OTHER and OTHER_CLASS in self.classes[head]:
            return self.classes[head].index(OTHER_CLASS)
        return IGNORE_INDEX

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Class indices, int64 [n_rows, n_heads] in `heads` order; IGNORE_INDEX where ignored."""
        require_columns(frame, self.heads)
        encoded = np.empty((len(frame), len(self.heads)), dtype=np.int64)
        for column, head in enumerate(self.heads):
            seen = list(self.counts[head])
            index_of = {name: index for index, name in enumerate(self.classes[head])}
            other = self._other_index(head)
            seen_to_index = np.array([index_of.get(value, other) for value in seen] + [other], dtype=np.int64)
            values = frame[head]
            # Position in `seen`, -1 for missing and unseen values alike: -1 picks the
            # trailing `other` entry, then missing values are ignored.
            codes = pd.Index(seen, dtype=object).get_indexer(values)
            encoded[:, column] = np.where(values.isna().to_numpy(), IGNORE_INDEX, seen_to_index[codes])
        return encoded

    def decode(self, head: str, indices) -> list[str | None]:
        """Class names of `indices` (any 1-D integer sequence or array); IGNORE_INDEX -> None."""
        if head not in self.classes:
            raise ValueError(f"unknown head {head!r}; valid: {', '.join(self.heads)}")
        indices = np.asarray(indices, dtype=np.int64).ravel()
        names = self.classes[head]
        invalid = indices[(indices != IGNORE_INDEX) & ((indices < 0) | (indices >= len(names)))]
        if invalid.size:
            raise ValueError(f"index {int(invalid[0])} out of range for head {head!r} with {len(names)} classes")
        return [None if index == IGNORE_INDEX else names[index] for index in indices.tolist()]

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "rare_policy": self.rare_policy,
            "rare_min_count": self.rare_min_count,
            "classes": {head: list(names) for head, names in self.classes.items()},
            "counts": {head: dict(counts) for head, counts in self.counts.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> LabelSchema:
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported label schema format_version {version!r}; expected {FORMAT_VERSION}")
        return cls(
            rare_policy=d["rare_policy"],
            rare_min_count=d["rare_min_count"],
            classes={head: list(names) for head, names in d["classes"].items()},
            counts={head: dict(counts) for head, counts in d["counts"].items()},
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> LabelSchema:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
