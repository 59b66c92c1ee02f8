"""AppTest of the Evaluate page on one finished tiny run: each section renders numbers equal to
scikit-learn's on the run's predictions, and a confusion cell shows exactly the images in it."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import classification_report, confusion_matrix
from streamlit.testing.v1 import AppTest
from test_evaluation import fake_evaluation

from core import workspace
from core.data.catalogue import load_catalogue
from core.data.profile import OTHERS_LABEL
from core.data.schema import LabelSchema
from core.data.split import in_test_part
from core.evaluation.files import load_evaluation
from core.evaluation.views import (
    CLASS_OUTCOMES,
    class_rows,
    class_table,
    compare_shared,
    compare_summaries,
    misclassified,
    trust_sentences,
    trust_table,
)
from dashboard.runs import EVALUATE_RUN_KEY
from dashboard.text import plain
from training.registry import RunRecord, RunRegistry
from training.run_folder import TEST_PART, RunFolder

from conftest import captioned_ids, chart_spec, open_page, plotly_array, point_at_workspace, shown

EVALUATE = "../pages/evaluate.py"
HEAD = "articleType"


@pytest.fixture(scope="module")
def run(in_tiny_run):
    """The shared tiny run and its validation evaluation."""
    return in_tiny_run.record, load_evaluation(RunFolder(in_tiny_run.record.folder).evaluation())


@pytest.fixture
def two_runs(in_tiny_run, tmp_path, monkeypatch) -> tuple[RunRecord, RunRecord]:
    """Runs a (older) and b of the tiny run's dataset in a workspace of their own: copies of the tiny run's
    folder (its checkpoints left out), b's validation evaluation fabricated (right on about 90 % of the
    same rows)."""
    record, demo, _ = in_tiny_run
    point_at_workspace(monkeypatch, tmp_path / "ws", demo)
    registry = RunRegistry()
    runs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        shutil.copytree(record.folder, folder, ignore=shutil.ignore_patterns("checkpoints"))
        copy = registry.create(record.config, "tester", folder=folder)
        registry.mark_running(copy.id, os.getpid(), "cpu", "random")
        runs.append(registry.mark_finished(copy.id, 0.5, "val/mean_macro_f1", record.metrics, {}))
    b = RunFolder(runs[1].folder)
    ids = load_evaluation(b.evaluation()).predictions["id"].to_numpy()
    fake_evaluation(load_catalogue(demo), LabelSchema.load(b.schema), ids, b.evaluation(), accuracy=0.9)
    return runs[0], runs[1]


def page(section: str | None = None) -> AppTest:
    return open_page(EVALUATE, "evaluate.section", section)


def test_summary_equals_scikit_learn_and_names_the_exclusions(run):
    record, evaluation = run
    at = page()
    table = at.dataframe[0].value
    predictions = evaluation.predictions
    for head in evaluation.heads:
        scored = predictions[predictions[head].notna()]
        expected = classification_report(scored[head], scored[f"{head}_pred"], output_dict=True, zero_division=0)
        assert table.loc[head, "accuracy"] == pytest.approx(expected["accuracy"])
        assert table.loc[head, "macro_f1"] == pytest.approx(expected["macro avg"]["f1-score"])
        assert table.loc[head, "weighted_f1"] == pytest.approx(expected["weighted avg"]["f1-score"])
        assert table.loc[head, "support"] == len(scored)
        assert table.loc[head, "excluded"] == len(predictions) - len(scored)
    captions = [shown(c.value) for c in at.caption]
    assert captions[0].startswith(f"Checkpoint `{record.metrics['best_checkpoint']}` · {len(predictions):,} images")
    for head in table.index[table["excluded"] > 0]:
        assert any(c.startswith(f"{head}: {table.loc[head, 'excluded']:,} of {len(predictions):,} rows excluded")
                   for c in captions)
    assert len(at.get("download_button")) == 3


def test_classes_table_filter_and_f1_bars(run):
    _, evaluation = run
    at = page("Classes")
    expected = class_table(evaluation.report, HEAD)
    pd.testing.assert_frame_equal(at.dataframe[0].value.reset_index(drop=True), expected)
    bars = chart_spec(at)["data"]
    f1 = np.concatenate([plotly_array(trace["y"]) for trace in bars])
    assert (np.diff(f1) <= 0).all() and len(f1) == len(expected)

    at.text_input(key="evaluate.class_filter").set_value("shirt").run()
    shown = at.dataframe[0].value
    assert set(shown["class"]) == {name for name in expected["class"] if "shirt" in name.lower()} != set()


def test_confusion_heatmap_counts_and_a_cell_drill_down(run):
    _, evaluation = run
    predictions = evaluation.predictions
    scored = predictions[predictions[HEAD].notna()]
    at = page("Confusion")
    heatmap = chart_spec(at)["data"][0]
    order = heatmap["y"]
    counts = plotly_array(heatmap["z"])
    np.testing.assert_array_equal(counts, confusion_matrix(scored[HEAD], scored[f"{HEAD}_pred"], labels=order))

    i, j = np.unravel_index(np.argmax(counts), counts.shape)  # the fullest cell
    true, predicted = order[i], order[j]
    top_n = len(order)
    at.selectbox(key=f"evaluate.true.{HEAD}.{top_n}").set_value(true)
    at.selectbox(key=f"evaluate.pred.{HEAD}.{top_n}").set_value(predicted).run()
    expected = scored[(scored[HEAD] == true) & (scored[f"{HEAD}_pred"] == predicted)]
    assert sorted(captioned_ids(at)) == sorted(expected["id"]) and len(expected) == counts[i, j] > 0
    assert len(at.get("image")) == len(expected)

    at.radio(key="evaluate.norm").set_value("row-normalised")
    at.slider(key=f"evaluate.top_n.{HEAD}").set_value(2).run()
    view = chart_spec(at)["data"][0]
    row_sums = plotly_array(view["z"]).sum(axis=1)
    assert view["y"][-1] == OTHERS_LABEL and np.allclose(row_sums[row_sums > 0], 1)
    at.selectbox(key=f"evaluate.true.{HEAD}.2").set_value(OTHERS_LABEL)
    at.selectbox(key=f"evaluate.pred.{HEAD}.2").set_value(OTHERS_LABEL).run()
    kept = view["y"][:2]
    expected = scored[~scored[HEAD].isin(kept) & ~scored[f"{HEAD}_pred"].isin(kept)]
    assert sorted(captioned_ids(at)) == sorted(expected["id"])


def test_misclassified_grid_shows_all_seven_heads(run):
    _, evaluation = run
    at = page("Misclassified")
    expected = misclassified(evaluation.predictions, HEAD)["id"].tolist()[:24]
    assert captioned_ids(at) == expected
    first = shown(next(c.value for c in at.caption if c.value.startswith(f"**{expected[0]}**")))
    assert len(first.split("  \n")) == 1 + 7 and "✗ articleType:" in first

    at.radio(key="evaluate.order").set_value("least confident first").run()
    assert captioned_ids(at) == misclassified(evaluation.predictions, HEAD, False)["id"].tolist()[:24]


def test_trust_says_how_many_tags_need_no_person_with_both_decodings(run):
    _, evaluation = run
    report = evaluation.report
    at = page("Trust")
    assert not at.exception, at.exception
    shown = [m.value for m in at.markdown]
    for sentence in trust_sentences(report, 0.02):
        assert f"- {plain(sentence)}" in shown
    pd.testing.assert_frame_equal(at.dataframe[0].value, trust_table(report, 0.02))
    assert any(f"{report['impossible']['independent']:.1%} when each head is decoded on its own" in c.value
               for c in at.caption)
    titles = [chart_spec(at, index)["layout"]["title"]["text"] for index in range(2)]
    assert titles == [f"{HEAD}: reliability", f"{HEAD}: error against coverage"]
    at.segmented_control(key="evaluate.target").set_value(0.05).run()
    pd.testing.assert_frame_equal(at.dataframe[0].value, trust_table(report, 0.05))


def test_training_curves(run):
    at = page("Curves")
    titles = [chart_spec(at, index)["layout"]["title"]["text"] for index in range(3)]
    assert titles == ["Loss per epoch", "Validation accuracy per head", "Validation macro-F1 per head"]
    assert {trace["name"] for trace in chart_spec(at, 0)["data"]} == {"train", "val"}


def test_compare_runs_on_the_rows_both_scored_when_they_have_no_test_part(two_runs):
    a, b = two_runs
    at = page()
    at.selectbox(key=EVALUATE_RUN_KEY).set_value(a.id).run()
    at.session_state["evaluate.section"] = "Compare"
    at.run()
    assert at.selectbox(key="evaluate.compare_with").value == b.id
    mine, other = (load_evaluation(RunFolder(record.folder).evaluation()) for record in (a, b))
    expected = compare_shared(mine.predictions, other.predictions, mine.heads)
    pd.testing.assert_frame_equal(at.dataframe[0].value, expected)  # a Styler's data
    shared = int(expected["rows"].max())
    assert f"a = run {a.id} · validation split; b = run {b.id} · validation split; delta = b − a" in [
        shown(c.value) for c in at.caption]
    assert (f"Like for like on the **{shared:,} rows both scored** (a scored {len(mine.predictions):,}, b "
            f"{len(other.predictions):,}); a head's rows are those with the same true class in both. Not on the "
            f"dataset's fixed test part: run {a.id} and run {b.id} have no evaluation on the dataset's fixed test "
            "part.") in [shown(m.value) for m in at.markdown]
    pd.testing.assert_frame_equal(at.dataframe[1].value, compare_summaries(mine.report, other.report))
    classes = at.dataframe[2].value
    assert classes["delta"].dropna().is_monotonic_increasing
    worse = int((classes["change"] == "worse").sum())
    assert any(m.value.startswith(f"**{HEAD}**: accuracy on each true class's shared rows; {worse} classes "
                                  "significantly worse") for m in at.markdown)
    for table, columns in ((at.dataframe[0], ["rows", "only_a_right"]), (at.dataframe[1], ["support_a", "support_b"]),
                           (at.dataframe[2], ["rows", "only_b_right"])):  # counts read as whole numbers
        shown_counts = displayed(table)[columns].stack()
        assert shown_counts.str.fullmatch(r"[\d,]+").all(), shown_counts.tolist()
    at.selectbox(key="evaluate.significance").set_value(0.1).run()
    assert not at.exception, at.exception


def test_compare_runs_on_the_datasets_fixed_test_part_when_both_have_it(two_runs, in_tiny_run):
    """Whatever evaluation the page shows, two runs with a test part are compared on it, and the page says so;
    the test part is one of the evaluations the page offers."""
    catalogue = load_catalogue(in_tiny_run.demo)
    ids = catalogue.frame["id"].to_numpy()
    test_ids = ids[in_test_part(ids)]
    for record, accuracy in zip(two_runs, (0.6, 0.9)):
        folder = RunFolder(record.folder)
        fake_evaluation(catalogue, LabelSchema.load(folder.schema), test_ids, folder.evaluation(TEST_PART), accuracy)
    a, b = two_runs
    at = page()
    at.selectbox(key=EVALUATE_RUN_KEY).set_value(a.id).run()
    assert at.selectbox(key=f"evaluate.name.{a.id}").options == ["validation split", "test part"]
    at.session_state["evaluate.section"] = "Compare"
    at.run()
    mine, other = (load_evaluation(RunFolder(record.folder).evaluation(TEST_PART)) for record in two_runs)
    expected = compare_shared(mine.predictions, other.predictions, mine.heads)
    pd.testing.assert_frame_equal(at.dataframe[0].value, expected)
    assert int(expected["rows"].max()) == len(test_ids)
    assert f"a = run {a.id} · test part; b = run {b.id} · test part; delta = b − a" in [
        shown(c.value) for c in at.caption]
    assert (f"Both scored on **the dataset's fixed test part, {len(test_ids):,} rows** neither run trained or "
            f"validated on (a scored {len(test_ids):,}, b {len(test_ids):,}); a head's rows are those with the same "
            "true class in both.") in [shown(m.value) for m in at.markdown]
    assert not at.exception, at.exception


def displayed(dataframe) -> pd.DataFrame:
    """What a Styler-formatted st.dataframe shows: its display values, as text."""
    return pa.ipc.open_stream(dataframe.proto.arrow_data.styler.display_values).read_all().to_pandas()


def test_no_evaluated_run_says_so(in_tiny_run, workspace_home, monkeypatch):
    monkeypatch.setenv(workspace.DATA_ENV, str(in_tiny_run.demo))  # without one, Home would generate the demo
    at = page()
    assert [i.value for i in at.info] == ["No evaluated run yet: a run is evaluated on its validation split "
                                          "when training finishes."]


def test_label_issues_queue_lists_the_ranked_rows_of_the_head(run):
    record, evaluation = run
    from training.evaluate import label_issues

    expected = label_issues(record.folder)
    expected = expected[expected["head"] == HEAD]
    at = page("Label issues")
    at.toggle(key="evaluate.issues_flagged").set_value(False).run()
    assert not at.exception, at.exception
    assert any(f"{len(expected):,} labelled {HEAD} rows ranked" in c.value for c in at.caption)
    assert captioned_ids(at) == expected["id"].head(24).tolist()  # most suspicious first
    first = shown(next(c.value for c in at.caption if c.value.startswith("**")))
    top = expected.iloc[0]
    assert f"given {top['given']} (" in first and f"suggested {top['suggested']} (" in first  # plain text


def test_selecting_a_class_shows_the_images_behind_its_numbers(run):
    _, evaluation = run
    table = class_table(evaluation.report, HEAD)
    index = int(table["support"].to_numpy().argmax())
    name = table["class"].iloc[index]
    at = page("Classes")
    at.session_state[f"evaluate.class_table.{HEAD}"] = {"selection": {"rows": [index], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, at.exception
    outcome = at.radio(key=f"evaluate.outcome.{HEAD}.{name}")
    counts = {option: len(class_rows(evaluation.predictions, HEAD, name, option)) for option in CLASS_OUTCOMES}
    assert counts["right"] + counts["missed"] == table["support"].iloc[index]
    assert outcome.value == next(option for option in CLASS_OUTCOMES if counts[option])  # the first with images
    for option in CLASS_OUTCOMES:
        outcome.set_value(option).run()
        expected = class_rows(evaluation.predictions, HEAD, name, option)["id"].tolist()[:24]
        assert captioned_ids(at) == expected
