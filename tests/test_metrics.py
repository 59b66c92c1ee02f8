"""core.evaluation.metrics equals scikit-learn on the same predictions, and leaves ignored rows out."""

import numpy as np
import pytest
from sklearn.metrics import classification_report, confusion_matrix as sk_confusion_matrix

from core.data.schema import IGNORE_INDEX
from core.evaluation.metrics import confusion_matrix, report_from_confusion

CLASSES = ["Tshirts", "Shirts", "Jeans", "Caps"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 3, 200)  # class 3 never occurs in the truth...
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 4, 200))  # ...but is predicted
    matrix = confusion_matrix(y_true, y_pred, 4)
    np.testing.assert_array_equal(matrix, sk_confusion_matrix(y_true, y_pred, labels=range(4)))
    ours = report_from_confusion(matrix, CLASSES)
    theirs = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"])
    assert ours["macro_f1"] == pytest.approx(theirs["macro avg"]["f1-score"])
    assert ours["weighted_f1"] == pytest.approx(theirs["weighted avg"]["f1-score"])
    for index, row in enumerate(ours["classes"]):
        expected = theirs.get(str(index))
        if expected is None:
            continue
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (expected["precision"], expected["recall"], expected["f1-score"], expected["support"]))


def test_ignored_rows_are_excluded_and_counted():
    labels = np.array([[0, 1], [1, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX], [1, 0]])
    probs = {
        "articleType": np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.6, 0.4]]),
        "baseColour": np.array([[0.3, 0.7], [0.9, 0.1], [0.1, 0.9], [0.8, 0.2]]),
    }
    classes = {"articleType": ["A", "B"], "baseColour": ["Red", "Blue"]}
    reports = {}
    for column, (head, head_probs) in enumerate(probs.items()):
        matrix = confusion_matrix(labels[:, column], head_probs.argmax(axis=1), 2)
        excluded = int((labels[:, column] == IGNORE_INDEX).sum())
        reports[head] = {"report": report_from_confusion(matrix, classes[head], excluded), "confusion": matrix.tolist()}
    article = reports["articleType"]
    assert article["confusion"] == [[1, 0], [1, 1]]
    assert article["report"]["support"] == 3 and article["report"]["excluded"] == 1
    assert article["report"]["accuracy"] == pytest.approx(2 / 3)
    colour = reports["baseColour"]["report"]
    assert colour["support"] == 2 and colour["excluded"] == 2 and colour["accuracy"] == 1.0
    assert colour["classes"][0] == {"class": "Red", "precision": 1.0, "recall": 1.0, "f1": 1.0,
                                    "support": 1, "predicted": 1}


def test_an_all_ignored_head_reports_zero_support():
    report = report_from_confusion(np.zeros((2, 2), dtype=int), ["A", "B"], excluded=5)
    assert report["support"] == 0 and report["accuracy"] == 0.0 and report["excluded"] == 5
