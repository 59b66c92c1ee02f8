"""The evaluation file format: computed and written once (`write_evaluation`), read (`load_evaluation`,
`read_report`) and summarised (`head_summary`, `summary_table`, `exclusion_notes`).

An evaluation folder holds:
    predictions.parquet  one row per image: id; per head `<head>` (the true class: a schema class,
                         a class the run never saw, or None when excluded), `<head>_pred` (the
                         proposal), `<head>_p` (its confidence), `<head>_probs` (the raw softmax,
                         float [C], the schema's class order); with a run's trust layer
                         (core.trust.layer) also `<head>_argmax` (the head decoded on its own),
                         `<head>_accepted` (needs no person at the default target error),
                         `trust_role` (a validation row's core.trust.layer.Role, else None), and
                         `typicality` (the gate's score, core.trust.typicality; NaN without a gate)
                         with `typical` (the gate lets the row through)
    features.npy         float16 [rows, D], the run's pooled backbone features of each row, in
                         predictions' order, when the predictions came with them: what a later
                         calibration fits the typicality gate on
    report.json          {"checkpoint", "rows", "data" (the catalogue folder scored), "decoding"
                         ("consistent" with the trust layer, else "independent"), "heads": {head:
                         core.evaluation.metrics.report_from_confusion + "unknown_classes" {name: rows}}};
                         with the trust layer also "independent" {head: accuracy, macro_f1 of
                         each head decoded on its own}, "impossible" {"independent", "consistent":
                         share of rows whose hierarchy heads form no valid path} and "trust"
                         (core.trust.layer.assess)
    confusion.json       {head: {"classes": [...], "matrix": [[true x predicted counts]]}}

With the trust layer the proposal is the consistent, calibrated one (core.trust.layer.Trust.propose),
as everywhere a label is proposed; without it, each head's argmax and its raw probability.

True values the run's schema never saw are errors of their head, not silently dropped: each
becomes a class of its own, after the schema's and never predicted, reported by name. Rows
without a true class (missing, or a rare class the `ignore` policy leaves out) are excluded and
counted. Conventions are scikit-learn's (core.evaluation.metrics).

Where evaluation folders sit in a run folder is training.run_folder's business.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.catalogue import Catalogue
from core.data.schema import IGNORE_INDEX, LabelSchema
from core.evaluation.metrics import confusion_matrix, report_from_confusion
from core.trust.layer import Trust, assess, roles

PREDICTIONS_FILE, REPORT_FILE, CONFUSION_FILE = "predictions.parquet", "report.json", "confusion.json"
FEATURES_FILE = "features.npy"
FILES = (PREDICTIONS_FILE, REPORT_FILE, CONFUSION_FILE)
METRICS = ("accuracy", "macro_f1", "weighted_f1")
SUMMARY_COLUMNS = (*METRICS, "support", "excluded", "unknown")


def check_head(head: str, heads: Sequence[str]) -> None:
    if head not in heads:
        raise ValueError(f"unknown head {head!r}; valid: {', '.join(heads)}")


# --- writing


def write_evaluation(catalogue: Catalogue, schema: LabelSchema, ids: np.ndarray, probs: Mapping[str, np.ndarray],
                     folder: str | Path, checkpoint: str, trust: Trust | None = None,
                     validation_split: bool = False, features: np.ndarray | None = None) -> dict:
    """Score predictions on catalogue `ids` and write the evaluation folder; returns report.json's content.

    ids: int64 [n], catalogue ids; probs: head -> raw softmax float [n, C] in the schema's class
    order. checkpoint: what made the predictions, for display. trust: the run's trust layer (its
    proposals are scored, and the assessment added); validation_split: `ids` are the run's own
    validation rows (core.trust.layer.assess then keeps each number to the half that did not fit it);
    features: the rows' pooled backbone features float [n, D], kept and scored by the trust layer's gate.
    The report's "data" is the catalogue's folder.
    """
    rows = catalogue.frame.set_index("id").loc[ids].reset_index()
    labels = schema.encode(rows)
    # The run's own validation rows may be the gate's reference rows (scored leaving themselves out);
    # another catalogue's ids name other photos.
    own = np.asarray(ids) if validation_split else None
    proposals = trust.propose(probs, features=features, ids=own) if trust is not None else None
    columns: dict[str, object] = {"id": np.asarray(ids)}
    heads, confusion, independent, scored, correct = {}, {}, {}, {}, {}
    for column, head in enumerate(schema.heads):
        true, unknown_classes = _true_classes(schema, head, rows[head], labels[:, column])
        classes = schema.classes[head] + list(unknown_classes)
        argmax = pd.Series(schema.decode(head, probs[head].argmax(axis=1)), dtype=object)
        if proposals is None:
            predicted, confidence = argmax, probs[head].max(axis=1)
        else:
            predicted = pd.Series(schema.decode(head, proposals.labels[head]), dtype=object)
            confidence = proposals.confidence[head]
            independent[head] = _metrics(confusion_from_labels(true, argmax, classes), classes)
            columns[f"{head}_argmax"] = argmax.tolist()
        matrix = confusion_from_labels(true, predicted, classes)
        heads[head] = {**report_from_confusion(matrix, classes, int(true.isna().sum())),
                       "unknown_classes": unknown_classes}
        confusion[head] = {"classes": classes, "matrix": matrix.tolist()}
        scored[head] = true.notna().to_numpy()
        correct[head] = (true == predicted).to_numpy() & scored[head]
        columns.update({head: true.tolist(), f"{head}_pred": predicted.tolist(), f"{head}_p": confidence,
                        f"{head}_probs": list(probs[head])})
    report = {"checkpoint": checkpoint, "rows": len(ids), "data": str(catalogue.root),
              "decoding": "independent" if trust is None else "consistent", "heads": heads}
    if trust is not None:
        role = roles(ids) if validation_split else None
        accepted = trust.accepted(proposals)
        columns.update({f"{head}_accepted": accepted[head] for head in schema.heads})
        columns["trust_role"] = None if role is None else [str(r) for r in role]
        columns.update({"typicality": proposals.typicality, "typical": proposals.typical})
        report["independent"] = independent
        report["impossible"] = {
            "independent": float(trust.paths.impossible({h: probs[h].argmax(axis=1) for h in schema.heads}).mean()),
            "consistent": float(trust.paths.impossible(proposals.labels).mean()),
        }
        report["trust"] = assess(trust, probs, proposals, labels, scored, correct, role)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FEATURES_FILE).unlink(missing_ok=True)  # an earlier evaluation's, of other rows
    if features is not None:
        np.save(folder / FEATURES_FILE, np.asarray(features, dtype=np.float16))
    pd.DataFrame(columns).to_parquet(folder / PREDICTIONS_FILE, index=False)
    (folder / CONFUSION_FILE).write_text(json.dumps(confusion))
    (folder / REPORT_FILE).write_text(json.dumps(report, indent=1))  # last: `version` follows it
    return report


def _true_classes(schema: LabelSchema, head: str, values: pd.Series, encoded: np.ndarray
                  ) -> tuple[pd.Series, dict[str, int]]:
    """The true class of each row as the report scores it: the schema's class (None when the
    schema ignores the value), or the value itself when the schema never saw it (a class of its
    own, never predicted); and those unknown values' rows, most first."""
    true = pd.Series(schema.decode(head, encoded), dtype=object)
    unknown = true.isna().to_numpy() & values.notna().to_numpy() & ~values.isin(list(schema.counts[head])).to_numpy()
    counts = values[unknown].astype(str).value_counts()
    true[unknown] = values[unknown].astype(str).to_numpy()
    return true, {str(name): int(n) for name, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))}


def _metrics(matrix: np.ndarray, classes: Sequence[str]) -> dict:
    report = report_from_confusion(matrix, classes)
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}


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


# --- reading


@dataclass(frozen=True)
class Evaluation:
    """One evaluation folder, read: `predictions` one row per image, `report` and `confusion` as
    in the module docstring."""

    name: str  # the folder's name
    predictions: pd.DataFrame
    report: dict
    confusion: dict

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.report["heads"])

    def classes(self, head: str) -> list[str]:
        check_head(head, self.heads)
        return self.confusion[head]["classes"]

    def matrix(self, head: str) -> np.ndarray:
        """Counts int [C, C]: row = true class, column = predicted class, in `classes(head)` order."""
        check_head(head, self.heads)
        return np.asarray(self.confusion[head]["matrix"], dtype=np.int64)


def is_complete(folder: str | Path) -> bool:
    """Whether `folder` holds all three evaluation files."""
    return all((Path(folder) / name).is_file() for name in FILES)


def version(folder: str | Path) -> int:
    """Changes whenever the evaluation is written again (report.json's time, the file written last)."""
    return (Path(folder) / REPORT_FILE).stat().st_mtime_ns


def read_features(folder: str | Path) -> np.ndarray | None:
    """features.npy as float32 [rows, D], in predictions' order; None for an evaluation written without."""
    path = Path(folder) / FEATURES_FILE
    return np.load(path).astype(np.float32) if path.is_file() else None


def read_report(folder: str | Path) -> dict:
    """report.json alone: cheap, without the per-image predictions."""
    return json.loads((Path(folder) / REPORT_FILE).read_text())


def load_evaluation(folder: str | Path) -> Evaluation:
    """Read the evaluation folder; FileNotFoundError naming what is missing."""
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a complete evaluation: no {', '.join(missing)}")
    return Evaluation(
        name=folder.name,
        predictions=pd.read_parquet(folder / PREDICTIONS_FILE),
        report=read_report(folder),
        confusion=json.loads((folder / CONFUSION_FILE).read_text()),
    )


def evaluated_dataset(report: dict, run_data: str) -> str:
    """The catalogue folder an evaluation scored: its report's "data", else (a report written
    before it recorded one) `run_data`, the run's own catalogue."""
    return report.get("data") or run_data


# --- summarising


def head_summary(report: dict) -> dict[str, dict]:
    """Per head, SUMMARY_COLUMNS: accuracy, macro_f1, weighted_f1, support, excluded (rows without a
    true class) and unknown (rows of classes the run never saw; in support, as errors)."""
    return {head: {**{key: entry[key] for key in (*METRICS, "support", "excluded")},
                   "unknown": sum(entry.get("unknown_classes", {}).values())}
            for head, entry in report["heads"].items()}


def mean_macro_f1(heads: Mapping[str, Mapping]) -> float:
    """Every head's macro-F1 averaged, every head counting the same: of the proposals
    (report["heads"]) or of each head decoded on its own (report["independent"])."""
    return float(np.mean([entry["macro_f1"] for entry in heads.values()]))


def summary_table(summary: Mapping[str, Mapping]) -> pd.DataFrame:
    """A `head_summary` (or a run record's metrics["heads"]) as a frame: index `head`, in its order."""
    return pd.DataFrame.from_dict(dict(summary), orient="index").rename_axis("head")


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
            notes.append(f"{head}: {sum(unknown.values()):,} rows of classes the run never saw, counted as "
                         f"errors: {unknown_names(unknown)}.")
    return notes


def unknown_names(unknown_classes: Mapping[str, int]) -> str:
    """`name (rows), ...` of a head's unknown classes."""
    return ", ".join(f"{name} ({rows:,})" for name, rows in unknown_classes.items())
