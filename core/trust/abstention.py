"""Abstention at a chosen error rate: per head, the lowest confidence threshold whose accepted
proposals keep their error at or under a target E, with a finite-sample guarantee.

The rule (Learn-then-Test's fixed-sequence procedure, Angelopoulos, Bates, Candes, Jordan and Lei
2021, "Learn then Test", arXiv 2110.01052): THRESHOLDS is fixed in advance. On held-out rows that
chose nothing else, each threshold lambda accepts the n(lambda) proposals with confidence >= lambda,
k(lambda) of them wrong. For each lambda, "its true error is above E" is a null hypothesis, with a
valid p-value from the binomial tail (equivalently: rejected when the one-sided Clopper-Pearson upper
bound at level DELTA is <= E). The hypotheses are tested in an order fixed before these rows are
counted, from strict to loose, each at the full DELTA, stopping at the first that is not rejected;
the chosen threshold is the last one rejected, the lowest certified. The first one tested is the
strictest threshold that other rows (`Selection.guide`) expect to accept enough proposals.
Fixed-sequence testing controls the family-wise error at DELTA (Bauer 1991; LTT's Proposition on
sequential graphs): the first true
null reached is rejected with probability at most DELTA, and nothing after it is tested. So with
probability at least 1 - DELTA over the draw of those rows, every certified threshold, the chosen
one included, has a true error rate (on rows exchangeable with them) at most E. It needs no
monotone error curve; it gives up only thresholds that come after a failure, which near a good
head's top are few, where Bonferroni over the grid (what was used before) tested every threshold
at DELTA / 60 and certified far fewer. A head where the first threshold tested fails, or where the
guide expects too few rows at every threshold, never auto-accepts: a person decides.

Only the counts n and k per threshold are kept (`Selection`), so a threshold for any E can be
chosen later from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

DELTA = 0.05  # the guarantee's failure probability
TARGET_ERROR = 0.02  # the default E
START_MARGIN = 2  # the fixed sequence starts where the guide expects this many times rows_needed (Selection)
# Confidence thresholds, fixed before any data: dense near 1, where the accepted errors are decided.
THRESHOLDS = tuple(np.unique(np.round(1 - np.geomspace(0.8, 1e-4, 60), 6)).tolist())


def check_target(target_error: float) -> float:
    if isinstance(target_error, bool) or not isinstance(target_error, (int, float)) or not 0 < target_error < 1:
        raise ValueError(f"the target error must be a rate between 0 and 1 (0.02 = 2 %), got {target_error!r}")
    return float(target_error)


def error_upper_bound(errors: np.ndarray, accepted: np.ndarray, level: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound on an error rate with `errors` of `accepted`, at
    failure probability `level`; 1.0 where nothing is accepted."""
    from scipy.stats import beta  # seconds to import: not on the path of every page that reads a run

    errors, accepted = np.asarray(errors, dtype=np.float64), np.asarray(accepted, dtype=np.float64)
    bound = np.ones_like(accepted)
    some = (accepted > 0) & (errors < accepted)
    bound[some] = beta.ppf(1 - level, errors[some] + 1, accepted[some] - errors[some])
    return bound


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval at `level` of a rate with `successes` of `trials`; (0, 1)
    for no trial."""
    from scipy.stats import beta  # lazily, as error_upper_bound

    if not trials:
        return 0.0, 1.0
    tail = (1 - level) / 2
    low = beta.ppf(tail, successes, trials - successes + 1) if successes else 0.0
    high = beta.ppf(1 - tail, successes + 1, trials - successes) if successes < trials else 1.0
    return float(low), float(high)


def rows_needed(target_error: float, delta: float = DELTA) -> int:
    """The fewest accepted proposals, all right, whose error is certified at `target_error`:
    (1 - E)^n <= DELTA (149 at 2 %)."""
    return int(np.ceil(np.log(delta) / np.log1p(-target_error)))


@dataclass(frozen=True)
class Selection:
    """One head's counts on the rows that choose its thresholds: per THRESHOLDS entry, how many
    proposals it accepts (`accepted`) and how many of those are wrong (`errors`).

    Where the sequence of tests starts comes from other rows (`guide`): a threshold above every
    proposal accepts nothing and cannot be certified, and the fixed sequence would stop there at
    once. So it starts at the strictest threshold that the guide rows (those that fitted the
    temperatures, apart from these) expect to accept enough proposals to be certified at all; the
    order is then fixed before these rows are counted, as the guarantee needs. A selection from
    before (no guide) keeps the rule it was certified under: Bonferroni over the grid.
    """

    accepted: tuple[int, ...]
    errors: tuple[int, ...]
    rows: int  # labelled rows counted
    guide: tuple[int, ...] | None = None  # per threshold, proposals accepted among the guide rows
    guide_rows: int = 0

    @classmethod
    def count(cls, confidence: np.ndarray, correct: np.ndarray, guide: np.ndarray | None = None) -> Selection:
        """confidence float [n] of each proposal, correct bool [n] (labelled rows only); guide float
        [m], the confidences of the rows that order the tests (None: Bonferroni)."""
        confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool)
        if confidence.shape != correct.shape or confidence.ndim != 1:
            raise ValueError(f"need confidence [n] and correct [n], got {confidence.shape} and {correct.shape}")
        taken = _taken(confidence)
        guided = None if guide is None else tuple(int(n) for n in _taken(np.asarray(guide, np.float64)).sum(axis=1))
        return cls(tuple(int(n) for n in taken.sum(axis=1)), tuple(int(k) for k in (taken & ~correct).sum(axis=1)),
                   len(confidence), guided, 0 if guide is None else len(guide))

    def threshold(self, target_error: float = TARGET_ERROR, delta: float = DELTA) -> float | None:
        """The lowest certified threshold at `target_error`: tested from the guide's start down, each
        at the full `delta`, until the first that fails (module docstring); None when none is."""
        check_target(target_error)
        errors, accepted = np.array(self.errors), np.array(self.accepted)
        if self.guide is None:
            certified = np.flatnonzero(error_upper_bound(errors, accepted, delta / len(THRESHOLDS)) <= target_error)
            return float(THRESHOLDS[certified.min()]) if len(certified) else None
        expected = np.array(self.guide) * self.rows / max(self.guide_rows, 1)
        needed = rows_needed(target_error, delta)
        # Twice the rows a flawless head needs leaves room for a few errors (simulated: the most
        # coverage of 1x, 2x and 4x); with fewer rows, the least that could pass.
        enough = np.flatnonzero(expected >= START_MARGIN * needed)
        if not len(enough):
            enough = np.flatnonzero(expected >= needed)
        if not len(enough):
            return None
        start = int(enough.max())  # the strictest such threshold
        passes = error_upper_bound(errors[:start + 1], accepted[:start + 1], delta) <= target_error
        failed = np.flatnonzero(~passes[::-1])  # strictest first
        tested = start + 1 if not len(failed) else int(failed[0])
        return float(THRESHOLDS[start + 1 - tested]) if tested else None

    def to_dict(self) -> dict:
        guide = {} if self.guide is None else {"guide": list(self.guide), "guide_rows": self.guide_rows}
        return {"accepted": list(self.accepted), "errors": list(self.errors), "rows": self.rows, **guide}

    @classmethod
    def from_dict(cls, values: Mapping) -> Selection:
        if len(values["accepted"]) != len(THRESHOLDS) or len(values["errors"]) != len(THRESHOLDS):
            raise ValueError(f"a selection needs counts for the {len(THRESHOLDS)} thresholds")
        guide = values.get("guide")
        if guide is not None and len(guide) != len(THRESHOLDS):
            raise ValueError(f"a selection's guide needs counts for the {len(THRESHOLDS)} thresholds")
        return cls(tuple(values["accepted"]), tuple(values["errors"]), int(values["rows"]),
                   None if guide is None else tuple(guide), int(values.get("guide_rows", 0)))


def _taken(confidence: np.ndarray) -> np.ndarray:
    """bool [thresholds, n]: which proposals each threshold accepts."""
    return confidence[None, :] >= np.asarray(THRESHOLDS)[:, None]


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> list[dict]:
    """Per THRESHOLDS entry that accepts anything: {"threshold", "coverage" (share of rows accepted),
    "error" (share of the accepted that are wrong), "accepted"}; the curve a catalogue lead reads."""
    selection = Selection.count(confidence, correct)
    return [{"threshold": threshold, "coverage": accepted / selection.rows, "error": errors / accepted,
             "accepted": accepted}
            for threshold, accepted, errors in zip(THRESHOLDS, selection.accepted, selection.errors) if accepted]
