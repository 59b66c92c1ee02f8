"""rank_label_issues on hand-made probabilities, and training.evaluate.label_issues from crossval and run folders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

from core.data.schema import LabelSchema
from core.evaluation.label_issues import ISSUE_COLUMNS, rank_label_issues, save_issues
from training.evaluate import label_issues
from training.run_folder import RunFolder

CLASSES = {"colour": ["Black", "White", "Blue"], "gender": ["Men", "Women"]}


def predictions(rows: list[tuple]) -> pd.DataFrame:
    """The predictions.parquet layout from (id, colour, colour_probs, gender, gender_probs) tuples."""
    return pd.DataFrame(rows, columns=["id", "colour", "colour_probs", "gender", "gender_probs"])


@pytest.fixture
def hand_made() -> pd.DataFrame:
    return predictions([
        (10, "Black", [0.90, 0.05, 0.05], "Men", [0.8, 0.2]),
        (11, "White", [0.02, 0.97, 0.01], "Men", [0.6, 0.4]),
        (12, "Black", [0.03, 0.95, 0.02], "Women", [0.1, 0.9]),  # colour confidently contradicted
        (13, "Blue", [0.10, 0.10, 0.80], None, [0.5, 0.5]),  # gender ignored
        (14, "White", [0.30, 0.60, 0.10], "Women", [0.95, 0.05]),  # gender confidently contradicted
        (15, "Blue", [0.20, 0.10, 0.70], "Men", [0.7, 0.3]),
    ])


def test_a_confidently_contradicted_label_ranks_first_with_its_suggestion(hand_made):
    issues = rank_label_issues(hand_made, CLASSES)
    assert tuple(issues.columns) == ISSUE_COLUMNS
    assert issues.dtypes.astype(str).to_dict() == {
        "id": "int64", "head": "str", "given": "str", "suggested": "str", "given_p": "float64",
        "suggested_p": "float64", "score": "float64", "is_issue": "bool", "rank": "int64"}
    colour = issues[issues["head"] == "colour"]
    assert colour["id"].tolist() == [12, 14, 15, 13, 10, 11]  # by given_p: .03, .6, .7, .8, .9, .97
    assert colour["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    first = colour.iloc[0]
    assert (first["given"], first["suggested"]) == ("Black", "White")
    assert first["given_p"] == pytest.approx(0.03) and first["suggested_p"] == pytest.approx(0.95)
    assert first["score"] == pytest.approx(0.03)  # self_confidence: the given label's probability
    gender = issues[issues["head"] == "gender"]
    assert gender["id"].tolist() == [14, 11, 15, 10, 12]  # id 13 has no given gender
    assert gender.iloc[0][["given", "suggested"]].tolist() == ["Women", "Men"]
    assert issues["head"].tolist() == ["colour"] * 6 + ["gender"] * 5  # heads in `classes` order


def test_is_issue_and_score_are_cleanlabs_on_the_same_rows():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    probs = rng.dirichlet([0.3, 0.3, 0.3], 200)
    ids = rng.permutation(np.arange(1000, 1200))
    frame = pd.DataFrame({"id": ids, "colour": [CLASSES["colour"][k] for k in labels], "colour_probs": list(probs)})
    issues = rank_label_issues(frame, {"colour": CLASSES["colour"]}).set_index("id").loc[ids]
    expected_issue = find_label_issues(labels, probs, n_jobs=1)
    assert 0 < expected_issue.sum() < 200
    assert np.array_equal(issues["is_issue"].to_numpy(), expected_issue)
    assert np.allclose(issues["score"], get_label_quality_scores(labels, probs))
    margin = rank_label_issues(frame, {"colour": CLASSES["colour"]},
                               method="normalized_margin").set_index("id").loc[ids]
    assert np.allclose(margin["score"], get_label_quality_scores(labels, probs, method="normalized_margin"))


def test_a_class_nobody_gives_keeps_its_column_and_is_suggested(hand_made):
    # No row is labelled Blue; id 13 looks Blue. cleanlab accepts the missing class.
    looks_blue = predictions([(13, "White", [0.04, 0.01, 0.95], "Men", [0.5, 0.5])])
    frame = pd.concat([hand_made[hand_made["colour"] != "Blue"], looks_blue], ignore_index=True)
    colour = rank_label_issues(frame, CLASSES, heads=["colour"])
    assert colour.iloc[0][["id", "given", "suggested"]].tolist() == [13, "White", "Blue"]
    assert colour.iloc[0]["given_p"] == pytest.approx(0.01)


def test_one_given_class_still_ranks_but_flags_nothing_and_a_one_class_head_is_left_out(hand_made):
    frame = hand_made.assign(colour="Black")
    colour = rank_label_issues(frame, CLASSES, heads=["colour"])
    assert colour["id"].tolist() == [11, 12, 13, 15, 14, 10]  # by P(Black): .02, .03, .1, .2, .3, .9
    assert not colour["is_issue"].any()
    single = hand_made.assign(gender="Men", gender_probs=[[1.0]] * len(hand_made))
    assert set(rank_label_issues(single, {"colour": CLASSES["colour"], "gender": ["Men"]})["head"]) == {"colour"}


def test_empty_input_gives_the_columns_and_no_rows(hand_made):
    issues = rank_label_issues(hand_made.iloc[:0], CLASSES)
    assert tuple(issues.columns) == ISSUE_COLUMNS and issues.empty
    unlabelled = rank_label_issues(hand_made.assign(gender=None), CLASSES, heads=["gender"])
    assert unlabelled.empty and tuple(unlabelled.columns) == ISSUE_COLUMNS


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns="gender_probs"), "predictions have no column(s) gender_probs"),
    (lambda f: f.assign(id=[10, 10, 12, 13, 14, 15]), "id 10 more than once"),
    (lambda f: f.assign(colour=["Black", "Teal", "Black", "Blue", "White", "Blue"]),
     "given label 'Teal' (e.g. id 11) is not one of its classes: Black, White, Blue"),
    (lambda f: f.assign(colour_probs=[[0.5, 0.5]] + f["colour_probs"].tolist()[1:]),
     "colour_probs of id 10 has 2 values; the head has 3 classes"),
    (lambda f: f.assign(gender_probs=f["gender_probs"].tolist()[:5] + [[0.7, 0.7]]),
     "gender_probs of id 15 is not a probability distribution: [0.7, 0.7]"),
])
def test_bad_inputs_name_the_bad_value(hand_made, change, message):
    with pytest.raises(ValueError) as error:
        rank_label_issues(change(hand_made), CLASSES)
    assert message in str(error.value)


def test_unknown_heads_and_methods_list_the_valid_ones(hand_made):
    with pytest.raises(ValueError, match=r"unknown head\(s\) 'usage'; valid: colour, gender"):
        rank_label_issues(hand_made, CLASSES, heads=["colour", "usage"])
    with pytest.raises(ValueError, match="unknown method 'margin'; valid: self_confidence, normalized_margin"):
        rank_label_issues(hand_made, CLASSES, method="margin")


def test_label_issues_of_a_crossval_folder_or_a_run_folder(tmp_path, hand_made):
    saved = rank_label_issues(hand_made, CLASSES)
    crossval = tmp_path / "crossval"
    crossval.mkdir()
    save_issues(saved, RunFolder(crossval).label_issues)
    pd.testing.assert_frame_equal(label_issues(crossval), saved)

    run = tmp_path / "run"
    (run / "evaluation").mkdir(parents=True)
    hand_made.to_parquet(run / "evaluation" / "predictions.parquet", index=False)
    for name in ("report.json", "confusion.json"):  # a complete evaluation; only the predictions are ranked
        (run / "evaluation" / name).write_text("{}")
    schema = LabelSchema(rare_policy="keep", rare_min_count=0, classes=CLASSES,
                         counts={head: dict.fromkeys(names, 1) for head, names in CLASSES.items()})
    (run / "schema.json").write_text(json.dumps(schema.to_dict()))
    pd.testing.assert_frame_equal(label_issues(run), saved)

    with pytest.raises(FileNotFoundError, match="holds neither label_issues.parquet"):
        label_issues(tmp_path)
