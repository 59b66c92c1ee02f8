"""The catalogue's taxonomy: which articleType goes under which subCategory and masterCategory, and
which gender and usage values go with each articleType; the rows that break it; and the valid
label paths a model's proposal must follow (`LabelPaths`).

Learned from a catalogue's rows (a run's training rows): for a child value, a parent value is
valid when it is the child's most frequent one, or when at least MIN_ROWS rows carry both and, in
the hierarchy, at least MIN_SHARE of the child's rows. In the real sample every articleType has one
subCategory but for a handful of strays ("Flip Flops" once under "Sandal", "Sandals" twice under
"Shoes" of 283): those strays break the taxonomy and are label issues, while a genuinely shared
child ("Messenger Bag": 5 rows under Accessories, 4 under Bags) keeps both parents. Gender and
usage vary more within an articleType (girls' T-shirts are rare, not wrong), so only a value seen
once with a child that has another, commoner one breaks it ("Handbags" for Men: 1 of 405).

Edges are stored as {child: {parent: rows}} with every pair seen (valid or not), so a report can
say how often a stray occurs; `valid_parents` applies the rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.schema import OTHER_CLASS, LabelSchema, require_columns

HIERARCHY = ("masterCategory", "subCategory", "articleType")  # parent before child
ARTICLE = "articleType"
ARTICLE_ATTRIBUTES = ("gender", "usage")  # values that must go with the articleType
MIN_ROWS = 2  # rows carrying both that make a parent valid (besides the child's most frequent one)...
MIN_SHARE = 0.02  # ...and, in the hierarchy, this share of the child's rows
# The relations: (child head, parent head) -> {child value: {parent value: rows}}.
RELATIONS = (("subCategory", "masterCategory"), ("articleType", "subCategory"),
             *((ARTICLE, attribute) for attribute in ARTICLE_ATTRIBUTES))
FORMAT_VERSION = 1
VIOLATION_COLUMNS = ("id", "head", "value", "parent_head", "parent", "valid_parents")


def _key(child: str, parent: str) -> str:
    return f"{child}->{parent}"


@dataclass(frozen=True)
class Taxonomy:
    """edges: "child->parent" (RELATIONS) -> {child value: {parent value: rows}}, every pair seen."""

    edges: dict[str, dict[str, dict[str, int]]]

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> Taxonomy:
        """Count every (child, parent) pair of RELATIONS in `frame` (rows missing either are left out)."""
        require_columns(frame, tuple({head for pair in RELATIONS for head in pair}))
        edges = {}
        for child, parent in RELATIONS:
            pairs = frame[[child, parent]].dropna().astype(str).value_counts()
            table: dict[str, dict[str, int]] = {}
            for (child_value, parent_value), rows in sorted(pairs.items()):
                table.setdefault(child_value, {})[parent_value] = int(rows)
            edges[_key(child, parent)] = table
        return cls(edges)

    def counts(self, child: str, parent: str) -> dict[str, dict[str, int]]:
        """{child value: {parent value: rows}} of one relation; ValueError naming the relations."""
        key = _key(child, parent)
        if key not in self.edges:
            raise ValueError(f"no relation {key}; valid: {', '.join(self.edges)}")
        return self.edges[key]

    def valid_parents(self, child: str, parent: str) -> dict[str, set[str]]:
        """{child value: its valid parent values} (module docstring's rule)."""
        share = MIN_SHARE if parent in HIERARCHY else 0.0
        valid = {}
        for child_value, parents in self.counts(child, parent).items():
            needed, most = max(MIN_ROWS, share * sum(parents.values())), max(parents.values())
            valid[child_value] = {name for name, rows in parents.items() if rows >= needed or rows == most}
        return valid

    def violations(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of `frame` that break the taxonomy, one row per broken relation: id, head (the
        child head), value, parent_head, parent (the value the row carries), valid_parents (the
        valid ones, "; "-joined). A child value the taxonomy never saw breaks nothing (it is new,
        not wrong). Ordered by id, then relation."""
        require_columns(frame, ("id", *{head for pair in RELATIONS for head in pair}))
        found = []
        for child, parent in RELATIONS:
            valid = self.valid_parents(child, parent)
            rows = frame[["id", child, parent]].dropna()
            known = rows[child].astype(str).isin(list(valid))
            for product_id, value, carried in rows[known].itertuples(index=False):
                allowed = valid[str(value)]
                if allowed and str(carried) not in allowed:
                    found.append((int(product_id), child, str(value), parent, str(carried), "; ".join(sorted(allowed))))
        order = {relation: index for index, relation in enumerate(RELATIONS)}
        found.sort(key=lambda row: (row[0], order[(row[1], row[3])]))
        return pd.DataFrame(found, columns=list(VIOLATION_COLUMNS)).astype({"id": "int64"})

    def tree(self) -> pd.DataFrame:
        """The valid hierarchy with its rows, for a sunburst: masterCategory, subCategory,
        articleType, rows (articleType rows under that subCategory)."""
        sub_parents = self.valid_parents("subCategory", "masterCategory")
        article_counts = self.counts("articleType", "subCategory")
        article_parents = self.valid_parents("articleType", "subCategory")
        rows = []
        for article, parents in article_parents.items():
            for sub in sorted(parents):
                for master in sorted(sub_parents.get(sub, ())):
                    rows.append((master, sub, article, article_counts[article][sub]))
        return pd.DataFrame(rows, columns=[*HIERARCHY, "rows"])

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "edges": self.edges}

    @classmethod
    def from_dict(cls, values: Mapping) -> Taxonomy:
        version = values.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported taxonomy format_version {version!r}; expected {FORMAT_VERSION}")
        return cls({key: {child: dict(parents) for child, parents in table.items()}
                    for key, table in values["edges"].items()})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Taxonomy:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _members(schema: LabelSchema, head: str, name: str) -> set[str]:
    """The catalogue values a schema class stands for: itself, or for OTHER_CLASS (the rare-class
    bucket) every value the schema merged into it."""
    if name == OTHER_CLASS and schema.rare_policy == "other":
        return {value for value in schema.counts[head] if value not in schema.classes[head]}
    return {name}


def _composed_parents(taxonomy: Taxonomy, child: str, parent: str) -> dict[str, set[str]]:
    """Valid parents of `child` values at `parent`, two levels up when needed (articleType ->
    masterCategory goes through subCategory)."""
    levels = HIERARCHY[HIERARCHY.index(parent):HIERARCHY.index(child) + 1][::-1]  # child ... parent
    step = taxonomy.valid_parents(levels[0], levels[1])
    for lower, upper in zip(levels[1:], levels[2:]):
        above = taxonomy.valid_parents(lower, upper)
        step = {value: set().union(*(above.get(middle, set()) for middle in middles))
                for value, middles in step.items()}
    return step


@dataclass(frozen=True)
class LabelPaths:
    """The valid combinations of the hierarchy heads a schema has, in class-index space.

    heads: the HIERARCHY heads the schema has, parent first (at least two, or decoding is
    independent); paths: int64 [P, len(heads)], each row one valid combination of class indices.
    A class whose catalogue values have no valid parent among the parent head's classes (e.g. the
    parent is a rare class the `ignore` policy leaves out) is left unconstrained: it combines with
    every parent class.
    """

    heads: tuple[str, ...]
    paths: np.ndarray

    @classmethod
    def build(cls, taxonomy: Taxonomy, schema: LabelSchema) -> LabelPaths:
        heads = tuple(head for head in HIERARCHY if head in schema.heads)
        if len(heads) < 2:
            return cls(heads, np.zeros((0, len(heads)), dtype=np.int64))
        paths = np.arange(len(schema.classes[heads[0]]), dtype=np.int64)[:, None]
        for parent, child in zip(heads, heads[1:]):
            allowed = _compatible(taxonomy, schema, parent, child)
            parent_index, child_index = np.nonzero(allowed[paths[:, -1]])
            paths = np.concatenate([paths[parent_index], child_index[:, None]], axis=1)
        return cls(heads, paths)

    @property
    def constrained(self) -> bool:
        return len(self.heads) >= 2

    def impossible(self, labels: Mapping[str, Sequence[int]]) -> np.ndarray:
        """bool [n]: rows whose class indices per head (`labels`: head -> int [n]) form no valid path."""
        if not self.constrained:
            return np.zeros(len(next(iter(labels.values()))), dtype=bool)
        rows = np.stack([np.asarray(labels[head], dtype=np.int64) for head in self.heads], axis=1)
        valid = {tuple(path) for path in self.paths.tolist()}
        return np.array([tuple(row) not in valid for row in rows.tolist()], dtype=bool)

    def decode(self, probs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The most probable valid path per row, and each head's probabilities renormalised over
        the valid paths.

        probs: head -> float [n, C] (every head of the schema; the hierarchy heads are decoded
        jointly, the others are passed through). Returns (head -> int64 [n] the decoded class;
        head -> float [n, C] the marginal probability of each class over valid paths).
        """
        labels = {head: np.asarray(p).argmax(axis=1) for head, p in probs.items()}
        marginals = {head: np.asarray(p, dtype=np.float64) for head, p in probs.items()}
        if not self.constrained:
            return labels, marginals
        # log p(path) = sum over heads of log p(class); computed for every valid path at once.
        log_probs = [np.log(np.clip(marginals[head], 1e-30, None)) for head in self.heads]
        scores = sum(log_p[:, self.paths[:, column]] for column, log_p in enumerate(log_probs))  # [n, P]
        best = scores.argmax(axis=1)
        weights = np.exp(scores - scores.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        for column, head in enumerate(self.heads):
            labels[head] = self.paths[best, column]
            through = np.zeros((len(self.paths), marginals[head].shape[1]))  # [P, C]: path p goes through class c
            through[np.arange(len(self.paths)), self.paths[:, column]] = 1.0
            marginals[head] = weights @ through
        return labels, marginals


def _compatible(taxonomy: Taxonomy, schema: LabelSchema, parent: str, child: str) -> np.ndarray:
    """bool [C_parent, C_child]: which parent class a child class may go under."""
    valid = _composed_parents(taxonomy, child, parent)
    parents, children = schema.classes[parent], schema.classes[child]
    allowed = np.zeros((len(parents), len(children)), dtype=bool)
    parent_members = [_members(schema, parent, name) for name in parents]
    for column, name in enumerate(children):
        wanted = set().union(*(valid.get(value, set()) for value in _members(schema, child, name)))
        rows = [row for row, members in enumerate(parent_members) if members & wanted]
        if rows:
            allowed[rows, column] = True
        else:  # nothing known about its parents among these classes: unconstrained
            allowed[:, column] = True
    return allowed
