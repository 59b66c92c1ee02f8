"""Rank catalogue rows by how likely their label is wrong, from out-of-sample probabilities (cleanlab).

Input is the predictions.parquet layout (`core.evaluation.files`): id; per head
`<head>` (the given label, None where the schema ignores it) and `<head>_probs` (float [C], in
the schema's class order). The probabilities must be out-of-sample: a run's validation
predictions, or `python -m training crossval` for every catalogue row.

Per head, over the rows with a given label (multi-class, one cleanlab call each):
    score     cleanlab.rank.get_label_quality_scores: in [0, 1], lower = more likely wrong
    is_issue  cleanlab.filter.find_label_issues (confident learning, prune_by_noise_rate)
    rank      1 = the lowest score (ties by id), per head

Classes no row is labelled with (a validation split can miss a rare class) keep their columns:
cleanlab 2.9 accepts them (it puts such a class's confidence threshold out of reach, so no row
is counted as confidently in it), and the probabilities keep their meaning, so a row that looks
like such a class still scores low and gets it as its suggestion. find_label_issues needs two
given classes: a head whose labelled rows all give one class gets is_issue False (its scores
still rank it). A head with fewer than 2 classes has nothing to confuse and is left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

ISSUE_COLUMNS = ("id", "head", "given", "suggested", "given_p", "suggested_p", "score", "is_issue", "rank")
SCORE_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
# bf16 predictions sum to 1 only to about 1e-2.
_SUM_TOLERANCE = 0.02


def rank_label_issues(predictions: pd.DataFrame, classes: Mapping[str, Sequence[str]],
                      heads: Sequence[str] | None = None, method: str = "self_confidence") -> pd.DataFrame:
    """The labelled rows of each head, most suspicious first.

    predictions: the predictions.parquet layout (module docstring); ids unique.
    classes: head -> class names in the probabilities' column order (`LabelSchema.classes`).
    heads: the heads to rank (default: every head of `classes`).
    method: the cleanlab label quality score, one of SCORE_METHODS.
    Returns one row per (labelled row, head), columns ISSUE_COLUMNS: id int64, head, given,
    suggested (the argmax class), given_p and suggested_p (their probabilities), score float64,
    is_issue bool, rank int64; ordered by heads, then rank.
    """
    heads = list(classes) if heads is None else list(heads)
    _check_inputs(predictions, classes, heads, method)
    ids = predictions["id"].to_numpy(dtype=np.int64)
    frames = [_rank_head(ids, predictions[head], _probabilities(predictions, head, ids, len(classes[head])),
                         list(classes[head]), head, method)
              for head in heads if len(classes[head]) >= 2]
    return pd.concat([_empty(), *frames], ignore_index=True)


def _check_inputs(predictions: pd.DataFrame, classes: Mapping[str, Sequence[str]], heads: list[str],
                  method: str) -> None:
    if method not in SCORE_METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(SCORE_METHODS)}")
    unknown = [head for head in heads if head not in classes]
    if unknown:
        raise ValueError(f"unknown head(s) {', '.join(map(repr, unknown))}; valid: {', '.join(classes)}")
    needed = ["id", *(column for head in heads for column in (head, f"{head}_probs"))]
    missing = [column for column in needed if column not in predictions.columns]
    if missing:
        raise ValueError(f"predictions have no column(s) {', '.join(missing)}; "
                         f"they have {', '.join(map(str, predictions.columns))}")
    duplicated = predictions["id"][predictions["id"].duplicated()]
    if len(duplicated):
        raise ValueError(f"predictions hold id {duplicated.iloc[0]} more than once; ids must be unique")


def _probabilities(predictions: pd.DataFrame, head: str, ids: np.ndarray, n_classes: int) -> np.ndarray:
    """`<head>_probs` as float64 [n, n_classes], checked: finite, in [0, 1], rows summing to 1."""
    column = f"{head}_probs"
    for product_id, row in zip(ids, predictions[column]):
        if row is None or np.ndim(row) != 1 or len(row) != n_classes:
            values = 0 if row is None else np.size(row)
            raise ValueError(f"{column} of id {product_id} has {values} values; the head has {n_classes} classes")
    probs = np.array(predictions[column].tolist(), dtype=np.float64).reshape(len(ids), n_classes)
    bad = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1) | (probs > 1).any(axis=1) \
        | (np.abs(probs.sum(axis=1) - 1) > _SUM_TOLERANCE)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{column} of id {ids[row]} is not a probability distribution: {probs[row].tolist()}")
    return probs


def _rank_head(ids: np.ndarray, given: pd.Series, probs: np.ndarray, names: list[str], head: str,
               method: str) -> pd.DataFrame:
    labelled = given.notna().to_numpy()
    ids, given, probs = ids[labelled], given[labelled], probs[labelled]
    labels = pd.Index(names).get_indexer(given)
    if (labels < 0).any():
        row = int(np.flatnonzero(labels < 0)[0])
        raise ValueError(f"head {head!r}: given label {given.iloc[row]!r} (e.g. id {ids[row]}) is not one of its "
                         f"classes: {', '.join(names)}")
    if not len(ids):
        return _empty()
    suggested = probs.argmax(axis=1)
    score = get_label_quality_scores(labels, probs, method=method)
    with warnings.catch_warnings():  # "May not flag all label issues in class ...": small classes are expected
        warnings.filterwarnings("ignore", message="May not flag all label issues", category=UserWarning)
        # n_jobs=1: fast at catalogue size (~0.2 s for 44k rows x 45 classes) and no processes forked
        # from the dashboard's threads.
        is_issue = (find_label_issues(labels, probs, n_jobs=1) if len(np.unique(labels)) >= 2
                    else np.zeros(len(ids), dtype=bool))
    order = np.lexsort((ids, score))
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(1, len(ids) + 1)
    rows, class_names = np.arange(len(ids)), np.array(names, dtype=object)
    frame = pd.DataFrame({
        "id": ids, "head": head, "given": class_names[labels], "suggested": class_names[suggested],
        "given_p": probs[rows, labels], "suggested_p": probs[rows, suggested], "score": score.astype(np.float64),
        "is_issue": np.asarray(is_issue, dtype=bool), "rank": rank,
    })
    return frame.iloc[order].reset_index(drop=True)


def _empty() -> pd.DataFrame:
    """No issues, with ISSUE_COLUMNS and their dtypes."""
    dtypes = {"id": "int64", "head": "str", "given": "str", "suggested": "str", "given_p": "float64",
              "suggested_p": "float64", "score": "float64", "is_issue": bool, "rank": "int64"}
    return pd.DataFrame({column: pd.Series(dtype=dtypes[column]) for column in ISSUE_COLUMNS})


def rank_evaluation(predictions: pd.DataFrame, classes: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """`rank_label_issues` over an evaluation's predictions (core.evaluation.files), leaving out true values
    the run never learned: the evaluation reports them as unknown classes, and they have no
    probability column to be scored against."""
    frame = predictions.copy()
    for head, names in classes.items():
        frame[head] = frame[head].where(frame[head].isin(list(names)))
    return rank_label_issues(frame, classes)


def save_issues(issues: pd.DataFrame, path: str | Path) -> None:
    """Write a `rank_label_issues` frame (a cross-validation keeps its ranking)."""
    issues.to_parquet(path, index=False)


def read_issues(path: str | Path) -> pd.DataFrame:
    """A frame `save_issues` wrote."""
    return pd.read_parquet(path)
