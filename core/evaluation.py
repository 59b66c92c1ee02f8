"""A run's evaluation files, read and reshaped into what the Evaluate page shows and exports.

An evaluation folder (`training.evaluate.write_evaluation` writes it: `<run>/evaluation/` for the
validation split, `<run>/evaluation-<dataset>/` for another catalogue) holds:
    predictions.parquet  id; per head `<head>` (true class, None when excluded), `<head>_pred`,
                         `<head>_p` (its probability), `<head>_probs` (float [C], `classes` order)
    report.json          {"checkpoint", "rows", "data" (once known), "heads": {head: report}}; a
                         head's report is core.metrics.report_from_confusion's, plus
                         "unknown_classes" {name: rows} once `count_unknown_classes` ran
    confusion.json       {head: {"classes": [...], "matrix": [[true x predicted counts]]}}

Conventions are scikit-learn's (see core.metrics): rows without a true class are excluded and
counted; a class never predicted has precision 0.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.profile import OTHERS_LABEL
from core.data.schema import IGNORE_INDEX, LabelSchema
from core.metrics import confusion_matrix, report_from_confusion

VALIDATION = "evaluation"  # the folder of the validation split's evaluation; others add -<dataset>
FILES = ("predictions.parquet", "report.json", "confusion.json")
METRICS = ("accuracy", "macro_f1", "weighted_f1")
CLASS_COLUMNS = ["class", "precision", "recall", "f1", "support", "predicted"]


def _check_head(head: str, heads: Sequence[str]) -> None:
    if head not in heads:
        raise ValueError(f"unknown head {head!r}; valid: {', '.join(heads)}")


@dataclass(frozen=True)
class Evaluation:
    """One evaluation folder, read: `predictions` one row per image, `report` and `confusion` as
    in the module docstring."""

    name: str  # the folder's name: VALIDATION or VALIDATION-<dataset>
    predictions: pd.DataFrame
    report: dict
    confusion: dict

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.report["heads"])

    def classes(self, head: str) -> list[str]:
        _check_head(head, self.heads)
        return self.confusion[head]["classes"]

    def matrix(self, head: str) -> np.ndarray:
        """Counts int [C, C]: row = true class, column = predicted class, in `classes(head)` order."""
        _check_head(head, self.heads)
        return np.asarray(self.confusion[head]["matrix"], dtype=np.int64)


def evaluation_names(run_folder: str | Path) -> list[str]:
    """The run's complete evaluation folders: VALIDATION first when present, then the others by name."""
    found = [path.name for path in Path(run_folder).glob(f"{VALIDATION}*")
             if path.is_dir() and all((path / name).is_file() for name in FILES)]
    return sorted(found, key=lambda name: (name != VALIDATION, name))


def evaluated_dataset(report: dict, run_data: str) -> str:
    """The catalogue folder an evaluation scored: the one `python -m training evaluate --data`
    recorded in its report, else `run_data`, the run's own (its validation split)."""
    return report.get("data") or run_data


def read_report(run_folder: str | Path, name: str = VALIDATION) -> dict:
    """report.json of evaluation `name` alone: cheap, without the per-image predictions."""
    return json.loads((Path(run_folder) / name / "report.json").read_text())


def load_evaluation(run_folder: str | Path, name: str = VALIDATION) -> Evaluation:
    """Read evaluation `name` of the run in `run_folder`; ValueError listing the ones there are."""
    names = evaluation_names(run_folder)
    if name not in names:
        raise ValueError(f"no evaluation {name!r} in {run_folder}; it has: {', '.join(names) or 'none yet'}")
    folder = Path(run_folder) / name
    return Evaluation(
        name=name,
        predictions=pd.read_parquet(folder / "predictions.parquet"),
        report=json.loads((folder / "report.json").read_text()),
        confusion=json.loads((folder / "confusion.json").read_text()),
    )


def confusion_from_labels(true: pd.Series, predicted: pd.Series, classes: Sequence[str]) -> np.ndarray:
    """Counts int [C, C] in `classes` order from class names; rows whose true name is missing are
    left out. ValueError naming any other name that is not in `classes`."""
    index = pd.Index(list(classes), dtype=object)
    missing = true.isna().to_numpy()
    true_codes, predicted_codes = index.get_indexer(true.astype(object)), index.get_indexer(predicted.astype(object))
    strays = sorted(set(true[(true_codes < 0) & ~missing]) | set(predicted[predicted_codes < 0]))
    if strays:
        raise ValueError(f"labels {strays} are not among the classes {list(classes)}")
    return confusion_matrix(np.where(missing, IGNORE_INDEX, true_codes), predicted_codes, len(index))


def count_unknown_classes(folder: str | Path, frame: pd.DataFrame, schema: LabelSchema, data: str | None = None) -> dict:
    """Count true values the run's schema never saw as errors of their head, in evaluation `folder`.

    LabelSchema.encode ignores such values (unless the `other` policy folds them into its Other
    class), so write_evaluation leaves them out like missing labels. Here each becomes a class of
    its own, appended after the schema's and never predicted: its rows are wrong predictions, and
    it enters the report as scikit-learn would count it (support n, precision/recall/F1 0, part of
    the macro average). Rewrites the three files: predictions get the names as true labels,
    report.json `heads[head]["unknown_classes"]` {name: rows} (by rows, then name; {} when none)
    and `data` (the catalogue folder, when given), confusion.json the extended matrices.

    frame: the catalogue rows (`id` and the heads) the predictions were made on. Returns the report.
    """
    folder = Path(folder)
    predictions = pd.read_parquet(folder / "predictions.parquet")
    report = json.loads((folder / "report.json").read_text())
    truth = frame.set_index("id").loc[predictions["id"].to_numpy(), list(schema.heads)].reset_index(drop=True)
    confusion = {}
    for head in schema.heads:
        values = truth[head]
        unknown = predictions[head].isna() & values.notna() & ~values.isin(list(schema.counts[head]))
        rows = values[unknown].astype(str).value_counts()
        counts = {str(name): int(n) for name, n in sorted(rows.items(), key=lambda item: (-item[1], item[0]))}
        predictions.loc[unknown, head] = values[unknown].astype(str)
        classes = schema.classes[head] + list(counts)
        matrix = confusion_from_labels(predictions[head], predictions[f"{head}_pred"], classes)
        excluded = int(predictions[head].isna().sum())
        report["heads"][head] = {**report_from_confusion(matrix, classes, excluded), "unknown_classes": counts}
        confusion[head] = {"classes": classes, "matrix": matrix.tolist()}
    if data is not None:
        report["data"] = data
    predictions.to_parquet(folder / "predictions.parquet", index=False)
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    (folder / "confusion.json").write_text(json.dumps(confusion))
    return report


def summary_table(report: dict) -> pd.DataFrame:
    """One row per head (index `head`, report order): accuracy, macro_f1, weighted_f1, support,
    excluded (rows without a true class), unknown (rows of classes the run never saw; counted
    in support as errors)."""
    rows = {
        head: {**{key: entry[key] for key in (*METRICS, "support", "excluded")},
               "unknown": sum(entry.get("unknown_classes", {}).values())}
        for head, entry in report["heads"].items()
    }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("head")


def exclusion_notes(report: dict) -> list[str]:
    """One sentence per head with excluded rows or unknown classes, saying how many and which."""
    notes = []
    for head, entry in report["heads"].items():
        total = entry["support"] + entry["excluded"]
        if entry["excluded"]:
            notes.append(f"{head}: {entry['excluded']:,} of {total:,} rows excluded — no true class to score "
                         "(missing, or a rare class the run's policy ignores).")
        unknown = entry.get("unknown_classes", {})
        if unknown:
            names = ", ".join(f"{name} ({rows:,})" for name, rows in unknown.items())
            notes.append(f"{head}: {sum(unknown.values()):,} rows of classes the run never saw, counted as "
                         f"errors: {names}.")
    return notes


def class_table(report: dict, head: str) -> pd.DataFrame:
    """The head's class-wise report: one row per class (report order) with CLASS_COLUMNS and
    `unknown` (True for a class the run never saw)."""
    _check_head(head, tuple(report["heads"]))
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


def cell_rows(predictions: pd.DataFrame, head: str, view: ConfusionView, true_class: str, predicted_class: str) -> pd.DataFrame:
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


def compare_classes(report_a: dict, report_b: dict, head: str, tolerance: float = 0.0) -> pd.DataFrame:
    """Class-wise F1 of `head` in two reports, matched by class name (a class only one run has
    gets NaN on the other side): class, f1_a, f1_b, delta (b - a), support_a, support_b,
    regression (delta < -tolerance). Largest drop first, classes without a delta last."""
    for report in (report_a, report_b):
        _check_head(head, tuple(report["heads"]))
    sides = [
        pd.DataFrame(report["heads"][head]["classes"], columns=CLASS_COLUMNS)
        .set_index("class")[["f1", "support"]].add_suffix(suffix)
        for report, suffix in ((report_a, "_a"), (report_b, "_b"))
    ]
    table = sides[0].join(sides[1], how="outer", sort=False).reset_index()
    table["delta"] = table["f1_b"] - table["f1_a"]
    table["regression"] = table["delta"] < -tolerance
    table = table[["class", "f1_a", "f1_b", "delta", "support_a", "support_b", "regression"]]
    return table.sort_values("delta", kind="stable", na_position="last").reset_index(drop=True)


def classes_csv(report: dict) -> str:
    """Every head's class-wise report as CSV: head, then CLASS_COLUMNS, then unknown."""
    tables = [class_table(report, head).assign(head=head) for head in report["heads"]]
    return pd.concat(tables)[["head", *CLASS_COLUMNS, "unknown"]].to_csv(index=False)


def summary_csv(report: dict) -> str:
    """`summary_table` as CSV."""
    return summary_table(report).to_csv()


def report_json(report: dict) -> str:
    """The whole report (summary and class-wise numbers of every head) as indented JSON."""
    return json.dumps(report, indent=1)
