"""training.launcher, .status and .estimate: runs launched in their own session, cancelled as a group,
watched live.

Three tests start real (tiny) training processes on a generated demo catalogue; the rest use
crafted files and registry rows.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.data.demo import generate_demo
from training.config import TrainConfig
from training.estimate import BACKBONE_COSTS, doubts, estimate, split_sizes
from training.launcher import LaunchError, RunBusyError, cancel_run, launch_run, resume_run
from training.machine import Machine
from training.processes import log_tail
from training.registry import ACTIVE, LOST_PROCESS_ERROR, RunRegistry
from training.run_folder import RunFolder, write_progress
from training.status import format_duration, metrics_frame, run_progress, runs_frame, summary_frame

from conftest import ANN

# rare_policy "keep": with "other", 48 training rows would merge every colour into one class.
TINY = {"image_size": 64, "epochs": 1, "max_samples": 60, "num_workers": 0, "batch_size": 16, "rare_policy": "keep"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("demo") / "data", n=80, seed=11)


@pytest.fixture()
def registry(workspace_home) -> RunRegistry:
    return RunRegistry()


def tiny(demo: Path, **overrides) -> TrainConfig:
    return TrainConfig.from_recipe("default", {"data": str(demo), **TINY, **overrides})


def wait_for(predicate, timeout: float, what: str):
    """Poll predicate() every 0.2 s until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)
    return value


def active(registry: RunRegistry, run_id: str):
    """The run's record while it is queued or running; fails at once when it ended instead."""
    record = registry.get(run_id)
    assert record.status in ACTIVE, f"the run ended {record.status}: {record.error}"
    return record


def stage(record) -> str | None:
    return (RunFolder(record.folder).read_progress() or {}).get("stage")


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


# --- real training processes


@pytest.mark.slow
def test_launched_run_has_its_own_session_and_goes_queued_running_finished(demo, registry):
    record = launch_run(tiny(demo), ANN, registry)
    assert record.status == "queued"
    pid = record.pid  # handed over to the training process
    assert pid != os.getpid() and os.getsid(pid) == pid and os.getpgid(pid) == pid
    with pytest.raises(RunBusyError, match=f"run {record.id} is (queued|running)"):
        launch_run(tiny(demo), ANN, registry)

    seen = []
    def ended():
        current = registry.get(record.id)
        if not seen or seen[-1] != current.status:
            seen.append(current.status)
        return current if current.status not in ("queued", "running") else None

    final = wait_for(ended, 240, "the run to end")
    assert final.status == "finished", final.error
    assert "running" in seen and seen[-1] == "finished"
    assert final.pid == pid  # the child took the run over from the launching process
    # The process prints its summary after it records the run finished: the line may come a moment later.
    wait_for(lambda: f"run {record.id}: finished" in RunFolder(final.folder).log.read_text(), 30, "the summary line")

    epochs = metrics_frame(final.folder)
    assert epochs["epoch"].tolist() == [1]
    assert epochs["val/mean_macro_f1"].iloc[0] == pytest.approx(final.best_metric)
    status = run_progress(final)
    assert (status.status, status.stage, status.fraction) == ("finished", "finished", 1.0)
    assert status.text.startswith("Finished in ")
    summary = summary_frame(final)
    assert list(summary.index) == list(final.config["heads"])
    assert summary.loc["gender", "accuracy"] == final.metrics["heads"]["gender"]["accuracy"]


def epoch(record) -> int:
    return (RunFolder(record.folder).read_progress() or {}).get("epoch") or 0


@pytest.mark.slow
def test_cancel_keeps_the_last_checkpoint_and_resume_continues_from_it(demo, registry):
    # Long enough to be inside fit when cancelled: 30 epochs of 6 steps.
    record = launch_run(tiny(demo, epochs=30, batch_size=8), ANN, registry)
    pid = record.pid
    wait_for(lambda: stage(current := active(registry, record.id)) == "train" and epoch(current) >= 2, 240,
             "the second epoch")

    cancelled = cancel_run(record.id, ANN, registry, timeout=60)

    assert cancelled.status == "cancelled"
    wait_for(lambda: group_gone(pid), 10, "the process group to be gone")
    assert RunFolder(record.folder).last.is_file()
    assert stage(record) == "cancelled"  # train() saw SIGTERM inside fit
    assert registry.get(record.id).status == "cancelled"  # the child's own report did not change it
    with pytest.raises(ValueError, match=f"run {record.id} is cancelled; only a queued or running run"):
        cancel_run(record.id, ANN, registry)
    first_attempt = metrics_frame(record.folder)
    assert first_attempt["epoch"].tolist()[:1] == [1]

    resumed = resume_run(record.id, ANN, registry)
    assert resumed.status == "queued" and resumed.id == record.id
    with pytest.raises(ValueError, match=f"run {record.id} is (queued|running); only a failed or cancelled run"):
        resume_run(record.id, ANN, registry)  # a second click
    new_pid = resumed.pid
    assert new_pid not in (os.getpid(), pid) and os.getpgid(new_pid) == new_pid
    # From last.ckpt: training goes on at the epoch it was cancelled in (or later), not at 1.
    wait_for(lambda: stage(current := active(registry, record.id)) == "train" and current.status == "running", 240,
             "the resumed run to train")
    assert epoch(record) >= 2
    assert registry.get(record.id).pid == new_pid
    assert cancel_run(record.id, ANN, registry, timeout=60).status == "cancelled"
    # The first attempt's epochs stay in the curves.
    assert metrics_frame(record.folder)["epoch"].tolist()[:len(first_attempt)] == first_attempt["epoch"].tolist()


def test_resume_refuses_a_run_that_is_not_failed_or_cancelled(demo, registry):
    queued = registry.create(tiny(demo).to_dict(), "tester")
    with pytest.raises(ValueError, match=f"run {queued.id} is queued; only a failed or cancelled run can be resumed"):
        resume_run(queued.id, ANN, registry)
    assert registry.get(queued.id).pid == os.getpid()  # no training process was started for it


@pytest.mark.slow
def test_a_killed_training_process_is_listed_as_failed(demo, registry):
    record = launch_run(tiny(demo), ANN, registry)
    running = wait_for(lambda: (current := active(registry, record.id)).status == "running" and current, 120,
                       "the child to mark the run running")
    pid = running.pid
    assert pid == record.pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    failed = wait_for(lambda: next((r for r in registry.list() if r.id == record.id and r.status == "failed"), None),
                      20, "the registry to list the run failed")
    assert failed.error.startswith(f"{LOST_PROCESS_ERROR}: it was killed by SIGKILL")
    assert registry.running() is None


# --- launching without training


def test_launch_refuses_while_a_run_is_active_naming_it(demo, registry):
    active = registry.create(tiny(demo).to_dict(), "tester")  # queued, owned by this (live) process
    with pytest.raises(RunBusyError, match=f"run {active.id} is queued; cancel it or wait"):
        launch_run(tiny(demo), ANN, registry)
    assert [r.id for r in registry.list()] == [active.id]


def test_a_process_that_cannot_start_marks_the_run_failed(demo, registry, monkeypatch):
    registry.create(tiny(demo).to_dict(), "tester")  # active: allow_concurrent must get past it
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    cfg = TrainConfig.from_recipe("seed", {"data": str(demo), "heads": ["gender", "usage"], "lr": 1e-4, "devices": 2})
    with pytest.raises(LaunchError, match="could not start the training process for run .*nonexistent"):
        launch_run(cfg, ANN, registry, allow_concurrent=True)
    newest = registry.list()[0]
    assert newest.status == "failed" and "could not start the training process" in newest.error
    # The child would have run exactly this config.
    assert TrainConfig.from_file(RunFolder(newest.folder).launch_config) == cfg


# --- status, metrics, estimate


def test_run_progress_follows_progress_json(demo, registry):
    record = registry.create(tiny(demo).to_dict(), "tester")
    folder = Path(record.folder)
    folder.mkdir(parents=True)
    progress = RunFolder(folder).progress
    assert run_progress(record).text == "Starting the training process…"

    write_progress(progress, stage="cache", done=30, total=120)
    status = run_progress(record)
    assert (status.stage, status.cache_fraction, status.fraction) == ("cache", 0.25, 0.0)
    assert status.text == "Building the image cache: 30 of 120 photos"

    write_progress(progress, stage="train", epoch=2, epochs=4, step=5, steps_per_epoch=10,
                   global_step=15, train_loss=1.25)
    status = run_progress(record)
    assert status.fraction == pytest.approx((1 + 5 / 10) / 4)
    assert status.cache_fraction is None
    assert status.text == "Training: epoch 2 of 4, step 5 of 10 · last epoch's train loss 1.250"

    registry.mark_failed(record.id, "ValueError: bad things\n\nTraceback ...")
    assert run_progress(registry.get(record.id)).text == "Failed: ValueError: bad things"


def test_cancel_refuses_an_ended_run(demo, registry):
    record = registry.create(tiny(demo).to_dict(), "tester")
    registry.mark_failed(record.id, "boom")
    with pytest.raises(ValueError, match=f"run {record.id} is failed; only a queued or running run can be cancelled"):
        cancel_run(record.id, ANN, registry)


def test_log_tail_shows_what_a_terminal_shows(tmp_path):
    log = tmp_path / "run.log"
    assert log_tail(log) == ""
    log.write_bytes(b"start\nEpoch 0: 10%\rEpoch 0: 50%\rEpoch 0: 100%\n\x1b[AValidation 4/4\n\nerror: boom\n")
    assert log_tail(log) == "start\nEpoch 0: 100%\nValidation 4/4\nerror: boom"
    assert log_tail(log, lines=2) == "Validation 4/4\nerror: boom"


SPARSE_CSV = """epoch,lr-AdamW,step,train/loss,val/gender/acc,val/gender/macro_f1,val/loss,val/mean_macro_f1
,0.001,4,,,,,
0,,4,,0.5,0.4,2.5,0.4
0,,4,3.0,,,,
,0.0005,9,,,,,
1,,9,,0.75,0.6,2.0,0.6
1,,9,2.2,,,,
2,,14,,0.8
"""


def test_metrics_frame_collapses_sparse_rows_to_one_per_epoch(tmp_path):
    (tmp_path / "metrics.csv").write_text(SPARSE_CSV + "2,,14,1.9,0.8,0.7,1.5,0.7,9.9,9.9\n")  # a bad last line
    expected = pd.DataFrame({
        "epoch": [1, 2, 3], "step": [4, 9, 14], "train/loss": [3.0, 2.2, None], "val/loss": [2.5, 2.0, None],
        "val/mean_macro_f1": [0.4, 0.6, None], "val/gender/acc": [0.5, 0.75, 0.8],
        "val/gender/macro_f1": [0.4, 0.6, None],
    })
    pd.testing.assert_frame_equal(metrics_frame(tmp_path), expected)


def test_metrics_frame_joins_a_resumed_runs_attempts_the_latest_winning(tmp_path):
    (tmp_path / "metrics.until-20261127-100000.csv").write_text(SPARSE_CSV)  # epochs 0, 1 and part of 2
    (tmp_path / "metrics.csv").write_text("epoch,step,train/loss,val/loss\n2,14,1.5,1.25\n3,19,1.0,1.0\n")
    frame = metrics_frame(tmp_path)
    assert frame["epoch"].tolist() == [1, 2, 3, 4]
    assert frame["train/loss"].tolist() == [3.0, 2.2, 1.5, 1.0]
    assert frame["val/loss"].tolist() == [2.5, 2.0, 1.25, 1.0]
    assert frame["val/gender/acc"].tolist()[:3] == [0.5, 0.75, 0.8]  # the resumed attempt did not log it


def test_metrics_frame_of_a_missing_or_empty_file_is_empty(tmp_path):
    assert metrics_frame(tmp_path).empty and list(metrics_frame(tmp_path).columns) == ["epoch", "step"]
    (tmp_path / "metrics.csv").write_text("")
    assert metrics_frame(tmp_path).empty
    (tmp_path / "metrics.csv").write_text("epoch,lr-AdamW,step\n,0.001,4\n")
    assert metrics_frame(tmp_path).empty and list(metrics_frame(tmp_path).columns) == ["epoch", "step"]


def test_runs_frame_lists_runs_as_given(demo, registry):
    first = registry.create(tiny(demo).to_dict(), "tester")
    second = registry.create(tiny(demo, backbone="resnet50").to_dict(), "tester")
    frame = runs_frame(registry.list())
    assert frame["id"].tolist() == [second.id, first.id]
    assert frame["backbone"].tolist() == ["resnet50", "tf_efficientnet_lite0"]
    assert frame["status"].tolist() == ["queued", "queued"]
    assert runs_frame([]).empty


TWO_CORES = Machine(cpu_threads=2, memory_gib=24)


def test_estimate_follows_its_documented_formula():
    hint = estimate(TrainConfig(), 800, 200, machine=TWO_CORES)
    # batch 32
    assert (hint["train_images"], hint["val_images"], hint["steps_per_epoch"], hint["device"]) == (800, 200, 25, "cpu")
    assert hint["seconds_per_epoch"] == pytest.approx((800 * 0.074 + 200 * 0.026))  # lite0, 224 px, 2 cores
    assert hint["seconds_total"] == pytest.approx(10 * hint["seconds_per_epoch"])
    assert hint["memory_gib"] == pytest.approx((3.37e6 * 16 + 32 * 79.1 * 2**20) / 2**30)
    assert hint["assumption"].startswith("no run measured on this machine yet")

    bigger = estimate(TrainConfig(image_size=448, batch_size=10), 80, 20, machine=TWO_CORES)
    assert (bigger["steps_per_epoch"] == 8
            and bigger["seconds_per_epoch"] == pytest.approx(4 * (80 * 0.074 + 20 * 0.026)))

    b3 = estimate(TrainConfig(backbone="efficientnet_b3", freeze_backbone=True, precision="bf16-mixed"), 800, 200,
                  machine=TWO_CORES)
    assert b3["seconds_per_epoch"] == pytest.approx(1000 * 0.026 * 172.9 / 79.1)  # frozen: every image at eval cost
    assert b3["memory_gib"] == pytest.approx(10.70e6 * 16 / 2**30)  # no activations kept

    half = estimate(TrainConfig(precision="bf16-mixed"), 800, 200, machine=TWO_CORES)
    assert half["memory_gib"] == pytest.approx((3.37e6 * 16 + 16 * 79.1 * 2**20) / 2**30)  # bf16: half the activations

    unknown = estimate(TrainConfig(backbone="resnet18"), 800, 200, machine=TWO_CORES)
    assert unknown["seconds_per_epoch"] == hint["seconds_per_epoch"]
    assert "resnet18 not measured" in unknown["assumption"]
    assert set(BACKBONE_COSTS) >= {"tf_efficientnet_lite0", "efficientnet_b3"}
    with pytest.raises(ValueError, match="image counts must be >= 0, got -1 and 0"):
        estimate(TrainConfig(), -1, 0, machine=TWO_CORES)


def test_estimate_scales_with_cpu_threads():
    hint = estimate(TrainConfig(), 800, 200, machine=Machine(cpu_threads=8, memory_gib=24))
    assert hint["seconds_per_epoch"] == pytest.approx((800 * 0.074 + 200 * 0.026) / 4)
    assert "8 threads" in hint["assumption"]


def test_estimate_uses_the_rate_a_run_measured_on_this_machine(demo, registry):
    """The hint was 5-9 times too optimistic on a busy 2-core machine: a finished run's own rate wins."""
    cpu = registry.create(tiny(demo, image_size=160).to_dict(), "tester")
    registry.mark_running(cpu.id, os.getpid(), device="cpu (2 threads)", weights="none")
    registry.mark_finished(cpu.id, 0.5, "val/mean_macro_f1", {}, {"train_images_per_s": 8.0})
    frozen = registry.create(tiny(demo, freeze_backbone=True).to_dict(), "tester")  # not comparable: skipped
    registry.mark_running(frozen.id, os.getpid(), device="cpu (2 threads)", weights="none")
    registry.mark_finished(frozen.id, 0.5, "val/mean_macro_f1", {}, {"train_images_per_s": 80.0})
    runs = registry.list()
    hint = estimate(TrainConfig(image_size=320), 800, 200, runs, machine=TWO_CORES)
    assert hint["seconds_per_epoch"] == pytest.approx(800 / (8.0 * (160 / 320) ** 2))  # 4x the pixels: 4x slower
    assert hint["assumption"].startswith(f"measured: run {cpu.id} trained at 8.0 images/s on this machine")
    frozen_hint = estimate(TrainConfig(freeze_backbone=True), 800, 200, runs, machine=TWO_CORES)
    assert frozen_hint["seconds_per_epoch"] == pytest.approx(800 / (80.0 * (64 / 224) ** 2))


def test_split_sizes_are_the_runs_own_counts():
    ids = np.arange(1000)
    split = np.where(ids % 5 == 0, "val", "train")
    assert split_sizes(TrainConfig(), ids, split) == (800, 200)
    assert split_sizes(TrainConfig(max_samples=100), ids, split) == (80, 20)


def test_unlikely_settings_are_doubted_before_start(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    fine = TrainConfig()
    assert doubts(fine, estimate(fine, 800, 200, machine=TWO_CORES), TWO_CORES) == []
    absurd = TrainConfig(devices=64, batch_size=4096, lr=50.0, num_workers=16)
    said = doubts(absurd, estimate(absurd, 800, 200, machine=TWO_CORES), TWO_CORES)
    assert said[0] == "devices=64, but this machine has 2 CPU cores."
    assert said[1] == "16 loader workers, but this machine has 2 CPU cores."
    assert said[2].startswith("About 316.5 GiB of memory per device is needed") and "lower the batch size" in said[2]
    assert said[3] == "lr=50 is far above AdamW's usual 1e-4 to 1e-2: training will likely diverge."
    assert said[4] == "A batch of 4096 is larger than the 800 training images: one step an epoch."


def test_format_duration_picks_the_unit():
    assert [format_duration(s) for s in (0.4, 89, 90, 3000, 5400, 9000)] == [
        "0 s", "89 s", "2 min", "50 min", "1.5 h", "2.5 h"]
