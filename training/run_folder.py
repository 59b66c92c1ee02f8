"""The layout of a run folder; everyone who reads or writes one asks `RunFolder`.

A run folder (`<workspace>/runs/<run_id>/`) holds:
    config.json          the TrainConfig (also inside every checkpoint, with the label schema)
    launch_config.json   the exact TrainConfig the dashboard launched the run with
    split.parquet        the rows the run uses, decided once when it starts (training.rows.run_split):
                         id, part ("train"/"val"); the dataset's fixed test part and rows over
                         cfg.max_samples are in neither
    schema.json          the label schema fitted on the run's training rows
    taxonomy.json        the taxonomy learned from them (core.trust.taxonomy; inside every checkpoint too)
    calibration.json     temperatures, threshold counts and the typicality gate fitted after training
                         on the validation split (core.trust.layer; added to the checkpoints then),
                         with the gate's reference features in calibration.reference.npy
    corrections.json     with cfg.corrections: the label store's decisions the run trained on
    checkpoints/         epochNNN.ckpt (the best epoch by cfg.monitor), best.ckpt (a hard link to
                         it, once training ended) and last.ckpt; a file cut short (a full disk)
                         is never offered (`readable_checkpoint`)
    metrics.csv          Lightning's CSVLogger: one row per logged step/epoch
    metrics.until-<time>.csv  a resumed run's earlier attempts' metrics.csv, oldest first by name
    tensorboard/         TensorBoard events
    progress.json        where the run is now (`Stage`, epoch, step), for the Train page
    run.log              the training process's output when launched from the dashboard
    evaluation/          core.evaluation.files' files: the validation split through the best checkpoint
    evaluation.test-part/  the same for the dataset's fixed test part (training.rows: rows the run never
                         trained or validated on, the same for every run of the dataset), when it has one
    evaluation-<dataset>/  the same for every row of another catalogue (`python -m training
                         evaluate --data`), with evaluation-<dataset>.log and .launch.json while
                         it runs in the background

A cross-validation folder (training.crossval) uses the same names for what it shares: config.json,
schema.json, progress.json, evaluation/, and label_issues.parquet.

Nothing here imports torch or Lightning: the Train page reads run folders without them.
"""

from __future__ import annotations

import enum
import json
import os
import re
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd

from core.data.catalogue import same_dataset
from core.data.split import SPLITS
from core.evaluation.files import evaluated_dataset, is_complete, read_report

VALIDATION = "evaluation"  # the validation split's evaluation folder; others add -<dataset>
# The test part's: a name `evaluation_name` never gives (a catalogue folder named "test" gives evaluation-test)
TEST_PART = "evaluation.test-part"
CHECKPOINT_CHOICES = ("best", "last")
_EARLIER_METRICS = "metrics.until-*.csv"


class Stage(enum.StrEnum):
    """Where a run (or a cross-validation) is, as progress.json says."""

    LOAD = "load"
    CACHE = "cache"
    TRAIN = "train"
    VALIDATE = "validate"
    EVALUATE = "evaluate"
    RANK = "rank"  # a cross-validation ranks its label issues
    FINISHED = "finished"
    CANCELLED = "cancelled"


def evaluation_name(data: str | Path | None) -> str:
    """The evaluation folder's name: VALIDATION for the run's validation split, else
    `evaluation-<dataset folder name>` (characters other than letters, digits, `.`, `_`, `-` as `_`)."""
    if data is None:
        return VALIDATION
    return f"{VALIDATION}-{re.sub(r'[^A-Za-z0-9._-]', '_', Path(data).resolve().name)}"


def readable_checkpoint(path: Path) -> bool:
    """Whether `path` is a whole checkpoint: torch.save writes a zip archive, and a file cut short
    (a full disk, a copy interrupted) lacks the central directory at its end. Reads only that
    directory, not the weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def write_progress(path: Path, stage: Stage, **fields: Any) -> None:
    """Replace a progress.json atomically (the page may read it at any moment); the temporary file
    is this process's own, so DDP ranks reporting a stage at once never trip over each other's."""
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"stage": Stage(stage), **fields, "updated": time.time()}))
    os.replace(temporary, path)


class RunFolder:
    """The files of one run folder (module docstring), by name; nothing is created by asking."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    config = property(lambda self: self.path / "config.json")
    launch_config = property(lambda self: self.path / "launch_config.json")
    split = property(lambda self: self.path / "split.parquet")
    schema = property(lambda self: self.path / "schema.json")
    taxonomy = property(lambda self: self.path / "taxonomy.json")
    calibration = property(lambda self: self.path / "calibration.json")
    corrections = property(lambda self: self.path / "corrections.json")
    checkpoints = property(lambda self: self.path / "checkpoints")
    best = property(lambda self: self.checkpoints / "best.ckpt")
    last = property(lambda self: self.checkpoints / "last.ckpt")
    metrics = property(lambda self: self.path / "metrics.csv")
    tensorboard = property(lambda self: self.path / "tensorboard")
    progress = property(lambda self: self.path / "progress.json")
    log = property(lambda self: self.path / "run.log")
    label_issues = property(lambda self: self.path / "label_issues.parquet")  # core.evaluation.label_issues' ranking

    def earlier_metrics(self) -> list[Path]:
        """A resumed run's earlier attempts' metrics files, oldest first."""
        return sorted(self.path.glob(_EARLIER_METRICS))

    def set_metrics_aside(self) -> None:
        """Keep metrics.csv as an earlier attempt's (a resumed run: CSVLogger would overwrite it)."""
        if self.metrics.exists():
            os.replace(self.metrics, self.path / _EARLIER_METRICS.replace("*", time.strftime("%Y%m%d-%H%M%S")))

    def read_progress(self) -> dict[str, Any] | None:
        """progress.json, or None before the run wrote one."""
        try:
            return json.loads(self.progress.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_progress(self, stage: Stage, **fields: Any) -> None:
        write_progress(self.progress, stage, **fields)

    # --- the run's rows

    def keep_split(self, parts: pd.Series) -> pd.Series:
        """Keep `parts` ("train"/"val" by product id, its index) as the run's rows, unless the folder
        has a split already (decided once: DDP ranks and a resumed run find the first one); returns
        the split kept. ValueError for a part not in SPLITS."""
        unknown = sorted(set(parts.unique()) - set(SPLITS))
        if unknown:
            raise ValueError(f"a split's parts are {', '.join(SPLITS)}, got {unknown}")
        self.path.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame({"id": parts.index.to_numpy(dtype="int64"), "part": parts.to_numpy(dtype=str)})
        temporary = self.split.with_name(f".{self.split.name}.{uuid.uuid4().hex}.tmp")  # DDP ranks on several hosts
        frame.to_parquet(temporary, index=False)
        try:
            os.link(temporary, self.split)  # whole, and only where there is none yet
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not self.split.exists():
                os.replace(temporary, self.split)
        finally:
            temporary.unlink(missing_ok=True)
        return self.read_split()

    def read_split(self) -> pd.Series | None:
        """The run's rows, "train"/"val" by product id (index named "id"), as `keep_split` kept them;
        None for a run from before runs kept their split."""
        try:
            frame = pd.read_parquet(self.split)
        except FileNotFoundError:
            return None
        return pd.Series(frame["part"].to_numpy(), index=pd.Index(frame["id"].to_numpy(), name="id"), name="split")

    # --- checkpoints

    def checkpoint_files(self) -> list[Path]:
        """Every checkpoint file, by name."""
        return sorted(self.checkpoints.glob("*.ckpt"))

    def checkpoint(self, which: str = "best") -> Path:
        """The checkpoint file `which`: "best" (best.ckpt; a run cancelled before its end has none,
        then the one epochNNN.ckpt its top-1 ModelCheckpoint keeps), "last", or a file name in
        checkpoints/ (ValueError for a path). FileNotFoundError naming the readable checkpoints
        there are when it is absent, or cut short."""
        if which not in CHECKPOINT_CHOICES and (which in ("", ".", "..") or "/" in which or "\\" in which):
            raise ValueError(f"a checkpoint is {', '.join(CHECKPOINT_CHOICES)} or the name of a file in "
                             f"{self.checkpoints}, not a path: {which!r}")
        files = self.checkpoint_files()
        if which == "best":
            epochs = [path for path in files if re.fullmatch(r"epoch\d+\.ckpt", path.name)]
            chosen = self.best if self.best.exists() else epochs[0] if len(epochs) == 1 else None
        elif which == "last":
            chosen = self.last
        else:
            chosen = self.checkpoints / which
        if chosen is not None and chosen.is_file() and readable_checkpoint(chosen):
            return chosen
        names = [path.name for path in files if readable_checkpoint(path)]
        choices = f"it holds: {', '.join(names) or 'no readable checkpoint'} (choose {', '.join(CHECKPOINT_CHOICES)} " \
                  "or one of those file names)"
        if chosen is None or not chosen.is_file():
            raise FileNotFoundError(f"no {which!r} checkpoint in {self.checkpoints}; {choices}")
        raise FileNotFoundError(f"the {which!r} checkpoint {chosen} cannot be read: the file is cut short or "
                                f"damaged (a full disk, or a save interrupted); {choices}")

    def has_checkpoint(self, which: str = "best") -> bool:
        """Whether `checkpoint(which)` gives a readable file."""
        try:
            self.checkpoint(which)
        except FileNotFoundError:
            return False
        return True

    def resume_checkpoint(self) -> tuple[Path | None, list[Path]]:
        """Where a resumed run continues, and the damaged checkpoint files it passes over: last.ckpt
        when whole, else the newest whole epochNNN.ckpt (a save cut short, or a file that is no
        checkpoint, can leave last.ckpt damaged while the best epoch's is good); None when the run
        saved no checkpoint at all (it starts again from its first epoch). ValueError naming the
        damaged files when there are checkpoints but none is whole: starting again from the first
        epoch would not be the resume asked for."""
        epochs = [path for path in self.checkpoint_files() if re.fullmatch(r"epoch\d+(-v\d+)?\.ckpt", path.name)]
        present = [path for path in [self.last, *sorted(epochs, key=lambda path: path.stat().st_mtime, reverse=True)]
                   if path.is_file()]
        damaged = [path for path in present if not readable_checkpoint(path)]
        whole = [path for path in present if path not in damaged]
        if whole:
            return whole[0], damaged
        if damaged:
            what = "its last checkpoint" if damaged == [self.last] else "its checkpoints"
            raise ValueError(f"run {self.path.name} cannot be resumed: {what} {', '.join(map(str, damaged))} "
                             f"{'is' if len(damaged) == 1 else 'are'} cut short or damaged and no other checkpoint "
                             "of the run is whole; start a new run")
        return None, []

    def discard_unreadable_checkpoints(self) -> list[str]:
        """Delete the checkpoint files cut short (a save that hit a full disk): their space is what
        a failed run needs to record why. Returns their names."""
        unreadable = [path for path in self.checkpoint_files() if not readable_checkpoint(path)]
        for path in unreadable:
            path.unlink(missing_ok=True)
        return [path.name for path in unreadable]

    # --- evaluations

    def evaluation(self, name: str = VALIDATION) -> Path:
        return self.path / name

    def evaluation_log(self, name: str) -> Path:
        """A background evaluation's output."""
        return self.path / f"{name}.log"

    def evaluation_launch(self, name: str) -> Path:
        """A background evaluation's process: {"pid", "pid_start", "started"}."""
        return self.path / f"{name}.launch.json"

    def evaluation_names(self) -> list[str]:
        """The complete evaluation folders: VALIDATION and TEST_PART first when present, then the others by name."""
        found = [path.name for path in self.path.glob(f"{VALIDATION}*") if path.is_dir() and is_complete(path)]
        return sorted(found, key=lambda name: (name != VALIDATION, name != TEST_PART, name))

    def evaluations_of(self, dataset: str | Path, run_data: str) -> list[str]:
        """The complete evaluations that scored catalogue `dataset` (`run_data`: the run's own
        catalogue, which its validation split comes from)."""
        return [name for name in self.evaluation_names()
                if same_dataset(evaluated_dataset(read_report(self.evaluation(name)), run_data), dataset)]

    def files(self) -> list[Path]:
        """What a finished run's folder shows a user: its config, schema, metrics, evaluations (validation
        split, test part), log and every checkpoint, those present."""
        named = [self.config, self.schema, self.metrics, self.evaluation(), self.evaluation(TEST_PART), self.log]
        return [path for path in named if path.exists()] + self.checkpoint_files()
