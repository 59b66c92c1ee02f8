"""Per-head classification reports from predictions: accuracy, macro/weighted F1, class-wise P/R/F1.

Conventions match scikit-learn's `classification_report` and `confusion_matrix`, so numbers can be
checked against it: rows whose true label is IGNORE_INDEX (None, missing, rare under `ignore`) are
excluded and counted; macro and weighted averages run over the classes that occur in the true or the
predicted labels; a precision or recall with a zero denominator is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.data.schema import IGNORE_INDEX


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [num_classes, num_classes]: row = true class, column = predicted class.

    Rows with `y_true == IGNORE_INDEX` are left out.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    kept = y_true != IGNORE_INDEX
    flat = y_true[kept].astype(np.int64) * num_classes + y_pred[kept].astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def report_from_confusion(matrix: np.ndarray, classes: Sequence[str], excluded: int = 0) -> dict:
    """The head's report from its confusion matrix.

    Returns {"accuracy", "macro_f1", "weighted_f1", "support", "excluded",
             "classes": [{"class", "precision", "recall", "f1", "support", "predicted"}, ...]}
    with one entry per class in index order (absent classes included, support 0).
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    true_positive = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    total = int(support.sum())
    present = (support > 0) | (predicted > 0)
    return {
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / total) if total else 0.0,
        "support": total,
        "excluded": int(excluded),
        "classes": [
            {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s),
             "predicted": int(n)}
            for name, p, r, f, s, n in zip(classes, precision, recall, f1, support, predicted)
        ],
    }
