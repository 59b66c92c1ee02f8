"""The evaluation files (core.evaluation.files) and their views for the Evaluate page (core.evaluation.views),
checked against scikit-learn; rebuilding a run from its checkpoint and `python -m training evaluate`
on another catalogue."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.stats import binomtest
from sklearn.metrics import classification_report, confusion_matrix

from core.data.catalogue import load_catalogue
from core.data.demo import generate_demo
from core.data.profile import OTHERS_LABEL
from core.data.schema import IGNORE_INDEX, LabelSchema
from core.data.split import split_catalogue
from core.evaluation.files import (
    confusion_from_labels,
    exclusion_notes,
    head_summary,
    load_evaluation,
    summary_table,
    write_evaluation,
)
from core.evaluation.views import (
    Change,
    ConfusionView,
    cell_rows,
    class_rows,
    class_table,
    classes_csv,
    compare_classes,
    compare_shared,
    compare_summaries,
    filter_classes,
    label_lines,
    mcnemar_p,
    misclassified,
    report_json,
    row_normalised,
    shared_outcomes,
    summary_csv,
    top_n_confusion,
    top_probabilities,
    trust_sentences,
)
from core.trust.layer import Calibration
from core.trust.taxonomy import Taxonomy
from dashboard import charts
from training.__main__ import main as cli
from training.checkpoints import CHECKPOINT_KEY, load_run_module
from training.config import TrainConfig
from training.run_folder import VALIDATION, RunFolder, evaluation_name
from training.train import train

from conftest import point_at_workspace

TINY = ["epochs=1", "image_size=64", "batch_size=16", "num_workers=0", "max_samples=80"]


def fake_evaluation(catalogue, schema: LabelSchema, ids: np.ndarray, folder: Path, accuracy: float = 0.7,
                    seed: int = 0) -> dict:
    """Write an evaluation of `ids` without a model: per head, random probabilities whose argmax
    is the true class for about `accuracy` of the labelled rows. Returns write_evaluation's summary."""
    rng = np.random.default_rng(seed)
    labels = schema.encode(catalogue.frame.set_index("id").loc[ids].reset_index())
    probs = {}
    for column, head in enumerate(schema.heads):
        logits = rng.normal(size=(len(ids), len(schema.classes[head])))
        right = (labels[:, column] >= 0) & (rng.random(len(ids)) < accuracy)
        logits[np.flatnonzero(right), labels[right, column]] += 6.0
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs[head] = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return write_evaluation(catalogue, schema, np.asarray(ids), probs, folder, "epoch000.ckpt")


def sklearn_report(predictions: pd.DataFrame, head: str) -> dict:
    scored = predictions[predictions[head].notna()]
    return classification_report(scored[head], scored[f"{head}_pred"], output_dict=True, zero_division=0)


def assert_report_equals_sklearn(report: dict, predictions: pd.DataFrame, head: str) -> None:
    expected = sklearn_report(predictions, head)
    entry = report["heads"][head]
    assert entry["accuracy"] == pytest.approx(expected["accuracy"])
    assert entry["macro_f1"] == pytest.approx(expected["macro avg"]["f1-score"])
    assert entry["weighted_f1"] == pytest.approx(expected["weighted avg"]["f1-score"])
    assert entry["support"] == expected["macro avg"]["support"]
    table = class_table(report, head).set_index("class")
    present = [name for name in expected if name not in ("accuracy", "macro avg", "weighted avg")]
    assert set(present) == set(table.index[(table["support"] > 0) | (table["predicted"] > 0)])
    for name in present:
        row = table.loc[name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(
            (expected[name]["precision"], expected[name]["recall"], expected[name]["f1-score"]))
        assert row["support"] == expected[name]["support"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("data") / "demo", n=100, seed=7)


@pytest.fixture(scope="module")
def faked(demo, tmp_path_factory):
    """A fabricated evaluation of every demo row under the seed's `ignore` policy (rare classes excluded)."""
    catalogue = load_catalogue(demo)
    schema = LabelSchema.fit(catalogue.frame, rare_policy="ignore", rare_min_count=6)
    run = tmp_path_factory.mktemp("run")
    fake_evaluation(catalogue, schema, catalogue.frame["id"].to_numpy(), run / VALIDATION)
    return run, load_evaluation(run / VALIDATION), schema, catalogue


def test_reports_and_confusion_matrices_equal_scikit_learns(faked):
    run, evaluation, schema, _ = faked
    predictions = evaluation.predictions
    for head in schema.heads:
        assert_report_equals_sklearn(evaluation.report, predictions, head)
        scored = predictions[predictions[head].notna()]
        expected = confusion_matrix(scored[head], scored[f"{head}_pred"], labels=schema.classes[head])
        np.testing.assert_array_equal(evaluation.matrix(head), expected)
        assert evaluation.classes(head) == schema.classes[head]
    assert (summary_table(head_summary(evaluation.report)).loc["articleType", "excluded"]
            == predictions["articleType"].isna().sum() > 0)


def test_summary_table_and_exclusion_notes(faked):
    _, evaluation, schema, catalogue = faked
    table = summary_table(head_summary(evaluation.report))
    assert list(table.index) == list(schema.heads)
    assert list(table.columns) == ["accuracy", "macro_f1", "weighted_f1", "support", "excluded", "unknown"]
    excluded = int(evaluation.predictions["articleType"].isna().sum())
    assert table.loc["articleType", "support"] + excluded == len(catalogue.frame)
    assert (table["unknown"] == 0).all()
    notes = exclusion_notes(evaluation.report)
    assert f"articleType: {excluded:,} of {len(catalogue.frame):,} rows excluded" in " ".join(notes)
    assert [note.split(":")[0] for note in notes] == list(table.index[table["excluded"] > 0])


def test_evaluation_names_and_a_missing_evaluation(faked, tmp_path):
    run, _, _, _ = faked
    for name in ("evaluation-zeta", "evaluation-alpha", "evaluation-half"):
        (tmp_path / name).mkdir()
        for file in ("predictions.parquet", "report.json", "confusion.json"):
            (tmp_path / name / file).write_text("{}")
    (tmp_path / "evaluation-half" / "confusion.json").unlink()  # incomplete: not listed
    assert RunFolder(tmp_path).evaluation_names() == ["evaluation-alpha", "evaluation-zeta"]
    assert RunFolder(run).evaluation_names() == [VALIDATION]
    with pytest.raises(FileNotFoundError, match=r"evaluation-half is not a complete evaluation: no confusion.json$"):
        load_evaluation(tmp_path / "evaluation-half")
    with pytest.raises(ValueError, match="unknown head 'colour'; valid: gender, masterCategory"):
        faked[1].matrix("colour")


def test_class_table_and_its_filter(faked):
    _, evaluation, schema, _ = faked
    table = class_table(evaluation.report, "articleType")
    assert list(table["class"]) == schema.classes["articleType"]
    assert list(table.columns) == ["class", "precision", "recall", "f1", "support", "predicted", "unknown"]
    shirts = filter_classes(table, " SHIRT ")
    assert set(shirts["class"]) == {name for name in table["class"] if "shirt" in name.lower()}
    big = filter_classes(table, "", min_support=10)
    assert (big["support"] >= 10).all() and len(big) == (table["support"] >= 10).sum()


def test_class_rows_are_the_images_behind_precision_recall_and_support(faked):
    _, evaluation, _, _ = faked
    predictions = evaluation.predictions
    checked = 0
    for entry in class_table(evaluation.report, "articleType").itertuples():
        right, missed, wrong = (len(class_rows(predictions, "articleType", entry[1], outcome))
                                for outcome in ("right", "missed", "wrongly given"))
        assert right + missed == entry.support
        if right + wrong:
            assert right / (right + wrong) == pytest.approx(entry.precision)
            assert right / entry.support == pytest.approx(entry.recall)
            checked += 1
    assert checked >= 5
    rows = class_rows(predictions, "articleType",
                      class_table(evaluation.report, "articleType")["class"].iloc[0], "missed")
    assert rows["articleType_p"].is_monotonic_decreasing
    with pytest.raises(ValueError, match="unknown outcome 'all'; choose one of missed, wrongly given, right"):
        class_rows(predictions, "articleType", "Shirts", "all")


def test_top_n_groups_the_rest_and_row_normalises():
    classes = ["a", "b", "c", "d"]
    matrix = np.array([[1, 0, 0, 1], [0, 5, 1, 0], [2, 0, 0, 0], [0, 1, 0, 3]])  # supports 2, 6, 2, 4
    view = top_n_confusion(classes, matrix, 2)
    assert view.classes == ["b", "d", OTHERS_LABEL] and view.grouped == ["a", "c"]
    np.testing.assert_array_equal(view.counts, [[5, 0, 1], [1, 3, 0], [0, 1, 3]])
    assert view.counts.sum() == matrix.sum()
    np.testing.assert_allclose(view.rates, [[5 / 6, 0, 1 / 6], [0.25, 0.75, 0], [0, 0.25, 0.75]])
    whole = top_n_confusion(classes, matrix, 10)
    assert whole.classes == ["b", "d", "a", "c"] and whole.grouped == []  # support order, ties in class order
    np.testing.assert_array_equal(row_normalised([[0, 0], [1, 3]]), [[0, 0], [0.25, 0.75]])
    with pytest.raises(ValueError, match="top_n must be a positive int, got 0"):
        top_n_confusion(classes, matrix, 0)


def test_a_cell_holds_exactly_its_rows_grouped_or_not(faked):
    _, evaluation, _, _ = faked
    predictions, head = evaluation.predictions, "articleType"
    view = top_n_confusion(evaluation.classes(head), evaluation.matrix(head), 4)
    for i, true in enumerate(view.classes):
        for j, predicted in enumerate(view.classes):
            rows = cell_rows(predictions, head, view, true, predicted)
            assert len(rows) == view.counts[i, j]
            assert rows[f"{head}_p"].is_monotonic_decreasing
    true, predicted = view.classes[0], view.classes[0]
    expected = predictions[(predictions[head] == true) & (predictions[f"{head}_pred"] == predicted)]["id"]
    assert set(cell_rows(predictions, head, view, true, predicted)["id"]) == set(expected)
    others = cell_rows(predictions, head, view, OTHERS_LABEL, OTHERS_LABEL)
    assert others[head].isin(view.grouped).all() and others[f"{head}_pred"].isin(view.grouped).all()
    with pytest.raises(ValueError, match="'Jumpsuit' is not a row or column of this matrix"):
        cell_rows(predictions, head, view, "Jumpsuit", true)


def test_misclassified_top_probabilities_and_label_lines(faked):
    _, evaluation, schema, _ = faked
    predictions, head = evaluation.predictions, "baseColour"
    wrong = misclassified(predictions, head)
    expected = predictions[predictions[head].notna() & (predictions[head] != predictions[f"{head}_pred"])]
    assert set(wrong["id"]) == set(expected["id"]) and wrong[f"{head}_p"].is_monotonic_decreasing
    assert misclassified(predictions, head, most_confident_first=False)[f"{head}_p"].is_monotonic_increasing
    row = wrong.iloc[0]
    best = top_probabilities(row, head, schema.classes[head], k=2)
    assert best[0] == (row[f"{head}_pred"], pytest.approx(row[f"{head}_p"])) and best[0][1] >= best[1][1]
    lines = label_lines(row, schema.heads)
    assert len(lines) == 7
    assert lines[4] == f"✗ baseColour: {row['baseColour_pred']} ({row['baseColour_p']:.2f}), true {row['baseColour']}"
    excluded = predictions[predictions["articleType"].isna()].iloc[0]
    assert label_lines(excluded, ["articleType"])[0].endswith(", no true class")


def _report(**f1: float) -> dict:
    classes = [{"class": name, "precision": v, "recall": v, "f1": v, "support": 10, "predicted": 10}
               for name, v in f1.items()]
    return {"heads": {"usage": {"accuracy": 0.5, "macro_f1": np.mean(list(f1.values())), "weighted_f1": 0.5,
                                "support": 10 * len(f1), "excluded": 0, "classes": classes}}}


def test_compare_two_reports():
    a, b = _report(Casual=0.8, Sports=0.5, Ethnic=0.3), _report(Casual=0.9, Sports=0.42, Party=0.1)
    heads = compare_summaries(a, b)
    assert heads.loc["usage", "macro_f1_delta"] == pytest.approx(np.mean([0.9, 0.42, 0.1]) - np.mean([0.8, 0.5, 0.3]))
    assert heads.loc["usage", "accuracy_delta"] == 0


def _predictions(ids, true, predicted) -> pd.DataFrame:
    return pd.DataFrame({"id": list(ids), "usage": list(true), "usage_pred": list(predicted)})


def test_runs_compare_on_the_rows_they_share_and_flag_only_significant_changes():
    # a scored ids 0-199, b ids 100-299: 100 shared rows, one of them with a label changed in between.
    true = ["Casual"] * 97 + ["Sports"] * 3
    a = _predictions(range(200), ["Casual"] * 100 + true, ["Casual"] * 100 + true)  # a: all right
    b_pred = ["Formal"] * 30 + ["Casual"] * 67 + ["Casual"] * 3  # b: 30 Casual rows and the 3 Sports rows wrong
    b_true = [*true[:-1], "Formal"]  # the last shared row's label changed: left out
    b = _predictions(range(100, 300), [*b_true, *["Casual"] * 100], [*b_pred, *["Casual"] * 100])
    outcomes = shared_outcomes(a, b, "usage")
    assert outcomes.index.tolist() == list(range(100, 199))
    heads = compare_shared(a, b, ["usage"])
    row = heads.loc["usage"]
    assert (row["rows"], row["only_a_right"], row["only_b_right"]) == (99, 32, 0)
    assert row["accuracy_a"] == 1 and row["accuracy_b"] == pytest.approx(67 / 99)
    assert row["p_value"] == pytest.approx(binomtest(0, 32, 0.5).pvalue) and row["change"] == Change.WORSE
    classes = compare_classes(a, b, "usage").set_index("class")
    assert list(classes.index) == ["Sports", "Casual"]  # largest drop first
    assert classes.loc["Sports", "rows"] == 2 and classes.loc["Sports", "delta"] == -1
    assert classes.loc["Sports", "change"] == Change.UNSURE  # 2 rows: never significant on their own
    assert classes.loc["Casual", "change"] == Change.WORSE
    assert mcnemar_p(3, 3) == 1 and mcnemar_p(0, 0) == 1
    assert mcnemar_p(20, 7) == pytest.approx(binomtest(7, 27, 0.5).pvalue)
    assert compare_shared(a, b, ["usage"], alpha=1e-12).loc["usage", "change"] == Change.UNSURE


def test_csv_and_json_exports_hold_the_report(faked):
    _, evaluation, schema, _ = faked
    report = evaluation.report
    classes = pd.read_csv(io.StringIO(classes_csv(report)), keep_default_na=False)
    assert len(classes) == sum(len(names) for names in schema.classes.values())
    article = classes[classes["head"] == "articleType"].drop(columns="head").reset_index(drop=True)
    pd.testing.assert_frame_equal(article, class_table(report, "articleType"), check_dtype=False)
    summary = pd.read_csv(io.StringIO(summary_csv(report)), index_col="head")
    pd.testing.assert_frame_equal(summary, summary_table(head_summary(report)), check_dtype=False)
    assert json.loads(report_json(report)) == report


def test_unknown_classes_count_as_errors_named(tmp_path):
    frame = pd.DataFrame({"id": np.arange(8), "usage": ["A", "A", "B", "B", "Jumpsuit", "Jumpsuit", "Kurta", None]})
    schema = LabelSchema.fit(frame.iloc[:4], rare_policy="keep", rare_min_count=0, heads=("usage",))
    catalogue = SimpleNamespace(frame=frame, root=Path("/elsewhere"))  # all write_evaluation reads
    probs = {"usage": np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3],
                                [0.5, 0.5]], dtype=np.float32)}
    # LabelSchema.encode ignores the unseen values; the evaluation counts them as errors, by name.
    assert (schema.encode(frame) == IGNORE_INDEX).sum() == 4
    report = write_evaluation(catalogue, schema, frame["id"].to_numpy(), probs, tmp_path, "best")
    entry = report["heads"]["usage"]
    assert entry["unknown_classes"] == {"Jumpsuit": 2, "Kurta": 1}
    assert (entry["support"], entry["excluded"]) == (7, 1)
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    assert list(predictions["usage"][:7]) == ["A", "A", "B", "B", "Jumpsuit", "Jumpsuit", "Kurta"]
    assert pd.isna(predictions["usage"][7])
    assert_report_equals_sklearn(report, predictions, "usage")
    assert entry["accuracy"] == pytest.approx(3 / 7)
    confusion = json.loads((tmp_path / "confusion.json").read_text())["usage"]
    assert confusion["classes"] == ["A", "B", "Jumpsuit", "Kurta"]
    np.testing.assert_array_equal(confusion["matrix"], confusion_matrix(
        predictions["usage"][:7], predictions["usage_pred"][:7], labels=confusion["classes"]))
    assert report["data"] == "/elsewhere"
    assert summary_table(head_summary(report)).loc["usage", "unknown"] == 3
    assert ("usage: 3 rows of classes the run never saw, counted as errors: Jumpsuit (2), Kurta (1)."
            in exclusion_notes(report))
    assert class_table(report, "usage")["unknown"].tolist() == [False, False, True, True]


def test_confusion_from_labels_names_strays():
    with pytest.raises(ValueError, match=r"labels \['C'\] are not among the classes \['A', 'B'\]"):
        confusion_from_labels(pd.Series(["A", "C"]), pd.Series(["A", "B"]), ["A", "B"])


def test_heatmap_cells_and_png():
    view = ConfusionView(classes=["a", "b", OTHERS_LABEL],
                         counts=np.array([[4, 1, 0], [0, 2, 2], [1, 0, 0]]), grouped=["c"])
    figure = charts.confusion_heatmap(view, normalised=True, title="t")
    heatmap, cells = figure.data
    np.testing.assert_allclose(heatmap.z, view.rates)
    assert list(zip(cells.y, cells.x))[1] == ("a", "b")  # row-major: (true, predicted)
    np.testing.assert_array_equal([row[0] for row in cells.customdata], view.counts.ravel())
    assert [tuple(row[2:]) for row in cells.customdata][1] == ("a", "b")  # what a click hands back
    k = len(view.classes)  # the cells fill the plot, the first true class on top
    assert list(figure.layout.xaxis.range) == [-0.5, k - 0.5] and list(figure.layout.yaxis.range) == [k - 0.5, -0.5]
    png = Image.open(io.BytesIO(charts.confusion_png(view, normalised=False, title="usage: rows")))
    assert png.format == "PNG" and png.width > 3 * 26 and png.height > 3 * 26
    bigger = ConfusionView(classes=list("abcdef"), counts=np.eye(6, dtype=int), grouped=[])
    assert Image.open(io.BytesIO(charts.confusion_png(bigger, False, "x"))).height > png.height


def test_real_sample_reports_equal_scikit_learns(real_sample, tmp_path):
    """A fabricated evaluation of the real sample's validation split under the seed's policy
    (classes under 500 training rows ignored)."""
    catalogue = load_catalogue(real_sample)
    split = split_catalogue(catalogue.frame, val_fraction=0.2, seed=0)
    schema = LabelSchema.fit(catalogue.frame[(split == "train").to_numpy()], rare_policy="ignore", rare_min_count=50)
    val_ids = catalogue.frame["id"].to_numpy()[(split == "val").to_numpy()]
    fake_evaluation(catalogue, schema, val_ids, tmp_path / VALIDATION, accuracy=0.6)
    evaluation = load_evaluation(tmp_path / VALIDATION)
    for head in schema.heads:
        assert_report_equals_sklearn(evaluation.report, evaluation.predictions, head)
    view = top_n_confusion(evaluation.classes("articleType"), evaluation.matrix("articleType"), 20)
    assert view.counts.sum() == evaluation.report["heads"]["articleType"]["support"] and len(view.grouped) > 0


# A real tiny run: the checkpoint rebuilds the net, and the CLI evaluates it on another catalogue.

@pytest.fixture(scope="module")
def finished_run(demo, tmp_path_factory):
    """A run of its own (not conftest's shared one): the tests below add an evaluation and refit its trust layer."""
    with pytest.MonkeyPatch.context() as patch:
        point_at_workspace(patch, tmp_path_factory.mktemp("ws"))
        cfg = TrainConfig.from_recipe("default").with_overrides([f"data={demo}", "rare_policy=keep", *TINY])
        yield train(cfg), cfg


def test_load_run_module_rebuilds_the_checkpointed_net(finished_run):
    record, cfg = finished_run
    folder = Path(record.folder)
    best = RunFolder(folder).checkpoint()
    assert best == RunFolder(folder).best
    module, loaded_cfg, schema, trust = load_run_module(folder)
    assert loaded_cfg == cfg and schema == LabelSchema.load(RunFolder(folder).schema) and not module.training
    state = torch.load(best, map_location="cpu", weights_only=True)
    assert state[CHECKPOINT_KEY]["config"] == cfg.to_dict()
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, state["state_dict"][name]), name
    # The trust layer rides along: the taxonomy from the start, the calibration added after training.
    run = RunFolder(folder)
    assert trust.taxonomy == Taxonomy.load(run.taxonomy) and trust.calibration == Calibration.load(run.calibration)
    last = torch.load(run.last, map_location="cpu", weights_only=True)[CHECKPOINT_KEY]
    assert (Calibration.from_dict(last["calibration"]) == Calibration.from_dict(state[CHECKPOINT_KEY]["calibration"])
            == trust.calibration)
    assert run.best.stat().st_ino == (run.checkpoints / "epoch000.ckpt").stat().st_ino  # still one file
    with pytest.raises(FileNotFoundError, match=r"no 'epoch999.ckpt' checkpoint in .*; "
                                                r"it holds: best.ckpt, epoch000.ckpt, last.ckpt"):
        RunFolder(folder).checkpoint("epoch999.ckpt")


def test_best_without_best_ckpt_is_the_one_epoch_checkpoint(tmp_path):
    """A cancelled run has no best.ckpt: its top-1 epoch checkpoint is the best."""
    run = RunFolder(tmp_path)
    checkpoints = run.checkpoints
    checkpoints.mkdir(parents=True)
    for name in ("epoch004.ckpt", "last.ckpt"):
        torch.save({}, checkpoints / name)  # a whole (zip) checkpoint file
    assert run.checkpoint() == checkpoints / "epoch004.ckpt"
    assert run.checkpoint("last") == checkpoints / "last.ckpt"
    torch.save({}, checkpoints / "epoch002.ckpt")
    with pytest.raises(FileNotFoundError, match="no 'best' checkpoint in .*; "
                                                "it holds: epoch002.ckpt, epoch004.ckpt, last.ckpt"):
        run.checkpoint()


def test_cli_evaluate_on_another_catalogue_counts_unknown_classes(finished_run, tmp_path, capsys):
    record, _ = finished_run
    other = generate_demo(tmp_path / "held out", n=50, seed=21)
    styles = pd.read_csv(other / "styles.csv")
    styles.loc[:4, "articleType"] = "Jumpsuit"  # a class the run never saw
    styles.to_csv(other / "styles.csv", index=False)
    validation_before = (Path(record.folder) / VALIDATION / "report.json").read_text()

    assert cli(["evaluate", record.id, "--data", str(other), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    folder = Path(record.folder) / evaluation_name(other)
    assert folder.name == "evaluation-held_out"
    evaluation = load_evaluation(folder)
    assert evaluation.report["data"] == str(other) and evaluation.report["rows"] == 50
    assert evaluation.report["heads"]["articleType"]["unknown_classes"] == {"Jumpsuit": 5}
    assert summary["articleType"]["unknown"] == 5 and summary["articleType"]["support"] == 50
    for head in evaluation.heads:
        assert_report_equals_sklearn(evaluation.report, evaluation.predictions, head)
        assert summary[head]["accuracy"] == pytest.approx(evaluation.report["heads"][head]["accuracy"])
    assert (Path(record.folder) / VALIDATION / "report.json").read_text() == validation_before
    assert RunFolder(record.folder).evaluation_names() == [VALIDATION, "evaluation-held_out"]


def test_cli_evaluate_names_a_missing_checkpoint_or_run(finished_run, capsys):
    record, _ = finished_run
    assert cli(["evaluate", record.id, "--checkpoint", "nope.ckpt"]) == 2
    assert "error: no 'nope.ckpt' checkpoint in" in capsys.readouterr().err
    assert cli(["evaluate", "no-such-run"]) == 2
    assert "error: unknown run 'no-such-run'" in capsys.readouterr().err


def test_a_relative_dataset_path_names_the_same_dataset(faked, tmp_path, monkeypatch):
    """A run trained with `--data workspace/demo-cli` (relative, as the README shows) is offered for
    that catalogue however the catalogue is named later."""
    from core.data.catalogue import DatasetKey, same_dataset
    from training.rows import with_dataset

    run, _, _, catalogue = faked
    monkeypatch.chdir(catalogue.root.parent)
    relative = catalogue.root.name
    assert with_dataset(TrainConfig(data=relative)).data == str(catalogue.root) == DatasetKey.of(f"./{relative}/")
    assert same_dataset(relative, catalogue.root) and not same_dataset(relative, tmp_path)
    report = json.loads((run / VALIDATION / "report.json").read_text())
    (tmp_path / VALIDATION).mkdir()
    for name in ("predictions.parquet", "confusion.json"):
        (tmp_path / VALIDATION / name).write_bytes((run / VALIDATION / name).read_bytes())
    # An older report: no "data"; the run's config named the catalogue relatively.
    (tmp_path / VALIDATION / "report.json").write_text(json.dumps({k: v for k, v in report.items() if k != "data"}))
    assert RunFolder(tmp_path).evaluations_of(catalogue.root, relative) == [VALIDATION]
    assert RunFolder(tmp_path).evaluations_of(tmp_path, relative) == []


def test_cli_calibrate_refits_the_trust_layer_of_a_run_that_lacks_it(finished_run, capsys):
    """A run trained before the trust layer existed has neither taxonomy.json nor calibration.json:
    `calibrate` learns them from its own rows and validation evaluation, without a forward pass."""
    record, _ = finished_run
    run = RunFolder(record.folder)
    before = json.loads(run.calibration.read_text())
    run.taxonomy.unlink()
    run.calibration.unlink()
    assert cli(["calibrate", record.id, "--json"]) == 0
    out = capsys.readouterr().out
    assert "impossible combinations" in out and "decoded jointly" in out
    trust = json.loads(out.strip().splitlines()[-1])
    assert set(trust["heads"]) == set(record.config["heads"]) and set(trust["products"]) == {"0.01", "0.02", "0.05"}
    assert json.loads(run.calibration.read_text()) == before  # the same rows give the same fit
    assert Taxonomy.load(run.taxonomy) == load_run_module(record.folder)[3].taxonomy
    report = json.loads((run.evaluation() / "report.json").read_text())
    assert report["decoding"] == "consistent" and report["impossible"]["consistent"] == 0.0
    assert cli(["calibrate", "no-such-run"]) == 2


def test_a_head_without_a_threshold_says_how_many_more_held_out_rows_would_certify_it():
    def report(held_out: int) -> dict:
        uncertified = {"targets": {"0.02": {"threshold": None, "coverage": 0.0, "error": None, "accepted": 0}}}
        certified = {"targets": {"0.02": {"threshold": 0.9, "coverage": 0.71, "error": 0.01, "accepted": 85}}}
        return {"trust": {"rows": {"ece": held_out, "targets": held_out}, "heads": {"usage": uncertified,
                                                                                      "gender": certified},
                          "products": {"0.02": 0.0}}}

    few, many = trust_sentences(report(120), 0.02), trust_sentences(report(400), 0.02)
    assert few[0] == ("At ≤ 2% error, every usage tag needs a person: 120 held-out rows are too few to certify it; at "
                      "least 29 more (149 in all, more if any of its surest proposals is wrong) would be needed.")
    assert few[1] == many[1] == "At ≤ 2% error, 71% of gender tags need no person."
    assert many[0].startswith("At ≤ 2% error, every usage tag needs a person: too many errors even among its surest")
    assert "at least 149 of them above one threshold must be right" in many[0]
