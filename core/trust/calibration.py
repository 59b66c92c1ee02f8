"""Calibrated confidence: one temperature per head (temperature scaling, Guo et al. 2017), and
how far a head's confidence is from its accuracy (expected calibration error, reliability bins).

Shapes: `probs` float [n, C] (softmax outputs, rows summing to 1); `labels` int [n] class indices,
IGNORE_INDEX where a row has no true class (left out). A temperature T rescales the logits:
softmax(log p / T), the same as softmax(logits / T) because softmax ignores a constant shift, so
the saved probabilities are enough to fit and apply it.
"""

from __future__ import annotations

import numpy as np

from core.data.schema import IGNORE_INDEX

ECE_BINS = 15  # torchmetrics' default; the reliability diagram uses the same bins
TEMPERATURE_RANGE = (0.05, 20.0)
_TINY = 1e-12


def _labelled(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or labels.shape != (len(probs),):
        raise ValueError(f"need probs [n, C] and labels [n], got shapes {probs.shape} and {labels.shape}")
    kept = labels != IGNORE_INDEX
    if ((labels[kept] < 0) | (labels[kept] >= probs.shape[1])).any():
        raise ValueError(f"labels must be class indices below {probs.shape[1]} or IGNORE_INDEX")
    return probs[kept], labels[kept]


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities at `temperature`: softmax(log p / T), float64 [n, C]."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), _TINY, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of the labelled rows (1.0 when there
    are none), searched in TEMPERATURE_RANGE."""
    probs, labels = _labelled(probs, labels)
    if not len(labels):
        return 1.0
    log_p = np.log(np.clip(probs, _TINY, None))

    def nll(log_temperature: float) -> float:
        logits = log_p / np.exp(log_temperature)
        logits -= logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits).sum(axis=1))
        return float(np.mean(log_norm - logits[np.arange(len(labels)), labels]))

    low, high = np.log(TEMPERATURE_RANGE)
    from scipy.optimize import minimize_scalar  # seconds to import: not on the path of every page that reads a run

    return float(np.exp(minimize_scalar(nll, bounds=(low, high), method="bounded").x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """ECE over the labelled rows, L1 over ECE_BINS equal-width bins of top-1 confidence: the mean over
    rows of |accuracy - confidence| taken per bin. None when no row is labelled. The same number as
    torchmetrics' multiclass_calibration_error(norm="l1") (each bin [low, high), 1.0 a bin of its own),
    without loading torch: the run folder's readers use it."""
    probs, labels = _labelled(probs, labels)
    if not len(labels):
        return None
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    which = np.searchsorted(edges, confidence, side="right") - 1
    gaps = np.bincount(which, correct, len(edges)) - np.bincount(which, confidence, len(edges))
    return float(np.abs(gaps).sum() / len(labels))


def reliability_bins(confidence: np.ndarray, correct: np.ndarray) -> list[dict]:
    """The reliability diagram's bins: per non-empty bin of top-1 confidence (ECE_BINS equal
    widths on [0, 1]), {"low", "high", "confidence" (mean), "accuracy", "rows"}."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool)
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, ECE_BINS - 1)
    bins = []
    for index in range(ECE_BINS):
        members = which == index
        if members.any():
            bins.append({"low": float(edges[index]), "high": float(edges[index + 1]),
                         "confidence": float(confidence[members].mean()), "accuracy": float(correct[members].mean()),
                         "rows": int(members.sum())})
    return bins
