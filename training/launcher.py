"""Start, watch and cancel training runs from the dashboard, and the numbers its Train page shows.

A launched run is `python -m training fit --run-id <id> --config <folder>/launch_config.json`
(a resumed one `fit --resume <id> --run-id <id>`) in its own process session: it outlives page
reloads, closed browsers and dashboard restarts, and cancelling it leaves nothing of its process
group behind. The registry holds the dashboard's pid while the run is queued, so the child's pid
is kept in `<folder>/launch.json`; a thread of the launching process waits for the child (reaping
it) and marks the run failed if it ended without reporting (e.g. it died before `train()` could
record anything).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from core import workspace
from core.data import HEADS
from core.database import DB_URL_ENV
from training.checkpoints import evaluation_name
from training.config import TrainConfig, resolve_precision
from training.registry import ACTIVE, RunRecord, RunRegistry, is_alive, process_start
from training.train import EARLIER_METRICS, read_progress, run_paths

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCH_CONFIG_FILE = "launch_config.json"  # the exact TrainConfig the child runs
LAUNCH_FILE = "launch.json"  # the child's pid and process start time
RESUMABLE = ("failed", "cancelled")  # statuses a run can be resumed from
CANCEL_TIMEOUT_S = 30.0  # SIGTERM lets Lightning finish the batch and save last.ckpt; then SIGKILL
LOG_TAIL_LINES = 20
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # tqdm moves the cursor between its bars
_PROC = Path("/proc")


class LaunchError(RuntimeError):
    """A run could not be launched; the message says why."""


class RunBusyError(LaunchError):
    """Another run is queued or running (one run at a time, unless allow_concurrent)."""


def launch_run(cfg: TrainConfig, registry: RunRegistry | None = None, allow_concurrent: bool = False) -> RunRecord:
    """Register `cfg` as a queued run and start its training process; returns the queued record.

    Raises RunBusyError naming the active run when one is queued or running (unless
    allow_concurrent), LaunchError (after marking the run failed) when the process cannot start.
    """
    registry = registry or RunRegistry()
    _refuse_when_busy(registry, allow_concurrent)
    record = registry.create(cfg.to_dict())
    folder = Path(record.folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / LAUNCH_CONFIG_FILE
    config_file.write_text(json.dumps(cfg.to_dict(), indent=2))
    return _start_training_process(record, ["--run-id", record.id, "--config", str(config_file)], registry)


def resume_run(run_id: str, registry: RunRegistry | None = None, allow_concurrent: bool = False) -> RunRecord:
    """Queue a failed or cancelled run again and continue it in a new training process, from its
    last checkpoint (from the first epoch when it has none), with its own config and id.

    Raises ValueError when the run is not failed or cancelled, RunBusyError and LaunchError as
    launch_run does.
    """
    registry = registry or RunRegistry()
    record = registry.get(run_id)
    if record.status not in RESUMABLE:
        raise ValueError(f"run {run_id} is {record.status}; only a failed or cancelled run can be resumed")
    _refuse_when_busy(registry, allow_concurrent)
    record = registry.reopen(run_id)  # queued at once, so the page shows it and a second click is refused
    return _start_training_process(record, ["--resume", run_id, "--run-id", run_id], registry)


def _refuse_when_busy(registry: RunRegistry, allow_concurrent: bool) -> None:
    active = registry.running()
    if active is not None and not allow_concurrent:
        raise RunBusyError(f"run {active.id} is {active.status}; cancel it or wait for it to end before starting another")


def _start_training_process(record: RunRecord, fit_arguments: list[str], registry: RunRegistry) -> RunRecord:
    """Start `python -m training fit <fit_arguments>` for the queued `record` in its own process
    session, appending to its run.log; keep its pid in launch.json and watch it."""
    folder = Path(record.folder)
    command = [sys.executable, "-m", "training", "fit", *fit_arguments]
    env = {
        **os.environ, "PYTHONUNBUFFERED": "1",
        # The child must write to this registry and workspace, whatever its defaults would resolve to.
        DB_URL_ENV: registry.engine.url.render_as_string(hide_password=False),
        workspace.HOME_ENV: str(workspace.workspace_dir()),
    }
    try:
        with run_paths(folder)["log"].open("ab") as log:
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as error:
        registry.mark_failed(record.id, f"could not start the training process: {error}")
        raise LaunchError(f"could not start the training process for run {record.id}: {error}") from error
    (folder / LAUNCH_FILE).write_text(json.dumps({"pid": process.pid, "pid_start": process_start(process.pid), "command": command}))
    threading.Thread(target=_watch, args=(process, record.id, registry), name=f"watch-{record.id}", daemon=True).start()
    return record


def _watch(process: subprocess.Popen, run_id: str, registry: RunRegistry) -> None:
    """Wait for the child; if it ended without reporting an end, mark the run failed with its exit and log."""
    code = process.wait()
    record = registry.get(run_id)
    if record.status in ACTIVE:
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        tail = log_tail(run_paths(Path(record.folder))["log"])
        registry.mark_failed(run_id, f"the training process {how} before reporting an end\n\n{tail}")


@dataclasses.dataclass(frozen=True)
class EvaluationJob:
    """A background `python -m training evaluate RUN --data DIR` (files next to the run's evaluations)."""

    name: str  # the evaluation folder's name (checkpoints.evaluation_name)
    running: bool  # its process is alive
    started: float | None  # time.time() at launch; None when never launched from here
    log: Path

    def finished_since_launch(self, run_folder: str | Path) -> bool:
        """Whether its report was written after this launch (or it was never launched from here)."""
        report = Path(run_folder) / self.name / "report.json"
        return report.is_file() and (self.started is None or report.stat().st_mtime >= self.started)


def launch_evaluation(record: RunRecord, data: str | Path) -> EvaluationJob:
    """Start evaluating the run's best checkpoint on every row of catalogue `data`, in its own process
    session (it outlives the page), unless that evaluation is already running; returns the job."""
    job = evaluation_job(record, data)
    if job.running:
        return job
    folder = Path(record.folder)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", workspace.HOME_ENV: str(workspace.workspace_dir())}
    command = [sys.executable, "-m", "training", "evaluate", record.id, "--data", str(data)]
    with job.log.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    started = time.time()
    (folder / f"{evaluation_name(data)}.launch.json").write_text(
        json.dumps({"pid": process.pid, "pid_start": process_start(process.pid), "started": started}))
    threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()  # no zombie left
    return EvaluationJob(job.name, True, started, job.log)


def evaluation_job(record: RunRecord, data: str | Path) -> EvaluationJob:
    """The background evaluation of the run on `data`: whether it runs, when it started, its log."""
    name, folder = evaluation_name(data), Path(record.folder)
    try:
        launch = json.loads((folder / f"{name}.launch.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return EvaluationJob(name, False, None, folder / f"{name}.log")
    return EvaluationJob(name, is_alive(launch["pid"], launch["pid_start"]), launch["started"], folder / f"{name}.log")


def launched_pid(folder: str | Path) -> int | None:
    """The pid of the training process the launcher started for the run in `folder`, while that
    same process is alive (not a later one reusing its pid); None otherwise."""
    try:
        launch = json.loads((Path(folder) / LAUNCH_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return launch["pid"] if is_alive(launch["pid"], launch["pid_start"]) else None


def cancel_run(run_id: str, registry: RunRegistry | None = None, timeout: float = CANCEL_TIMEOUT_S) -> RunRecord:
    """Cancel a queued or running run of this host; returns its (cancelled) record.

    Marks it cancelled first, so the status is right however the process ends, then sends
    SIGTERM to the training process (inside fit, Lightning stops at the next batch, forwards it
    to any DDP ranks and train() saves last.ckpt) and, after `timeout` seconds, SIGKILL to
    whatever of its process group is left. SIGTERM goes to the leader only: the DataLoader
    workers share the group, and killing them first turns the clean stop into a crash without a
    checkpoint. A run started outside the launcher (the CLI) gets both signals on its pid alone.
    ValueError when the run is not active or runs on another host.
    """
    registry = registry or RunRegistry()
    record = registry.get(run_id)
    if record.status not in ACTIVE:
        raise ValueError(f"run {run_id} is {record.status}; only a queued or running run can be cancelled")
    if record.host != socket.gethostname():
        raise ValueError(f"run {run_id} runs on host {record.host}; cancel it there")
    registry.mark_cancelled(run_id)
    pid = launched_pid(record.folder)
    if pid is not None:  # the launcher's child leads its own process group (start_new_session)
        _end(pid, lambda: os.killpg(pid, signal.SIGKILL), lambda: _group_alive(pid), timeout)
    elif record.status == "running" and record.pid != os.getpid():
        _end(record.pid, lambda: os.kill(record.pid, signal.SIGKILL),
             lambda: is_alive(record.pid, record.pid_start), timeout)
    return registry.get(run_id)


def _end(pid: int, kill: Callable[[], None], alive: Callable[[], bool], timeout: float) -> None:
    """SIGTERM to `pid`; when alive() still holds after `timeout` s, kill() and wait up to 5 s more."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:  # already gone; what it left in its group still gets SIGKILL
        pass
    if _wait_until_dead(alive, timeout):
        return
    try:
        kill()
    except ProcessLookupError:
        return
    _wait_until_dead(alive, 5.0)


def _wait_until_dead(alive: Callable[[], bool], seconds: float) -> bool:
    """Poll alive() until it is False (True) or `seconds` pass (False)."""
    deadline = time.monotonic() + seconds
    while alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is in process group `pgid` (from /proc)."""
    for stat in _PROC.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # ended while we looked
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):  # state, ppid, pgrp (proc(5))
            return True
    return False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log as a terminal shows them (a progress bar's carriage-return
    updates collapse to their latest); "" when there is no log."""
    try:
        with path.open("rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 64 * 1024))
            text = file.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    text = ANSI_ESCAPE.sub("", text)
    shown = [line.rstrip("\r").rpartition("\r")[2].rstrip() for line in text.split("\n")]
    return "\n".join([line for line in shown if line][-lines:])


@dataclasses.dataclass(frozen=True)
class RunStatus:
    """What the Train page shows about a run right now."""

    status: str  # the registry's: queued, running, finished, failed, cancelled
    stage: str | None  # progress.json's: load, cache, train, validate, evaluate, finished, cancelled; None before
    text: str  # one line saying what the run is doing or how it ended
    fraction: float  # share of the planned training done, 0..1, from epochs and steps (1 once finished)
    epoch: int | None  # 1-based, of `epochs`
    epochs: int | None
    step: int | None  # 1-based, of `steps_per_epoch`
    steps_per_epoch: int | None
    cache_done: int | None  # photos put in the image cache so far, of `cache_total` (stage "cache")
    cache_total: int | None
    train_loss: float | None
    log_tail: str  # the end of run.log

    @property
    def cache_fraction(self) -> float | None:
        """Share of the image cache built, while the run builds it; else None."""
        return self.cache_done / self.cache_total if self.stage == "cache" and self.cache_total else None


def run_status(record: RunRecord) -> RunStatus:
    """The run's registry status with its progress.json and the end of its run.log."""
    folder = Path(record.folder)
    progress = read_progress(folder) or {}
    stage = progress.get("stage")
    epoch, epochs = progress.get("epoch"), progress.get("epochs")
    step, steps = progress.get("step"), progress.get("steps_per_epoch")
    if record.status == "finished" or stage in ("evaluate", "finished"):
        fraction = 1.0
    elif epoch and epochs and steps:
        fraction = min(1.0, max(0.0, (epoch - 1 + (step or 0) / steps) / epochs))
    else:
        fraction = 0.0
    return RunStatus(
        status=record.status, stage=stage, text=_status_text(record, progress), fraction=fraction,
        epoch=epoch, epochs=epochs, step=step, steps_per_epoch=steps,
        cache_done=progress.get("done"), cache_total=progress.get("total"), train_loss=progress.get("train_loss"),
        log_tail=log_tail(run_paths(folder)["log"]),
    )


def _status_text(record: RunRecord, progress: dict[str, Any]) -> str:
    if record.status == "finished":  # wall time from registration, process start-up included
        took = datetime.fromisoformat(record.finished) - datetime.fromisoformat(record.created)
        return f"Finished in {format_duration(took.total_seconds())}"
    if record.status == "failed":
        return "Failed: " + (record.error or "no error recorded").split("\n")[0]
    if record.status == "cancelled":
        return "Cancelled"
    stage = progress.get("stage")
    if stage == "cache":
        return f"Building the image cache: {progress['done']:,} of {progress['total']:,} photos"
    if stage == "train":
        loss = progress.get("train_loss")
        return (f"Training: epoch {progress['epoch']} of {progress['epochs']}, step {progress['step']} of "
                f"{progress['steps_per_epoch']}" + ("" if loss is None else f" · last epoch's train loss {loss:.3f}"))
    if stage == "validate":
        return f"Validating after epoch {progress['epoch']} of {progress['epochs']}"
    return {
        "load": "Loading the catalogue and the backbone…",
        "evaluate": "Evaluating the best checkpoint on the validation split…",
        "finished": "Finishing…",
    }.get(stage, "Starting the training process…")


def format_duration(seconds: float) -> str:
    """Seconds as a person reads them: "45 s", "12 min", "3.5 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def metrics_frame(folder: str | Path) -> pd.DataFrame:
    """The run's metrics.csv (Lightning's CSVLogger: sparse rows) as one row per epoch.

    Columns: `epoch` (1-based, as the progress text counts), `step` (the last of the epoch), then
    every logged metric, each epoch's last value: train/loss, val/loss, val/mean_macro_f1,
    val/<head>/acc, val/<head>/macro_f1, train/<head>/...; learning-rate columns are dropped.
    A resumed run's earlier attempts (metrics.until-*.csv) come first; where attempts overlap,
    the latest attempt's epoch wins. A missing or empty file gives an empty frame with `epoch`
    and `step`; a half-written last line is skipped or read as missing values.
    """
    empty = pd.DataFrame({"epoch": pd.Series(dtype=int), "step": pd.Series(dtype=int)})
    attempts = []
    for path in [*sorted(Path(folder).glob(EARLIER_METRICS)), run_paths(Path(folder))["metrics"]]:
        try:
            attempt = pd.read_csv(path, on_bad_lines="skip")
        except (FileNotFoundError, pd.errors.EmptyDataError):
            continue
        if {"epoch", "step"} <= set(attempt.columns):
            attempts.append(attempt)
    if not attempts:
        return empty
    raw = pd.concat(attempts, ignore_index=True).apply(pd.to_numeric, errors="coerce").dropna(subset=["epoch"])
    raw = raw.drop(columns=[column for column in raw.columns if column.startswith("lr-")])
    if raw.empty:
        return empty
    frame = raw.groupby("epoch", sort=True).last().reset_index()  # last() takes each column's last non-missing
    frame["epoch"] = frame["epoch"].astype(int) + 1
    frame["step"] = frame["step"].astype(int)
    first = ["epoch", "step", "train/loss", "val/loss", "val/mean_macro_f1"]
    by_head = [f"{split}/{head}/{metric}" for split in ("val", "train") for head in HEADS for metric in ("acc", "macro_f1")]
    order = [column for column in first + by_head if column in frame.columns]
    return frame[order + sorted(set(frame.columns) - set(order))]


def summary_frame(record: RunRecord) -> pd.DataFrame:
    """A finished run's evaluation per head (rows, in HEADS order): accuracy, macro_f1,
    weighted_f1, support, excluded; empty before the run is evaluated."""
    heads = (record.metrics or {}).get("heads", {})
    rows = {head: numbers for head, numbers in heads.items() if isinstance(numbers, dict)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("head")


def runs_frame(records: list[RunRecord]) -> pd.DataFrame:
    """One row per run, as given: id, status, created (UTC, to the second), backbone, image size,
    epochs, max samples, device, best metric and its name."""
    return pd.DataFrame(
        [{
            "id": record.id, "status": record.status, "created": record.created[:19].replace("T", " "),
            "backbone": record.config.get("backbone"), "image_size": record.config.get("image_size"),
            "epochs": record.config.get("epochs"), "max_samples": record.config.get("max_samples"),
            "device": record.device, "best": record.best_metric, "best_metric": record.best_metric_name,
        } for record in records],
        columns=["id", "status", "created", "backbone", "image_size", "epochs", "max_samples", "device", "best", "best_metric"],
    )


# --- the time and memory hint of the Train form. Rough by design: it says which order of
# magnitude to expect (seconds, minutes, hours) and whether a batch fits, not a forecast.
# tf_efficientnet_lite0 at 224 px on 2 CPU cores (DESIGN.md, "Pretrained weights without a network").
CPU_TRAIN_MS, CPU_EVAL_MS, CPU_CORES_MEASURED = 74.0, 26.0, 2
# efficientnet_b0 (lite0's size) at 224 px, bf16 + channels_last on an H200: 4,895 img/s training,
# 17,143 inference (DESIGN.md). A smaller GPU, or fp32, is several times slower.
GPU_TRAIN_MS, GPU_EVAL_MS = 1000 / 4895, 1000 / 17143
# (parameters in millions, MiB of tensors saved for backward per 224-px fp32 image), measured on
# the timm models with torch.autograd.graph.saved_tensors_hooks. The activation size relative to
# lite0 also scales the time: on these convnets it tracks compute about as well as FLOPs do
# (efficientnet_b3: 2.2x by activations, 2.5x measured on CPU).
BACKBONE_COSTS = {
    "tf_efficientnet_lite0": (3.37, 79.1), "tf_efficientnet_lite1": (4.14, 102.1),
    "tf_efficientnet_lite2": (4.81, 107.5), "tf_efficientnet_lite3": (6.92, 140.3),
    "tf_efficientnet_lite4": (11.73, 187.1), "efficientnet_b0": (4.01, 88.0), "efficientnet_b3": (10.70, 172.9),
    "mobilenetv3_large_100": (4.20, 54.9), "resnet50": (23.51, 146.8), "convnext_tiny": (27.82, 130.6),
}
REFERENCE_BACKBONE = "tf_efficientnet_lite0"
OPTIMISER_BYTES_PER_PARAM = 16  # fp32 weights, gradients and AdamW's two moments


def estimate(cfg: TrainConfig, rows: int) -> dict[str, Any]:
    """A rough time and memory hint for training `cfg` on a catalogue of `rows` rows.

    time per epoch = (train images x train ms + val images x eval ms) x (image_size / 224)^2
                     x activation size relative to lite0 [/ CPU cores over 2, or / GPUs]
    A frozen backbone trains at the eval cost (no backward through it) and keeps no activations.
    memory per device = parameters x 16 bytes + batch x activations per image x (image_size / 224)^2,
                        halved for 16-bit precisions.
    Returns train_images, val_images, steps_per_epoch, device ("cpu" | "gpu"), seconds_per_epoch,
    seconds_total (all `epochs`; early stopping may end sooner), memory_gib, assumption (text).
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    used = rows if cfg.max_samples is None else min(rows, cfg.max_samples)
    val_images = round(used * cfg.val_fraction)
    train_images = used - val_images
    known = cfg.backbone in BACKBONE_COSTS
    params_m, activation_mib = BACKBONE_COSTS[cfg.backbone if known else REFERENCE_BACKBONE]
    pixels = (cfg.image_size / 224) ** 2
    scale = pixels * activation_mib / BACKBONE_COSTS[REFERENCE_BACKBONE][1]
    on_gpu = cfg.accelerator != "cpu" and torch.cuda.is_available()
    if on_gpu:
        train_ms, eval_ms = GPU_TRAIN_MS, GPU_EVAL_MS
        parallel = cfg.devices if isinstance(cfg.devices, int) else torch.cuda.device_count()
        assumption = "GPU speed of an H200 in bf16 (DESIGN.md); older GPUs or fp32 are several times slower"
    else:
        train_ms, eval_ms = CPU_TRAIN_MS, CPU_EVAL_MS
        parallel = torch.get_num_threads() / CPU_CORES_MEASURED
        assumption = f"CPU speed measured on {CPU_CORES_MEASURED} cores"
        if torch.get_num_threads() != CPU_CORES_MEASURED:
            assumption += f", scaled to {torch.get_num_threads()} threads (optimistic)"
    if cfg.freeze_backbone:
        train_ms = eval_ms
    if not known:
        assumption += f"; {cfg.backbone} not measured: costed like {REFERENCE_BACKBONE}"
    assumption += "; start-up (imports, weights, building the image cache once) not counted"
    seconds_per_epoch = (train_images * train_ms + val_images * eval_ms) * scale / 1000 / parallel
    activations = 0.0 if cfg.freeze_backbone else cfg.batch_size * activation_mib * pixels * 2**20
    if "16" in resolve_precision(cfg):
        activations /= 2
    return {
        "train_images": train_images, "val_images": val_images,
        "steps_per_epoch": math.ceil(train_images / cfg.batch_size), "device": "gpu" if on_gpu else "cpu",
        "seconds_per_epoch": seconds_per_epoch, "seconds_total": seconds_per_epoch * cfg.epochs,
        "memory_gib": (params_m * 1e6 * OPTIMISER_BYTES_PER_PARAM + activations) / 2**30,
        "assumption": assumption,
    }
