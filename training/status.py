"""What the Train page shows about runs: a run's live status from its progress.json and run.log,
its metrics per epoch, the per-head summary of a finished run and its test-part score, and the table
of runs."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from core.data import HEADS
from core.evaluation.files import summary_table
from training.processes import log_tail
from training.registry import RunRecord, RunState
from training.rows import FixedTestState, describe_test_part
from training.run_folder import RunFolder, Stage


@dataclasses.dataclass(frozen=True)
class RunProgress:
    """What the Train page shows about a run right now."""

    status: RunState
    stage: Stage | None  # progress.json's; None before the run wrote one
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
        return self.cache_done / self.cache_total if self.stage == Stage.CACHE and self.cache_total else None


def run_progress(record: RunRecord) -> RunProgress:
    """The run's registry status with its progress.json and the end of its run.log."""
    run = RunFolder(record.folder)
    progress = run.read_progress() or {}
    stage = Stage(progress["stage"]) if "stage" in progress else None
    epoch, epochs = progress.get("epoch"), progress.get("epochs")
    step, steps = progress.get("step"), progress.get("steps_per_epoch")
    if record.status == RunState.FINISHED or stage in (Stage.EVALUATE, Stage.FINISHED):
        fraction = 1.0
    elif epoch and epochs and steps:
        fraction = min(1.0, max(0.0, (epoch - 1 + (step or 0) / steps) / epochs))
    else:
        fraction = 0.0
    return RunProgress(
        status=record.status, stage=stage, text=_status_text(record, stage, progress), fraction=fraction,
        epoch=epoch, epochs=epochs, step=step, steps_per_epoch=steps,
        cache_done=progress.get("done"), cache_total=progress.get("total"), train_loss=progress.get("train_loss"),
        log_tail=log_tail(run.log),
    )


def _status_text(record: RunRecord, stage: Stage | None, progress: dict[str, Any]) -> str:
    if record.status == RunState.FINISHED:  # wall time from registration, process start-up included
        took = datetime.fromisoformat(record.finished) - datetime.fromisoformat(record.created)
        return f"Finished in {format_duration(took.total_seconds())}"
    if record.status == RunState.FAILED:
        return "Failed: " + (record.error or "no error recorded").split("\n")[0]
    if record.status == RunState.CANCELLED:
        return "Cancelled"
    if stage == Stage.CACHE:
        return f"Building the image cache: {progress['done']:,} of {progress['total']:,} photos"
    if stage == Stage.TRAIN:
        loss = progress.get("train_loss")
        return (f"Training: epoch {progress['epoch']} of {progress['epochs']}, step {progress['step']} of "
                f"{progress['steps_per_epoch']}" + ("" if loss is None else f" · last epoch's train loss {loss:.3f}"))
    if stage == Stage.VALIDATE:
        return f"Validating after epoch {progress['epoch']} of {progress['epochs']}"
    return {
        Stage.LOAD: "Loading the catalogue and the backbone…",
        Stage.EVALUATE: "Evaluating the best checkpoint on the validation split…",
        Stage.FINISHED: "Finishing…",
    }.get(stage, "Starting the training process…")


def plural(count: int, word: str) -> str:
    """"1 epoch", "3 epochs"."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


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
    run = RunFolder(folder)
    for path in [*run.earlier_metrics(), run.metrics]:
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
    by_head = [f"{split}/{head}/{metric}" for split in ("val", "train") for head in HEADS
               for metric in ("acc", "macro_f1")]
    order = [column for column in first + by_head if column in frame.columns]
    return frame[order + sorted(set(frame.columns) - set(order))]


def summary_frame(record: RunRecord) -> pd.DataFrame:
    """A finished run's evaluation per head (`core.evaluation.files.head_summary`, rows in the run's
    head order); empty before the run is evaluated."""
    heads = (record.metrics or {}).get("heads", {})
    # Records written before 2026-11-29 also keep "mean_macro_f1" (a number) among the heads.
    return summary_table({head: numbers for head, numbers in heads.items() if isinstance(numbers, dict)})


def summary_of_test_part(record: RunRecord) -> str | None:
    """A finished run's mean macro-F1 on its dataset's fixed test part, with what the part is, or why it
    has none (training.rows); None for a run without that record (unfinished, or from before test parts)."""
    metrics = record.metrics or {}
    if "test_part" not in metrics:
        return None
    state = FixedTestState(metrics["test_part"])
    said = describe_test_part(state, metrics["test_rows"])
    if state == FixedTestState.SCORED:
        return f"mean macro-F1 {metrics['test_mean_macro_f1']:.3f} on {said}"
    return f"no test part: {said}"


def runs_frame(records: list[RunRecord]) -> pd.DataFrame:
    """One row per run, as given: id, status, created (UTC, to the second), who launched it,
    backbone, image size, epochs, max samples, device, best metric and its name."""
    return pd.DataFrame(
        [{
            "id": record.id, "status": record.status, "created": record.created[:19].replace("T", " "),
            "launched_by": record.launched_by,
            "backbone": record.config.get("backbone"), "image_size": record.config.get("image_size"),
            "epochs": record.config.get("epochs"), "max_samples": record.config.get("max_samples"),
            "device": record.device, "best": record.best_metric, "best_metric": record.best_metric_name,
        } for record in records],
        columns=["id", "status", "created", "launched_by", "backbone", "image_size", "epochs", "max_samples", "device",
                 "best", "best_metric"],
    )

