"""An evaluation (core.evaluation.files) reshaped for a person: class tables, the photos behind a class's
or a confusion cell's numbers, misclassified photos, run-vs-run comparisons and CSV exports.

Shapes: `report` is report.json's content and `predictions` predictions.parquet's frame (see
core.evaluation.files); functions return small frames the Evaluate page renders as they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.choices import Choice
from core.data.profile import OTHERS_LABEL
from core.evaluation.files import METRICS, check_head, head_summary, summary_table
from core.trust.abstention import rows_needed
from core.untrusted import spreadsheet_csv

CLASS_COLUMNS = ["class", "precision", "recall", "f1", "support", "predicted"]


def class_table(report: dict, head: str) -> pd.DataFrame:
    """The head's class-wise report: one row per class (report order) with CLASS_COLUMNS and
    `unknown` (True for a class the run never saw)."""
    check_head(head, tuple(report["heads"]))
    entry = report["heads"][head]
    table = pd.DataFrame(entry["classes"], columns=CLASS_COLUMNS)
    table["unknown"] = table["class"].isin(list(entry.get("unknown_classes", {})))
    return table


def filter_classes(table: pd.DataFrame, contains: str = "", min_support: int = 0) -> pd.DataFrame:
    """Rows of a `class_table` whose class name contains `contains` (any case) and whose support
    is at least `min_support`."""
    keep = table["class"].str.contains(contains.strip(), case=False, regex=False) & (table["support"] >= min_support)
    return table[keep]


# The images behind one class's numbers, by outcome (class_rows).
CLASS_OUTCOMES = ("missed", "wrongly given", "right")


def class_rows(predictions: pd.DataFrame, head: str, class_name: str, outcome: str) -> pd.DataFrame:
    """The scored predictions behind `class_name`'s precision and recall on `head`, most confident
    first. outcome "missed": true `class_name`, predicted another (recall's losses); "wrongly
    given": predicted `class_name`, true another known class (precision's losses); "right": both.
    right + missed = the class's support; right / (right + wrongly given) = its precision."""
    if outcome not in CLASS_OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; choose one of {', '.join(CLASS_OUTCOMES)}")
    true, predicted = predictions[head], predictions[f"{head}_pred"]
    keep = {
        "missed": (true == class_name) & (predicted != class_name),
        "wrongly given": (predicted == class_name) & true.notna() & (true != class_name),
        "right": (true == class_name) & (predicted == class_name),
    }[outcome]
    return predictions[keep].sort_values(f"{head}_p", ascending=False, kind="stable")


@dataclass(frozen=True)
class ConfusionView:
    """A confusion matrix cut to the classes with the most support; the rest summed as OTHERS_LABEL.

    classes: row and column labels: kept classes by support (descending, ties in class order),
        then OTHERS_LABEL when any class was grouped;
    counts: int [k, k], row = true, column = predicted;
    grouped: the classes summed into OTHERS_LABEL (class order).
    """

    classes: list[str]
    counts: np.ndarray
    grouped: list[str]

    @property
    def rates(self) -> np.ndarray:
        """Row-normalised counts, float [k, k]: each true class's share predicted as each column."""
        return row_normalised(self.counts)


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """`matrix` with each row divided by its sum (a row summing to 0 stays 0)."""
    matrix = np.asarray(matrix, dtype=float)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def top_n_confusion(classes: Sequence[str], matrix: np.ndarray, top_n: int) -> ConfusionView:
    """The `top_n` classes by support (true rows) of `matrix`, the others summed into one row and
    one column named OTHERS_LABEL (none when nothing is left over)."""
    if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 1:
        raise ValueError(f"top_n must be a positive int, got {top_n!r}")
    matrix = np.asarray(matrix, dtype=np.int64)
    order = np.argsort(-matrix.sum(axis=1), kind="stable")
    kept, rest = order[:top_n], np.sort(order[top_n:])
    groups = [[index] for index in kept] + ([list(rest)] if len(rest) else [])
    # Sum rows, then columns, over each group: a [k, k] matrix.
    rows = np.stack([matrix[group].sum(axis=0) for group in groups])
    counts = np.stack([rows[:, group].sum(axis=1) for group in groups], axis=1)
    labels = [classes[index] for index in kept] + ([OTHERS_LABEL] if len(rest) else [])
    return ConfusionView(classes=labels, counts=counts, grouped=[classes[index] for index in rest])


def cell_rows(predictions: pd.DataFrame, head: str, view: ConfusionView, true_class: str,
              predicted_class: str) -> pd.DataFrame:
    """The predictions in cell (true_class, predicted_class) of `view`, most confident first;
    OTHERS_LABEL stands for every grouped class. Their number equals the cell's count."""
    for label in (true_class, predicted_class):
        if label not in view.classes:
            raise ValueError(f"{label!r} is not a row or column of this matrix; valid: {', '.join(view.classes)}")

    def members(label: str) -> list[str]:
        return view.grouped if label == OTHERS_LABEL else [label]

    inside = predictions[head].isin(members(true_class)) & predictions[f"{head}_pred"].isin(members(predicted_class))
    return predictions[inside].sort_values(f"{head}_p", ascending=False, kind="stable")


def top_probabilities(row: pd.Series, head: str, classes: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The `k` most probable classes of `head` for one prediction row: (class, probability), best first.
    classes: the head's model classes (the schema's, the order of `<head>_probs`)."""
    probs = np.asarray(row[f"{head}_probs"], dtype=float)
    best = np.argsort(-probs, kind="stable")[:k]
    return [(classes[index], float(probs[index])) for index in best]


def misclassified(predictions: pd.DataFrame, head: str, most_confident_first: bool = True) -> pd.DataFrame:
    """Rows whose true class of `head` is known and differs from the prediction, sorted by the
    predicted class's probability."""
    wrong = predictions[head].notna() & (predictions[head] != predictions[f"{head}_pred"])
    return predictions[wrong].sort_values(f"{head}_p", ascending=not most_confident_first, kind="stable")


def outcomes(predictions: pd.DataFrame, head: str) -> pd.Series:
    """"right" or "wrong" per evaluated id (index: id) for `head`; rows without a true class are left out."""
    scored = predictions[predictions[head].notna()]
    right = (scored[head] == scored[f"{head}_pred"]).to_numpy()
    return pd.Series(np.where(right, "right", "wrong"), index=scored["id"].to_numpy(), name=head)


def label_lines(row: pd.Series, heads: Sequence[str]) -> list[str]:
    """One line per head for a prediction row: `✓ head: predicted (p)` when right, `✗ head:
    predicted (p), true X` when wrong, `· head: predicted (p), no true class` when excluded."""
    lines = []
    for head in heads:
        true, predicted = row[head], row[f"{head}_pred"]
        said = f"{head}: {predicted} ({row[f'{head}_p']:.2f})"
        if pd.isna(true):
            lines.append(f"· {said}, no true class")
        elif true == predicted:
            lines.append(f"✓ {said}")
        else:
            lines.append(f"✗ {said}, true {true}")
    return lines


def compare_summaries(report_a: dict, report_b: dict) -> pd.DataFrame:
    """Per head both reports have (index `head`, a's order): `<metric>_a`, `<metric>_b` and
    `<metric>_delta` (b - a) for each of METRICS, then support_a, support_b."""
    heads = [head for head in report_a["heads"] if head in report_b["heads"]]
    rows = {}
    for head in heads:
        a, b = report_a["heads"][head], report_b["heads"][head]
        row = {}
        for metric in METRICS:
            row.update({f"{metric}_a": a[metric], f"{metric}_b": b[metric], f"{metric}_delta": b[metric] - a[metric]})
        rows[head] = {**row, "support_a": a["support"], "support_b": b["support"]}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("head")


SIGNIFICANCE = 0.05  # a change is flagged when McNemar's test on the shared rows gives p below this
SHARED_COLUMNS = ["rows", "accuracy_a", "accuracy_b", "delta", "only_a_right", "only_b_right", "p_value", "change"]


class Change(Choice):
    """What a comparison on shared rows says of a head or a class."""

    BETTER = "better"
    WORSE = "worse"
    UNSURE = "no meaningful change"  # the discordant rows are too few, or too evenly split, to tell


def shared_outcomes(predictions_a: pd.DataFrame, predictions_b: pd.DataFrame, head: str) -> pd.DataFrame:
    """The rows both evaluations scored for `head` with the same true class (a label changed between
    them is another question): index id; columns true, right_a, right_b."""
    sides = [predictions[predictions[head].notna()].set_index("id")[[head, f"{head}_pred"]]
             for predictions in (predictions_a, predictions_b)]
    both = sides[0].join(sides[1], how="inner", suffixes=("_a", "_b"))
    both = both[both[f"{head}_a"] == both[f"{head}_b"]]
    return pd.DataFrame({"true": both[f"{head}_a"], "right_a": both[f"{head}_a"] == both[f"{head}_pred_a"],
                         "right_b": both[f"{head}_b"] == both[f"{head}_pred_b"]}, index=both.index)


def mcnemar_p(only_a_right: int, only_b_right: int) -> float:
    """Two-sided exact McNemar p-value: the chance of discordant rows splitting at least this
    unevenly if both models were equally good on these rows (each discordant row a fair coin)."""
    discordant = only_a_right + only_b_right
    if discordant == 0:
        return 1.0
    from scipy.stats import binom  # scipy comes with scikit-learn; imported when a comparison is made

    return float(min(1.0, 2 * binom.cdf(min(only_a_right, only_b_right), discordant, 0.5)))


def _compared(outcomes: pd.DataFrame, alpha: float) -> dict:
    only_a = int((outcomes["right_a"] & ~outcomes["right_b"]).sum())
    only_b = int((~outcomes["right_a"] & outcomes["right_b"]).sum())
    rows, p = len(outcomes), mcnemar_p(only_a, only_b)
    accuracy_a = float(outcomes["right_a"].mean()) if rows else np.nan
    accuracy_b = float(outcomes["right_b"].mean()) if rows else np.nan
    change = Change.UNSURE if p >= alpha else Change.BETTER if only_b > only_a else Change.WORSE
    return {"rows": rows, "accuracy_a": accuracy_a, "accuracy_b": accuracy_b, "delta": accuracy_b - accuracy_a,
            "only_a_right": only_a, "only_b_right": only_b, "p_value": p, "change": change}


def compare_shared(predictions_a: pd.DataFrame, predictions_b: pd.DataFrame, heads: Sequence[str],
                   alpha: float = SIGNIFICANCE) -> pd.DataFrame:
    """Two evaluations like for like: per head (index `head`), on the rows both scored with the same
    true class, each one's accuracy, the delta (b - a), the rows only one got right, McNemar's p and
    the `Change` it supports at level `alpha` (SHARED_COLUMNS)."""
    rows = {head: _compared(shared_outcomes(predictions_a, predictions_b, head), alpha) for head in heads}
    return pd.DataFrame.from_dict(rows, orient="index", columns=SHARED_COLUMNS).rename_axis("head")


def compare_classes(predictions_a: pd.DataFrame, predictions_b: pd.DataFrame, head: str,
                    alpha: float = SIGNIFICANCE) -> pd.DataFrame:
    """Per true class of `head` on the shared rows (`shared_outcomes`): class, then SHARED_COLUMNS
    with accuracy as the class's recall; a class is WORSE or BETTER only where its own rows make
    the change significant, so a few rows never raise a flag. Largest drop first."""
    outcomes = shared_outcomes(predictions_a, predictions_b, head)
    table = pd.DataFrame([{"class": name, **_compared(rows, alpha)} for name, rows in outcomes.groupby("true")],
                         columns=["class", *SHARED_COLUMNS])
    return table.sort_values(["delta", "class"], kind="stable").reset_index(drop=True)


def classes_csv(report: dict) -> str:
    """Every head's class-wise report as CSV for a spreadsheet (class names made safe,
    core.untrusted): head, then CLASS_COLUMNS, then unknown."""
    tables = [class_table(report, head).assign(head=head) for head in report["heads"]]
    return spreadsheet_csv(pd.concat(tables)[["head", *CLASS_COLUMNS, "unknown"]], index=False)


def summary_csv(report: dict) -> str:
    """The per-head summary (`core.evaluation.files.head_summary`) as CSV for a spreadsheet (core.untrusted)."""
    return spreadsheet_csv(summary_table(head_summary(report)))


def report_json(report: dict) -> str:
    """The whole report (summary and class-wise numbers of every head) as indented JSON."""
    return json.dumps(report, indent=1)


TRUST_COLUMNS = ["accuracy", "accuracy_independent", "macro_f1", "macro_f1_independent", "temperature",
                 "ece_before", "ece_after", "threshold", "coverage", "error", "accepted"]


def trust_table(report: dict, target: float) -> pd.DataFrame:
    """Per head (index `head`), for an evaluation written through a trust layer: accuracy and
    macro-F1 of the proposals and of each head decoded on its own, the temperature, ECE before
    and after it, and at `target` error (one of core.trust.layer.TARGETS): the threshold (NaN: never
    accepted), the share of proposals accepted, their realised error, and how many."""
    trust = report["trust"]["heads"]
    rows = {}
    for head, entry in report["heads"].items():
        at = trust[head]["targets"][str(target)]
        rows[head] = {
            "accuracy": entry["accuracy"], "accuracy_independent": report["independent"][head]["accuracy"],
            "macro_f1": entry["macro_f1"], "macro_f1_independent": report["independent"][head]["macro_f1"],
            "temperature": trust[head]["temperature"], "ece_before": trust[head]["ece_before"],
            "ece_after": trust[head]["ece_after"], "threshold": at["threshold"], "coverage": at["coverage"],
            "error": at["error"], "accepted": at["accepted"],
        }
    return pd.DataFrame.from_dict(rows, orient="index", columns=TRUST_COLUMNS).astype(float).rename_axis("head")


def trust_sentences(report: dict, target: float) -> list[str]:
    """What a catalogue lead wants to read, per head and for whole products: "at ≤ 2 % error,
    71 % of subCategory tags need no person"; for a head with none, how many held-out rows would
    certify it at the least."""
    trust = report["trust"]
    sentences = [f"At ≤ {target:.0%} error, {entry['targets'][str(target)]['coverage']:.0%} of {head} tags "
                 "need no person."
                 if entry["targets"][str(target)]["threshold"] is not None else
                 f"At ≤ {target:.0%} error, every {head} tag needs a person: {uncertified_reason(trust, target)}"
                 for head, entry in trust["heads"].items()]
    sentences.append(f"{trust['products'][str(target)]:.0%} of products need no person in any head.")
    return sentences


def uncertified_reason(trust: dict, target: float) -> str:
    """Why a head has no threshold at `target` error, with the rows it would take at the least: a
    threshold is certified only by `rows_needed(target)` held-out proposals above it, all right (more
    when some are wrong)."""
    needed, held_out = rows_needed(target), trust["rows"]["targets"]
    if held_out < needed:
        return (f"{held_out:,} held-out rows are too few to certify it; at least {needed - held_out:,} more "
                f"({needed:,} in all, more if any of its surest proposals is wrong) would be needed.")
    return (f"too many errors even among its surest proposals to certify it: at least {needed:,} of them above "
            "one threshold must be right (more if any is wrong).")
