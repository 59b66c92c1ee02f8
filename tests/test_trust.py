"""The trust layer on hand-made and synthetic inputs: taxonomy and consistent decoding
(core.trust.taxonomy), temperature scaling (core.trust.calibration), thresholds with a guarantee
(core.trust.abstention), and their bundle (core.trust.layer)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from core.data.schema import IGNORE_INDEX, OTHER_CLASS, LabelSchema
from core.trust.abstention import (
    DELTA,
    THRESHOLDS,
    Selection,
    check_target,
    error_upper_bound,
    risk_coverage,
    rows_needed,
)
from core.trust.calibration import expected_calibration_error, fit_temperature, reliability_bins, scale
from core.trust.layer import Calibration, Role, Trust, fit_calibration, roles
from core.trust.taxonomy import LabelPaths, Taxonomy
from core.trust.typicality import Typicality, fits


def catalogue_rows() -> pd.DataFrame:
    """A small catalogue: two strays (a T-shirt under Bottomwear, flip flops under Apparel/Topwear)."""
    rows = (
        [("Men", "Apparel", "Topwear", "Tshirts", "Casual")] * 20
        + [("Women", "Apparel", "Topwear", "Tops", "Casual")] * 10
        + [("Men", "Apparel", "Bottomwear", "Jeans", "Casual")] * 12
        + [("Men", "Footwear", "Flip Flops", "Flip Flops", "Casual")] * 8
        + [("Women", "Footwear", "Shoes", "Heels", "Party")] * 3
        + [("Men", "Apparel", "Bottomwear", "Tshirts", "Casual")]  # stray: a T-shirt under Bottomwear
        + [("Women", "Apparel", "Topwear", "Flip Flops", "Casual")]  # stray: flip flops under Topwear
        + [("Men", "Footwear", "Shoes", "Heels", "Formal")]  # Heels usage Formal once: a stray
    )
    frame = pd.DataFrame(rows, columns=["gender", "masterCategory", "subCategory", "articleType", "usage"])
    frame.insert(0, "id", np.arange(100, 100 + len(frame)))
    frame["baseColour"], frame["season"] = "Black", "Summer"
    return frame


# --- taxonomy


def test_the_taxonomy_keeps_the_common_parents_and_lists_the_strays():
    frame = catalogue_rows()
    taxonomy = Taxonomy.fit(frame)
    assert taxonomy.counts("articleType", "subCategory")["Tshirts"] == {"Bottomwear": 1, "Topwear": 20}
    valid = taxonomy.valid_parents("articleType", "subCategory")
    assert valid["Tshirts"] == {"Topwear"} and valid["Flip Flops"] == {"Flip Flops"} and valid["Heels"] == {"Shoes"}
    assert taxonomy.valid_parents("articleType", "usage")["Heels"] == {"Party"}  # 3 Party, 1 Formal
    broken = taxonomy.violations(frame)
    assert broken[["id", "head", "value", "parent_head", "parent"]].values.tolist() == [
        [153, "articleType", "Tshirts", "subCategory", "Bottomwear"],
        [154, "articleType", "Flip Flops", "subCategory", "Topwear"],
        [154, "articleType", "Flip Flops", "gender", "Women"],  # flip flops are otherwise men's here
        [155, "articleType", "Heels", "gender", "Men"],
        [155, "articleType", "Heels", "usage", "Formal"],
    ]
    assert broken["valid_parents"].iloc[0] == "Topwear"
    new = pd.DataFrame([{**frame.iloc[0].to_dict(), "id": 999, "articleType": "Kurtas", "subCategory": "Bottomwear"}])
    assert taxonomy.violations(new).empty  # a value never seen is new, not wrong
    assert Taxonomy.from_dict(taxonomy.to_dict()) == taxonomy
    tree = taxonomy.tree()
    assert tree.loc[tree["articleType"] == "Tshirts"].values.tolist() == [["Apparel", "Topwear", "Tshirts", 20]]


def test_a_shared_child_keeps_both_parents():
    frame = catalogue_rows()
    extra = frame[frame["articleType"] == "Jeans"].head(5).assign(subCategory="Topwear", id=lambda f: f["id"] + 1000)
    taxonomy = Taxonomy.fit(pd.concat([frame, extra]))
    assert taxonomy.valid_parents("articleType", "subCategory")["Jeans"] == {"Bottomwear", "Topwear"}


def hand_made_probs(schema: LabelSchema) -> dict[str, np.ndarray]:
    """One row where independent argmax says Apparel / Flip Flops (sub) / Tshirts: impossible."""
    wanted = {
        "masterCategory": {"Apparel": 0.55, "Footwear": 0.45},
        "subCategory": {"Flip Flops": 0.40, "Topwear": 0.35, "Bottomwear": 0.15, "Shoes": 0.10},
        "articleType": {"Tshirts": 0.38, "Flip Flops": 0.36, "Tops": 0.10, "Jeans": 0.10, "Heels": 0.06},
    }
    probs = {}
    for head in schema.heads:
        row = np.array([wanted.get(head, {}).get(name, 1.0) for name in schema.classes[head]], dtype=float)
        probs[head] = (row / row.sum())[None, :]
    return probs


def test_joint_decoding_picks_the_most_probable_valid_path():
    frame = catalogue_rows()
    schema = LabelSchema.fit(frame, rare_policy="keep", rare_min_count=0)
    paths = LabelPaths.build(Taxonomy.fit(frame), schema)
    assert paths.heads == ("masterCategory", "subCategory", "articleType")
    named = {tuple(schema.classes[head][index] for head, index in zip(paths.heads, path)) for path in paths.paths}
    assert named == {("Apparel", "Topwear", "Tshirts"), ("Apparel", "Topwear", "Tops"),
                     ("Apparel", "Bottomwear", "Jeans"), ("Footwear", "Flip Flops", "Flip Flops"),
                     ("Footwear", "Shoes", "Heels")}
    probs = hand_made_probs(schema)
    independent = {head: probs[head].argmax(axis=1) for head in schema.heads}
    assert paths.impossible(independent).tolist() == [True]
    labels, marginals = paths.decode(probs)
    decoded = {head: schema.classes[head][labels[head][0]] for head in paths.heads}
    # Apparel/Topwear/Tshirts: .55 x .35 x .38 = .0732 beats Footwear/Flip Flops/Flip Flops: .45 x .40 x .36 = .0648
    assert decoded == {"masterCategory": "Apparel", "subCategory": "Topwear", "articleType": "Tshirts"}
    assert paths.impossible(labels).tolist() == [False]
    for head in paths.heads:
        assert marginals[head].sum() == pytest.approx(1.0)
    scores = {path: np.prod([probs[h][0, schema.classes[h].index(n)] for h, n in zip(paths.heads, path)])
              for path in named}
    total = sum(scores.values())
    apparel = sum(score for path, score in scores.items() if path[0] == "Apparel") / total
    assert marginals["masterCategory"][0, schema.classes["masterCategory"].index("Apparel")] == pytest.approx(apparel)
    assert labels["gender"].tolist() == independent["gender"].tolist()  # not in the hierarchy: as it was


def test_the_rare_class_bucket_goes_where_its_members_go():
    frame = catalogue_rows()
    schema = LabelSchema.fit(frame, rare_policy="other", rare_min_count=5)  # Heels (4 rows) -> Other
    assert OTHER_CLASS in schema.classes["articleType"] and "Heels" not in schema.classes["articleType"]
    paths = LabelPaths.build(Taxonomy.fit(frame), schema)
    named = {tuple(schema.classes[head][index] for head, index in zip(paths.heads, path)) for path in paths.paths}
    assert ("Footwear", "Shoes", OTHER_CLASS) in named or ("Footwear", OTHER_CLASS, OTHER_CLASS) in named
    assert ("Apparel", "Topwear", OTHER_CLASS) not in named


# --- calibration


def planted(temperature: float, n: int = 20_000, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw softmax outputs whose labels are drawn from softmax(logits / temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(n, classes))
    truth = scale(np.exp(logits), temperature)
    labels = np.array([rng.choice(classes, p=row) for row in truth])
    return scale(np.exp(logits), 1.0), labels


@pytest.mark.parametrize("temperature", [0.6, 2.5])
def test_temperature_scaling_recovers_a_planted_temperature(temperature):
    probs, labels = planted(temperature)
    fitted = fit_temperature(probs, labels)
    assert fitted == pytest.approx(temperature, rel=0.05)
    before, after = expected_calibration_error(probs, labels), expected_calibration_error(scale(probs, fitted), labels)
    assert after < before and after < 0.02


def test_ece_is_torchmetrics_and_ignores_unlabelled_rows():
    probs, labels = planted(2.0, n=2000)
    expected = multiclass_calibration_error(torch.tensor(probs).float(), torch.tensor(labels), num_classes=5, n_bins=15)
    assert expected_calibration_error(probs, labels) == pytest.approx(float(expected))
    hidden = labels.copy()
    hidden[:1000] = IGNORE_INDEX
    assert expected_calibration_error(probs, hidden) == pytest.approx(
        expected_calibration_error(probs[1000:], labels[1000:]))
    assert expected_calibration_error(probs[:0], labels[:0]) is None and fit_temperature(probs[:0], labels[:0]) == 1.0
    bins = reliability_bins(probs.max(axis=1), probs.argmax(axis=1) == labels)
    assert sum(b["rows"] for b in bins) == 2000 and all(b["low"] <= b["confidence"] <= b["high"] for b in bins)
    with pytest.raises(ValueError, match="class indices below 5"):
        expected_calibration_error(probs, labels + 5)


# --- abstention


def test_the_clopper_pearson_bound():
    # No error in n: the bound solves (1 - b)^n = level.
    assert error_upper_bound(np.array([0]), np.array([148]), 0.05)[0] == pytest.approx(1 - 0.05 ** (1 / 148))
    assert error_upper_bound(np.array([0, 3]), np.array([0, 3]), 0.05).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"between 0 and 1 \(0.02 = 2 %\), got 2"):
        check_target(2)


SURE = 20.0  # confidences from Beta(SURE, 1): mostly sure, as a good head is


def calibrated_draw(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Confidences from Beta(SURE, 1), each right with exactly that probability."""
    confidence = rng.beta(SURE, 1, size=n)
    return confidence, rng.random(n) < confidence


def true_error(threshold: float, a: float = SURE) -> float:
    """E[1 - p | p >= t] for p ~ Beta(a, 1): density a p^(a-1)."""
    mass = 1 - threshold**a
    mean_p = a / (a + 1) * (1 - threshold ** (a + 1)) / mass
    return 1 - mean_p


def test_the_threshold_keeps_the_true_error_under_target_within_the_failure_rate():
    """The fixed sequence (guided by other rows) and, for calibrations from before, Bonferroni: both
    keep the guarantee; the fixed sequence accepts more."""
    rng = np.random.default_rng(1)
    target, draws = 0.03, 300
    chosen, failures = {"fixed sequence": [], "bonferroni": []}, {"fixed sequence": 0, "bonferroni": 0}
    for _ in range(draws):
        confidence, correct = calibrated_draw(rng, 3000)
        guide, _ = calibrated_draw(rng, 3000)
        for rule, selection in (("fixed sequence", Selection.count(confidence, correct, guide)),
                                ("bonferroni", Selection.count(confidence, correct))):
            threshold = selection.threshold(target)
            chosen[rule].append(1.0 if threshold is None else threshold)  # None accepts nothing: no error
            failures[rule] += threshold is not None and true_error(threshold) > target
    for rule in chosen:
        assert failures[rule] / draws <= DELTA, rule  # the guarantee
    # ...and not vacuous: a good share accepted (the best certified threshold is near the true one),
    # more with the fixed sequence.
    ideal = min(t for t in THRESHOLDS if true_error(t) <= target)
    coverage = {rule: 1 - np.median(values) ** SURE for rule, values in chosen.items()}
    assert np.median(chosen["fixed sequence"]) <= ideal + 0.05 and coverage["bonferroni"] > 0.3
    assert coverage["fixed sequence"] > coverage["bonferroni"] + 0.05


def test_the_fixed_sequence_starts_where_the_guide_rows_expect_enough_and_stops_at_the_first_failure():
    assert (rows_needed(0.02), rows_needed(0.01), rows_needed(0.05)) == (149, 299, 59)
    sure = np.full(500, 0.99)
    perfect = Selection.count(sure, np.ones(500, dtype=bool), guide=sure)
    assert perfect.threshold(0.02) == THRESHOLDS[0]  # nothing above 0.99 to start from; no error below
    assert Selection.count(sure, np.ones(500, dtype=bool), guide=sure[:100]).threshold(0.02) == THRESHOLDS[0]
    # Right at 0.95, a run of errors at 0.85: the sequence stops there, though lower thresholds would
    # average back under the target (Bonferroni certifies them).
    confidence = np.concatenate([np.full(600, 0.95), np.full(100, 0.85), np.full(4000, 0.5)])
    correct = np.concatenate([np.ones(600, bool), np.zeros(100, bool), np.ones(4000, bool)])
    stepped = Selection.count(confidence, correct, guide=confidence)
    assert stepped.threshold(0.05) == min(t for t in THRESHOLDS if t > 0.85)
    assert Selection.count(confidence, correct).threshold(0.05) <= 0.5
    assert Selection.count(confidence[:100], correct[:100], guide=confidence[:100]).threshold(0.02) is None
    assert Selection.from_dict(stepped.to_dict()) == stepped


def test_a_head_with_few_rows_never_auto_accepts():
    rng = np.random.default_rng(2)
    assert Selection.count(*calibrated_draw(rng, 60)).threshold(0.02) is None
    perfect = Selection.count(np.full(500, 0.99), np.ones(500, dtype=bool))  # counted before guides existed
    assert perfect.threshold(0.02) == THRESHOLDS[0]  # no error anywhere: every threshold is certified
    assert Selection.from_dict(perfect.to_dict()) == perfect and "guide" not in perfect.to_dict()
    curve = risk_coverage(np.array([0.99, 0.95, 0.5]), np.array([True, False, True]))
    assert curve[0]["coverage"] == pytest.approx(1.0) and curve[0]["error"] == pytest.approx(1 / 3)
    assert (curve[-1] == {"threshold": THRESHOLDS[-1], "coverage": 0.0, "error": 0.0, "accepted": 0}
            or curve[-1]["accepted"] > 0)


# --- the bundle


def validation_rows(n: int, seed: int) -> tuple[LabelSchema, Taxonomy, np.ndarray, np.ndarray, dict]:
    """(schema, taxonomy, ids, labels, probs) of `n` validation rows drawn from catalogue_rows(), the
    model confident and right on gender, at chance on every other head."""
    frame = catalogue_rows()
    schema = LabelSchema.fit(frame, rare_policy="keep", rare_min_count=0)
    rng = np.random.default_rng(seed)
    labels = schema.encode(frame.sample(n, replace=True, random_state=seed + 1))
    probs = {}
    for column, head in enumerate(schema.heads):
        logits = rng.normal(size=(n, len(schema.classes[head])))
        logits[np.arange(n), labels[:, column]] += 6.0 if head == "gender" else 0.0
        probs[head] = scale(np.exp(logits), 1.0)
    return schema, Taxonomy.fit(frame), np.arange(10_000, 10_000 + n), labels, probs


def test_fit_calibration_uses_two_disjoint_halves_and_accepts_only_where_certified():
    schema, taxonomy, ids, labels, probs = validation_rows(6000, seed=3)
    role = roles(ids)
    assert set(role) == {Role.CALIBRATION, Role.SELECTION} and abs((role == Role.CALIBRATION).mean() - 0.5) < 0.03
    assert roles(ids[::-1]).tolist() == role[::-1].tolist()  # by id, not by position

    calibration = fit_calibration(schema, taxonomy, ids, labels, probs)
    assert calibration.rows == {Role.CALIBRATION: int((role == Role.CALIBRATION).sum()),
                                Role.SELECTION: int((role == Role.SELECTION).sum())}
    assert calibration.selections["gender"].rows == calibration.rows[Role.SELECTION]
    assert Calibration.from_dict(calibration.to_dict()) == calibration
    trust = Trust(schema, taxonomy, calibration)
    thresholds = trust.thresholds(0.02)
    assert thresholds["gender"] is not None and thresholds["usage"] is None
    proposals = trust.propose(probs)
    accepted = trust.accepted(proposals, 0.02)
    assert accepted["gender"].mean() > 0.9 and not accepted["usage"].any()
    right = proposals.labels["gender"][accepted["gender"]] == labels[accepted["gender"], 0]
    assert right.mean() >= 0.98
    assert not trust.paths.impossible(proposals.labels).any()
    uncalibrated = Trust(schema, taxonomy)
    assert uncalibrated.thresholds() == dict.fromkeys(schema.heads)


# --- the typicality gate

DIM = 32


def studio_features(rng, n: int) -> np.ndarray:
    """Photos of one kind: features around a few shared directions (as a catalogue's classes are)."""
    centres = np.eye(DIM)[:4] * 8
    return centres[rng.integers(0, 4, n)] + rng.normal(size=(n, DIM))


def other_kind_features(rng, n: int) -> np.ndarray:
    """Photos of another kind: around directions no studio photo has."""
    return np.eye(DIM)[20:24][rng.integers(0, 4, n)] * 8 + rng.normal(size=(n, DIM))


def test_the_gate_refuses_photos_of_another_kind_and_at_most_its_share_of_the_same_kind():
    rng = np.random.default_rng(5)
    gate = Typicality.fit(np.arange(500), studio_features(rng, 500))
    same = gate.typical(gate.scores(studio_features(rng, 4000)))
    assert 1 - same.mean() <= gate.refused + 0.03  # the conformal quantile: about a tenth refused, no more
    assert 1 - same.mean() > 0.03  # ...and the cut is not loose either
    assert not gate.typical(gate.scores(other_kind_features(rng, 500))).any()
    # A reference row scored with its id leaves itself out, as the cut did: about a tenth of them above it.
    own = gate.scores(gate.reference, gate.ids)
    assert (own > gate.cut).sum() == len(own) - int(np.ceil(501 * 0.9))
    assert (gate.scores(gate.reference) <= own).all()  # counting itself, each row looks closer
    assert Typicality.from_dict(gate.to_dict()) == gate
    assert fits(9) and not fits(8) and not fits(10, neighbours=10)  # 1 / refused - 1 rows, and K besides each
    with pytest.raises(ValueError, match="8 reference rows are too few for a gate"):
        Typicality.fit(np.arange(8), studio_features(rng, 8))


def test_a_gated_calibration_certifies_on_typical_rows_and_accepts_nothing_unlike_them():
    n = 4000
    schema, taxonomy, ids, labels, probs = validation_rows(n, seed=6)
    rng = np.random.default_rng(6)
    features = studio_features(rng, n)
    calibration = fit_calibration(schema, taxonomy, ids, labels, probs, features)
    gate = calibration.typicality
    assert gate is not None and set(gate.ids) == set(ids[roles(ids) == Role.CALIBRATION])
    trust = Trust(schema, taxonomy, calibration)
    assert trust.thresholds(0.02)["gender"] is not None
    proposals = trust.propose(probs, features=features, ids=ids)
    accepted = trust.accepted(proposals, 0.02)["gender"]
    assert 0.8 < accepted.mean() <= proposals.typical.mean() and not accepted[~proposals.typical].any()
    # The same confident proposals, of photos of another kind or without features, accept nothing.
    elsewhere = trust.propose(probs, features=other_kind_features(rng, n))
    assert not trust.accepted(elsewhere, 0.02)["gender"].any() and np.isfinite(elsewhere.typicality).all()
    unseen = trust.propose(probs)
    assert not unseen.typical.any() and np.isnan(unseen.typicality).all()
    assert Calibration.from_dict(calibration.to_dict()) == calibration
    # Too few calibration rows for a gate: none, and every row passes (nothing is certified anyway).
    few = fit_calibration(schema, taxonomy, ids[:12], labels[:12], {h: p[:12] for h, p in probs.items()},
                          features[:12])
    assert few.typicality is None and Trust(schema, taxonomy, few).propose(probs).typical.all()


def test_a_saved_calibration_keeps_its_gate_beside_it_and_an_old_one_still_reads(tmp_path):
    rng = np.random.default_rng(8)
    gate = Typicality.fit(np.arange(50), studio_features(rng, 50))
    calibration = Calibration({"gender": 1.2}, {}, {Role.CALIBRATION: 50, Role.SELECTION: 50}, typicality=gate)
    calibration.save(tmp_path / "calibration.json")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["calibration.json", "calibration.reference.npy"]
    assert Calibration.load(tmp_path / "calibration.json") == calibration
    old = {**Calibration({"gender": 1.2}, {}, {}).to_dict(), "format_version": 1}
    del old["typicality"]
    assert Calibration.from_dict(old).typicality is None
