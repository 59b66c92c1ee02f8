"""Tags a team can trust: from a model's raw probabilities to proposals that follow the taxonomy,
carry calibrated confidence, and say which heads need no person at a chosen error rate.

Per row, `Trust.propose`: (1) each head's probabilities at its temperature (core.trust.calibration);
(2) the hierarchy heads decoded jointly, the most probable valid path (core.trust.taxonomy.LabelPaths),
each head's confidence being its class's probability renormalised over the valid paths; (3) a
head's proposal is accepted at target error E when its confidence reaches the head's threshold
(core.trust.abstention). Every place that proposes a label (evaluation, predict, Review, the server)
goes through here.

Fitted once per run, after training, on its validation rows (`fit_calibration`), which are dealt
by id into two halves that never overlap: the CALIBRATION half fits the temperatures (and says
where the tests of thresholds start, core.trust.abstention.Selection), the SELECTION half counts
what each threshold would accept (for the thresholds at any E). Caveat:
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
from core.trust.typicality import Typicality, fits

FORMAT_VERSION = 2  # 2: thresholds tested in a fixed sequence (guides), the typicality gate; 1 still reads
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
    # The gate on the CALIBRATION rows' features (core.trust.typicality); None for a run calibrated
    # before it existed, or without features: then every photo passes it, as it did.
    typicality: Typicality | None = None

    def to_dict(self) -> dict:
        """Plain str keys and floats (the dict goes into checkpoints, which load with weights_only=True),
        but the gate's reference features: a float16 array the caller stores as it can."""
        return {"format_version": FORMAT_VERSION, "temperatures": {h: float(t) for h, t in self.temperatures.items()},
                "rows": {str(role): int(n) for role, n in self.rows.items()},
                "delta": self.delta, "selections": {head: s.to_dict() for head, s in self.selections.items()},
                "typicality": None if self.typicality is None else self.typicality.to_dict()}

    @classmethod
    def from_dict(cls, values: Mapping) -> Calibration:
        version = values.get("format_version")
        if version not in (1, FORMAT_VERSION):
            raise ValueError(f"unsupported calibration format_version {version!r}; expected {FORMAT_VERSION}")
        gate = values.get("typicality")
        return cls({head: float(t) for head, t in values["temperatures"].items()},
                   {head: Selection.from_dict(s) for head, s in values["selections"].items()},
                   dict(values["rows"]), float(values["delta"]), None if gate is None else Typicality.from_dict(gate))

    def save(self, path: str | Path) -> None:
        """calibration.json, and the gate's reference features beside it (`reference_file`)."""
        values = self.to_dict()
        if values["typicality"] is not None:
            reference = values["typicality"].pop("reference")
            np.save(reference_file(path), reference)
        Path(path).write_text(json.dumps(values, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
        if values.get("typicality") is not None:
            values["typicality"]["reference"] = np.load(reference_file(path))
        return cls.from_dict(values)


def reference_file(path: str | Path) -> Path:
    """Where a saved calibration keeps its gate's reference features: <name>.reference.npy beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}.reference.npy")



@dataclass(frozen=True)
class Proposals:
    """A batch of rows' proposals: per head, the proposed class index int64 [n], its confidence
    float [n], and every class's probability float [n, C] (calibrated, renormalised over valid paths);
    per row its typicality score float [n] (NaN without a gate) and whether the gate lets it through,
    bool [n]."""

    labels: dict[str, np.ndarray]
    confidence: dict[str, np.ndarray]
    probs: dict[str, np.ndarray]
    typicality: np.ndarray
    typical: np.ndarray


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

    @property
    def gate(self) -> Typicality | None:
        """The typicality gate, when the run's calibration has one."""
        return None if self.calibration is None else self.calibration.typicality

    def propose(self, probs: Mapping[str, np.ndarray], consistent: bool = True,
                features: np.ndarray | None = None, ids: np.ndarray | None = None) -> Proposals:
        """probs: head -> raw softmax float [n, C] (every head of the schema). consistent=False
        decodes each head on its own (argmax of its calibrated probabilities), for comparison.
        features: the rows' pooled backbone features float [n, D], which the gate scores (`ids`: their
        product ids, for rows that may be the gate's own reference rows); with a gate and no features
        no row passes it (nothing says the photos are like the calibration ones)."""
        calibrated = {head: scale(probs[head], self.temperature(head)) for head in self.schema.heads}
        if consistent:
            labels, marginals = self.paths.decode(calibrated)
        else:
            labels, marginals = {head: p.argmax(axis=1) for head, p in calibrated.items()}, calibrated
        rows = np.arange(len(next(iter(calibrated.values()))))
        if self.gate is None:
            typicality, typical = np.full(len(rows), np.nan, dtype=np.float32), np.ones(len(rows), dtype=bool)
        elif features is None:
            typicality, typical = np.full(len(rows), np.nan, dtype=np.float32), np.zeros(len(rows), dtype=bool)
        else:
            typicality = self.gate.scores(features, ids)
            typical = self.gate.typical(typicality)
        return Proposals(labels, {head: marginals[head][rows, labels[head]] for head in labels}, marginals,
                         typicality, typical)

    def thresholds(self, target_error: float = TARGET_ERROR) -> dict[str, float | None]:
        """Per head, the lowest confidence accepted at `target_error` (core.trust.abstention); None: never."""
        if self.calibration is None:
            return dict.fromkeys(self.schema.heads)
        return {head: (self.calibration.selections[head].threshold(target_error, self.calibration.delta)
                       if head in self.calibration.selections else None) for head in self.schema.heads}

    def accepted(self, proposals: Proposals, target_error: float = TARGET_ERROR) -> dict[str, np.ndarray]:
        """Per head, bool [n]: the proposal needs no person at `target_error` (sure enough, of a photo
        the gate lets through)."""
        thresholds = self.thresholds(target_error)
        return {head: _taken(proposals, head, thresholds[head]) for head in self.schema.heads}


def _taken(proposals: Proposals, head: str, threshold: float | None) -> np.ndarray:
    """bool [n]: the head's proposals a threshold accepts (None accepts nothing), of typical rows only."""
    if threshold is None:
        return np.zeros(len(proposals.typical), dtype=bool)
    return gated(proposals, head) >= threshold


def fit_calibration(schema: LabelSchema, taxonomy: Taxonomy, ids: np.ndarray, labels: np.ndarray,
                    probs: Mapping[str, np.ndarray], features: np.ndarray | None = None) -> Calibration:
    """Fit temperatures and the typicality gate on the CALIBRATION half of validation rows `ids`, then
    count what each threshold accepts of the consistent, calibrated proposals of the SELECTION half's
    rows that pass the gate (the accepted set of a later photo: typical and sure enough).

    labels: int64 [n, heads] (schema.encode, IGNORE_INDEX where no true class); probs: head ->
    raw softmax float [n, C]; features: pooled backbone features float [n, D] (None: no gate); rows
    in `ids` order.
    """
    ids = np.asarray(ids, dtype=np.int64)
    role = roles(ids)
    calibrating, selecting = role == Role.CALIBRATION, role == Role.SELECTION
    temperatures = {head: fit_temperature(probs[head][calibrating], labels[calibrating, column])
                    for column, head in enumerate(schema.heads)}
    # Too few rows for a gate: no threshold can be certified on so few either, so none is needed.
    gate = (Typicality.fit(ids[calibrating], np.asarray(features)[calibrating])
            if features is not None and fits(int(calibrating.sum())) else None)
    uncalibrated = Trust(schema, taxonomy, Calibration(temperatures, {}, {}, typicality=gate))

    def proposals_of(rows: np.ndarray) -> Proposals:
        return uncalibrated.propose({head: p[rows] for head, p in probs.items()},
                                    features=None if features is None else np.asarray(features)[rows], ids=ids[rows])

    # The CALIBRATION half also orders the threshold tests (where the fixed sequence starts): rows
    # apart from those the tests count, as the guarantee needs.
    proposals, guides = proposals_of(selecting), proposals_of(calibrating)
    selections = {}
    for column, head in enumerate(schema.heads):
        truth, guide_truth = labels[selecting, column], labels[calibrating, column]
        scored, guided = truth != IGNORE_INDEX, guide_truth != IGNORE_INDEX
        # A row the gate refuses is never accepted, whatever its confidence: counted as a row, not taken.
        selections[head] = Selection.count(gated(proposals, head)[scored],
                                           proposals.labels[head][scored] == truth[scored],
                                           gated(guides, head)[guided])
    rows = {Role.CALIBRATION: int(calibrating.sum()), Role.SELECTION: int(selecting.sum())}
    return Calibration(temperatures, selections, rows, typicality=gate)


def gated(proposals: Proposals, head: str) -> np.ndarray:
    """float [n]: the head's confidences, -1 (below every threshold) where the gate refuses the row."""
    return np.where(proposals.typical, proposals.confidence[head], -1.0)


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
    CALIBRATION rows, which chose no threshold; they did fit the temperatures and the gate, and say
    where the tests of thresholds start, a mild optimism), else None (every row counts).

    Returns {"rows": {"ece", "targets"} (rows used), "typical" (share of the target rows the gate lets
    through; 1.0 without a gate), "heads": {head: {"temperature", "ece_before", "ece_after",
    "reliability_before", "reliability_after", "risk_coverage", "targets": {E: {"threshold",
    "coverage", "error", "accepted"}}}}, "products": {E: share of rows with every head accepted},
    "down_to_subcategory": {E: share with masterCategory and subCategory both accepted}} with E as
    text ("0.02").
    """
    everything = np.ones(len(labels), dtype=bool)
    for_ece = everything if role is None else role == Role.SELECTION
    for_targets = everything if role is None else role == Role.CALIBRATION
    accepted = {target: trust.accepted(proposals, target) for target in TARGETS}
    heads = {}
    for column, head in enumerate(trust.schema.heads):
        truth = labels[:, column]
        counted = for_targets & scored[head]
        right = correct[head][counted]
        raw, calibrated = probs[head][for_ece], scale(probs[head][for_ece], trust.temperature(head))
        targets = {}
        for target in TARGETS:
            taken = accepted[target][head][counted]
            targets[str(target)] = {"threshold": trust.thresholds(target)[head],
                                    "coverage": float(taken.mean()) if len(taken) else 0.0,
                                    "error": float((~right[taken]).mean()) if taken.any() else None,
                                    "accepted": int(taken.sum())}
        heads[head] = {
            "temperature": trust.temperature(head),
            "ece_before": expected_calibration_error(raw, truth[for_ece]),
            "ece_after": expected_calibration_error(calibrated, truth[for_ece]),
            "reliability_before": _reliability(raw, truth[for_ece]),
            "reliability_after": _reliability(calibrated, truth[for_ece]),
            "risk_coverage": risk_coverage(gated(proposals, head)[counted], right) if counted.any() else [],
            "targets": targets,
        }
    rows = int(for_targets.sum())

    def share(target: float, among: tuple[str, ...]) -> float:
        """The share of target rows with every head of `among` the run learns accepted."""
        learned = [accepted[target][head] for head in among if head in accepted[target]]
        return float(np.logical_and.reduce(learned)[for_targets].mean()) if rows and learned else 0.0

    return {"rows": {"ece": int(for_ece.sum()), "targets": rows}, "heads": heads,
            "typical": float(proposals.typical[for_targets].mean()) if rows else 0.0,
            "products": {str(target): share(target, trust.schema.heads) for target in TARGETS},
            "down_to_subcategory": {str(target): share(target, ("masterCategory", "subCategory"))
                                    for target in TARGETS}}


def _reliability(probs: np.ndarray, truth: np.ndarray) -> list[dict]:
    scored = truth != IGNORE_INDEX
    return reliability_bins(probs[scored].max(axis=1), probs[scored].argmax(axis=1) == truth[scored])
