"""Abstention at a chosen error rate: per head, the lowest confidence threshold whose accepted
proposals keep their error at or under a target E, with a finite-sample guarantee.

The rule (Learn-then-Test with a Bonferroni correction over a fixed grid, Angelopoulos et al.
2021): THRESHOLDS is fixed in advance. On held-out rows that chose nothing else, each threshold
lambda accepts the n(lambda) proposals with confidence >= lambda, k(lambda) of them wrong. Its
error is certified when the Clopper-Pearson upper bound at level DELTA / len(THRESHOLDS) is <= E;
the chosen threshold is the lowest certified one (the most proposals accepted). With probability
at least 1 - DELTA over the draw of those rows, every certified threshold, the chosen one
included, has a true error rate (on rows exchangeable with them) at most E. A head where no
threshold is certified (too few rows, or too many errors even among its surest) never
auto-accepts: a person decides.

Only the counts n and k per threshold are kept (`Selection`), so a threshold for any E can be
chosen later from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

DELTA = 0.05  # the guarantee's failure probability
TARGET_ERROR = 0.02  # the default E
# Confidence thresholds, fixed before any data: dense near 1, where the accepted errors are decided.
THRESHOLDS = tuple(np.unique(np.round(1 - np.geomspace(0.8, 1e-4, 60), 6)).tolist())


def check_target(target_error: float) -> float:
    if isinstance(target_error, bool) or not isinstance(target_error, (int, float)) or not 0 < target_error < 1:
        raise ValueError(f"the target error must be a rate between 0 and 1 (0.02 = 2 %), got {target_error!r}")
    return float(target_error)


def error_upper_bound(errors: np.ndarray, accepted: np.ndarray, level: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound on an error rate with `errors` of `accepted`, at
    failure probability `level`; 1.0 where nothing is accepted."""
    errors, accepted = np.asarray(errors, dtype=np.float64), np.asarray(accepted, dtype=np.float64)
    bound = np.ones_like(accepted)
    some = (accepted > 0) & (errors < accepted)
    bound[some] = beta.ppf(1 - level, errors[some] + 1, accepted[some] - errors[some])
    return bound


@dataclass(frozen=True)
class Selection:
    """One head's counts on the rows that choose its thresholds: per THRESHOLDS entry, how many
    proposals it accepts (`accepted`) and how many of those are wrong (`errors`)."""

    accepted: tuple[int, ...]
    errors: tuple[int, ...]
    rows: int  # labelled rows counted

    @classmethod
    def count(cls, confidence: np.ndarray, correct: np.ndarray) -> Selection:
        """confidence float [n] of each proposal, correct bool [n] (labelled rows only)."""
        confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool)
        if confidence.shape != correct.shape or confidence.ndim != 1:
            raise ValueError(f"need confidence [n] and correct [n], got {confidence.shape} and {correct.shape}")
        grid = np.asarray(THRESHOLDS)[:, None]
        taken = confidence[None, :] >= grid
        return cls(tuple(int(n) for n in taken.sum(axis=1)), tuple(int(k) for k in (taken & ~correct).sum(axis=1)),
                   len(confidence))

    def threshold(self, target_error: float = TARGET_ERROR, delta: float = DELTA) -> float | None:
        """The lowest certified threshold at `target_error` (module docstring), None when none is."""
        check_target(target_error)
        bound = error_upper_bound(np.array(self.errors), np.array(self.accepted), delta / len(THRESHOLDS))
        certified = np.flatnonzero(bound <= target_error)
        return float(THRESHOLDS[certified.min()]) if len(certified) else None

    def to_dict(self) -> dict:
        return {"accepted": list(self.accepted), "errors": list(self.errors), "rows": self.rows}

    @classmethod
    def from_dict(cls, values: Mapping) -> Selection:
        if len(values["accepted"]) != len(THRESHOLDS) or len(values["errors"]) != len(THRESHOLDS):
            raise ValueError(f"a selection needs counts for the {len(THRESHOLDS)} thresholds")
        return cls(tuple(values["accepted"]), tuple(values["errors"]), int(values["rows"]))


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> list[dict]:
    """Per THRESHOLDS entry that accepts anything: {"threshold", "coverage" (share of rows accepted),
    "error" (share of the accepted that are wrong), "accepted"}; the curve a catalogue lead reads."""
    selection = Selection.count(confidence, correct)
    return [{"threshold": threshold, "coverage": accepted / selection.rows, "error": errors / accepted,
             "accepted": accepted}
            for threshold, accepted, errors in zip(THRESHOLDS, selection.accepted, selection.errors) if accepted]
