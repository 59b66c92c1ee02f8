"""Tags a team can trust: from a model's raw probabilities to proposals that follow the taxonomy,
carry calibrated confidence, and say which heads need no person at a chosen error rate.

Per row, `Trust.propose`: (1) each head's probabilities at its temperature (core.trust.calibration);
(2) the hierarchy heads decoded jointly, the most probable valid path (core.trust.taxonomy.LabelPaths),
each head's confidence being its class's probability renormalised over the valid paths; (3) a
head's proposal is accepted at target error E when its confidence reaches the head's threshold
(core.trust.abstention). Every place that proposes a label (evaluation, predict, Review, the server)
goes through here.

Fitted once per run, after training, on its validation rows (`fit_calibration`), which are dealt
by id into two halves that never overlap: the CALIBRATION half fits the temperatures, the
SELECTION half counts what each threshold would accept (for the thresholds at any E). Caveat:
the validation split also chose the best epoch; both halves share that mild optimism.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.schema import IGNORE_INDEX, LabelSchema
from core.data.split import id_uniform
from core.trust.abstention import DELTA, TARGET_ERROR, Selection, risk_coverage
from core.trust.calibration import expected_calibration_error, fit_temperature, reliability_bins, scale
from core.trust.taxonomy import LabelPaths, Taxonomy

FORMAT_VERSION = 1
_ROLE_SALT = 0x74727573  # "trus": roles independent of the split's and max_samples' hashes


class Role(enum.StrEnum):
    """What a validation row is used for when a run is calibrated."""

    CALIBRATION = "calibration"  # fits the temperatures
    SELECTION = "selection"  # chooses the thresholds


def roles(ids: np.ndarray) -> np.ndarray:
    """The Role of each validation id (object [n]): half each, by a hash of the id, so a row keeps
    its role whatever else is in the split."""
    return np.where(id_uniform(np.asarray(ids, dtype=np.int64), _ROLE_SALT) < 0.5, Role.CALIBRATION, Role.SELECTION)


@dataclass(frozen=True)
class Calibration:
    """What a run's validation rows taught about trusting its heads."""

    temperatures: dict[str, float]  # head -> T
    selections: dict[str, Selection]  # head -> counts per threshold on the SELECTION rows
    rows: dict[str, int]  # Role -> validation rows it had
    delta: float = DELTA  # the threshold guarantee's failure probability

    def to_dict(self) -> dict:
        # Plain str keys and floats: the dict goes into checkpoints, which load with weights_only=True.
        return {"format_version": FORMAT_VERSION, "temperatures": {h: float(t) for h, t in self.temperatures.items()},
                "rows": {str(role): int(n) for role, n in self.rows.items()},
                "delta": self.delta, "selections": {head: s.to_dict() for head, s in self.selections.items()}}

    @classmethod
    def from_dict(cls, values: Mapping) -> Calibration:
        version = values.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported calibration format_version {version!r}; expected {FORMAT_VERSION}")
        return cls({head: float(t) for head, t in values["temperatures"].items()},
                   {head: Selection.from_dict(s) for head, s in values["selections"].items()},
                   dict(values["rows"]), float(values["delta"]))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass(frozen=True)
class Proposals:
    """A batch of rows' proposals: per head, the proposed class index int64 [n], its confidence
    float [n], and every class's probability float [n, C] (calibrated, renormalised over valid paths)."""

    labels: dict[str, np.ndarray]
    confidence: dict[str, np.ndarray]
    probs: dict[str, np.ndarray]


class Trust:
    """A run's schema, taxonomy and (once fitted) calibration, turning raw probabilities into proposals.

    Without a calibration (a run calibrated before the trust layer existed, or while it is being
    fitted) the temperatures are 1 and no head is ever accepted.
    """

    def __init__(self, schema: LabelSchema, taxonomy: Taxonomy, calibration: Calibration | None = None) -> None:
        self.schema, self.taxonomy, self.calibration = schema, taxonomy, calibration
        self.paths = LabelPaths.build(taxonomy, schema)

    def temperature(self, head: str) -> float:
        return self.calibration.temperatures.get(head, 1.0) if self.calibration else 1.0

    def propose(self, probs: Mapping[str, np.ndarray], consistent: bool = True) -> Proposals:
        """probs: head -> raw softmax float [n, C] (every head of the schema). consistent=False
        decodes each head on its own (argmax of its calibrated probabilities), for comparison."""
        calibrated = {head: scale(probs[head], self.temperature(head)) for head in self.schema.heads}
        if consistent:
            labels, marginals = self.paths.decode(calibrated)
        else:
            labels, marginals = {head: p.argmax(axis=1) for head, p in calibrated.items()}, calibrated
        rows = np.arange(len(next(iter(calibrated.values()))))
        return Proposals(labels, {head: marginals[head][rows, labels[head]] for head in labels}, marginals)

    def thresholds(self, target_error: float = TARGET_ERROR) -> dict[str, float | None]:
        """Per head, the lowest confidence accepted at `target_error` (core.trust.abstention); None: never."""
        if self.calibration is None:
            return dict.fromkeys(self.schema.heads)
        return {head: (self.calibration.selections[head].threshold(target_error, self.calibration.delta)
                       if head in self.calibration.selections else None) for head in self.schema.heads}

    def accepted(self, proposals: Proposals, target_error: float = TARGET_ERROR) -> dict[str, np.ndarray]:
        """Per head, bool [n]: the proposal needs no person at `target_error`."""
        thresholds = self.thresholds(target_error)
        return {head: (proposals.confidence[head] >= thresholds[head]) if thresholds[head] is not None
                else np.zeros(len(proposals.confidence[head]), dtype=bool) for head in self.schema.heads}


def fit_calibration(schema: LabelSchema, taxonomy: Taxonomy, ids: np.ndarray, labels: np.ndarray,
                    probs: Mapping[str, np.ndarray]) -> Calibration:
    """Fit temperatures on the CALIBRATION half of validation rows `ids`, then count what each
    threshold accepts of the consistent, calibrated proposals on the SELECTION half.

    labels: int64 [n, heads] (schema.encode, IGNORE_INDEX where no true class); probs: head ->
    raw softmax float [n, C], rows in `ids` order.
    """
    role = roles(ids)
    calibrating, selecting = role == Role.CALIBRATION, role == Role.SELECTION
    temperatures = {head: fit_temperature(probs[head][calibrating], labels[calibrating, column])
                    for column, head in enumerate(schema.heads)}
    uncalibrated = Trust(schema, taxonomy, Calibration(temperatures, {}, {}))
    proposals = uncalibrated.propose({head: p[selecting] for head, p in probs.items()})
    selections = {}
    for column, head in enumerate(schema.heads):
        truth = labels[selecting, column]
        scored = truth != IGNORE_INDEX
        selections[head] = Selection.count(proposals.confidence[head][scored],
                                           proposals.labels[head][scored] == truth[scored])
    return Calibration(temperatures, selections,
                       {Role.CALIBRATION: int(calibrating.sum()), Role.SELECTION: int(selecting.sum())})


TARGETS = (0.01, 0.02, 0.05)  # the target errors every assessment reports


def assess(trust: Trust, probs: Mapping[str, np.ndarray], proposals: Proposals, labels: np.ndarray,
           scored: Mapping[str, np.ndarray], correct: Mapping[str, np.ndarray], role: np.ndarray | None = None) -> dict:
    """How far the run's proposals can be trusted on evaluated rows, JSON-ready.

    probs: head -> raw softmax [n, C]; labels: int64 [n, heads] (schema.encode: IGNORE_INDEX for
    no true class and for a class the run never saw, which ECE cannot score); scored: head -> bool
    [n], the row has a true class (one the run never saw included: its proposal is wrong);
    correct: head -> bool [n], the proposal equals it; role:
    the rows' Role when they are the run's own validation rows (then each number comes from the
    half that did not fit it: ECE after scaling from SELECTION rows, errors at a target from
    CALIBRATION rows), else None (every row counts).

    Returns {"rows": {"ece", "targets"} (rows used), "heads": {head: {"temperature", "ece_before",
    "ece_after", "reliability_before", "reliability_after", "risk_coverage", "targets": {E:
    {"threshold", "coverage", "error", "accepted"}}}}, "products": {E: share of rows with every head
    accepted}} with E as text ("0.02").
    """
    everything = np.ones(len(labels), dtype=bool)
    for_ece = everything if role is None else role == Role.SELECTION
    for_targets = everything if role is None else role == Role.CALIBRATION
    thresholds = {target: trust.thresholds(target) for target in TARGETS}
    heads, all_accepted = {}, {target: for_targets.copy() for target in TARGETS}
    for column, head in enumerate(trust.schema.heads):
        truth = labels[:, column]
        counted = for_targets & scored[head]
        confidence, right = proposals.confidence[head][counted], correct[head][counted]
        raw, calibrated = probs[head][for_ece], scale(probs[head][for_ece], trust.temperature(head))
        targets = {}
        for target in TARGETS:
            threshold = thresholds[target][head]
            taken = confidence >= threshold if threshold is not None else np.zeros(len(confidence), dtype=bool)
            targets[str(target)] = {"threshold": threshold, "coverage": float(taken.mean()) if len(taken) else 0.0,
                                    "error": float((~right[taken]).mean()) if taken.any() else None,
                                    "accepted": int(taken.sum())}
            head_taken = (proposals.confidence[head] >= threshold) if threshold is not None else np.zeros(len(truth), bool)
            all_accepted[target] &= head_taken
        heads[head] = {
            "temperature": trust.temperature(head),
            "ece_before": expected_calibration_error(raw, truth[for_ece]),
            "ece_after": expected_calibration_error(calibrated, truth[for_ece]),
            "reliability_before": _reliability(raw, truth[for_ece]),
            "reliability_after": _reliability(calibrated, truth[for_ece]),
            "risk_coverage": risk_coverage(confidence, right) if len(confidence) else [],
            "targets": targets,
        }
    rows = int(for_targets.sum())
    return {"rows": {"ece": int(for_ece.sum()), "targets": rows}, "heads": heads,
            "products": {str(target): float(accepted[for_targets].mean()) if rows else 0.0
                         for target, accepted in all_accepted.items()}}


def _reliability(probs: np.ndarray, truth: np.ndarray) -> list[dict]:
    scored = truth != IGNORE_INDEX
    return reliability_bins(probs[scored].max(axis=1), probs[scored].argmax(axis=1) == truth[scored])
