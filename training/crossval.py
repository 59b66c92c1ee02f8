"""`crossval(cfg, folds)`: out-of-sample probabilities for every catalogue row, and its label issues.

The run's rows (cfg.max_samples of them at most, a uniform sample) are dealt into K folds,
stratified by articleType (`assign_folds`). One label schema is fitted on all of them, so every
fold's probabilities have the same class columns. Fold k's model trains on the other folds and
predicts fold k; together the folds give every row a prediction from a model that never saw it.

Each fold trains cfg.epochs epochs and predicts with its last weights: no early stopping, no best
checkpoint, no validation pass. Choosing the epoch on the held-out fold would let its labels, the
wrong ones included, pick the model that then judges them. One device per fold (devices=1).

A cross-validation folder `<workspace>/crossval/<crossval_id>/` holds:
    config.json           the TrainConfig
    schema.json           the label schema, fitted on every row
    folds.parquet         id, fold
    fold<k>/metrics.csv   the fold's training log (Lightning's CSVLogger)
    evaluation/           core.evaluation.files' files over every row, out-of-sample: predictions.parquet
                          (each row once), report.json, confusion.json; read like a run's evaluation
    label_issues.parquet  core.evaluation.label_issues.rank_label_issues over those predictions
    progress.json         the fold in progress
    summary.json          the CrossvalResult (written when it ends, finished or failed)
(names shared with a run folder come from training.run_folder)

It scores every row, the dataset's fixed test part included (training.rows), and ignores
cfg.test_part: it exists to find wrong labels, and the test part's, which score every run, are the
last to leave unchecked. That leaks nothing into runs: its K models are thrown away, none chooses an
epoch, and it is never ranked or compared with runs. For the same reason its out-of-sample scores are
no measure to choose a recipe by (they include the test part): runs' test-part scores are.

It keeps its own record (summary.json) rather than a row in the run registry: the registry's
readers (`fit --resume`, checkpoint loading, the Train page) take a run to be one model with
checkpoints and a config TrainConfig accepts, and a cross-validation is K models and keeps none.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import secrets
import shutil
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import workspace
from core.data.catalogue import Catalogue
from core.data.schema import LabelSchema
from core.data.split import capped_selection, id_uniform
from core.evaluation.files import head_summary, load_evaluation, write_evaluation
from training.config import TrainConfig, resolve_rare_min_count
from training.registry import RunState
from training.rows import class_counts, run_catalogue, with_dataset
from training.run_folder import RunFolder, Stage

CROSSVAL_FOLDER = "crossval"
SUMMARY_FILE = "summary.json"
STRATIFY_ON = "articleType"


@dataclasses.dataclass(frozen=True)
class CrossvalResult:
    """One cross-validation, as its summary.json holds it."""

    id: str  # "<UTC yyyymmdd-hhmmss>-<K>fold-<4 hex>"
    folder: str
    status: str  # RunState.FINISHED or RunState.FAILED
    folds: int
    config: dict[str, Any]  # TrainConfig.to_dict()
    rows: int  # rows with an out-of-sample prediction (photos that fail to decode are left out)
    fold_rows: list[int]  # held-out rows per fold
    issues: dict[str, int]  # head -> rows cleanlab flags (is_issue)
    metrics: dict[str, Any]  # core.evaluation.files.head_summary of the out-of-sample predictions
    skipped_images: dict[str, str]  # id -> why its photo could not be used
    timings: dict[str, float]
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def assign_folds(frame: pd.DataFrame, folds: int, seed: int, stratify_on: str = STRATIFY_ON) -> np.ndarray:
    """The fold of each row, int64 [n] in [0, folds).

    Rows sorted by (stratum, id_uniform(id, seed), id) are dealt round-robin: every stratum puts
    floor or ceil of size/folds rows in each fold, fold sizes differ by at most one, and a row's
    fold depends on (seed, its stratum's ids) only, not on row order.
    """
    _check_folds(folds, len(frame))
    ids = frame["id"].to_numpy(dtype=np.int64)
    stratum, _ = pd.factorize(frame[stratify_on], sort=True, use_na_sentinel=False)
    order = np.lexsort((ids, id_uniform(ids, seed), stratum))
    fold = np.empty(len(frame), dtype=np.int64)
    fold[order] = np.arange(len(frame)) % folds
    return fold


def _check_folds(folds: int, rows: int) -> None:
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or not 2 <= folds <= rows:
        raise ValueError(f"folds must be an int from 2 to the number of rows ({rows}), got {folds!r}")


def crossval(cfg: TrainConfig, folds: int, progress: Callable[[int, int], None] | None = None) -> CrossvalResult:
    """Train `folds` models on `cfg` and write the cross-validation folder (module docstring).

    progress: `progress(done, folds)` after each fold. Returns the finished result; an error
    writes a failed summary.json and is raised.
    """
    from core.evaluation.label_issues import rank_label_issues, save_issues  # cleanlab: only when one runs

    cfg = with_dataset(cfg)
    crossval_id, folder = _new_folder(folds)
    run = RunFolder(folder)
    try:  # with cfg.corrections, the label store's decisions (snapshot in the folder, as a run keeps)
        catalogue = capped_catalogue(run_catalogue(cfg, folder), cfg)
        _check_folds(folds, len(catalogue.frame))
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)  # nothing ran: leave no empty cross-validation behind
        raise
    started = time.perf_counter()
    try:
        frame = catalogue.frame
        schema = LabelSchema.fit(frame, rare_policy=cfg.rare_policy,
                                 rare_min_count=resolve_rare_min_count(cfg, len(frame)), heads=cfg.heads)
        cfg.save(run.config)
        schema.save(run.schema)
        fold_of = assign_folds(frame, folds, cfg.seed)
        pd.DataFrame({"id": frame["id"], "fold": fold_of}).to_parquet(folder / "folds.parquet", index=False)

        ids, probs, skipped, timings = [], [], {}, {}
        for fold in range(folds):
            run.write_progress(Stage.TRAIN, fold=fold + 1, folds=folds)
            fold_started = time.perf_counter()
            fold_ids, fold_probs, fold_skipped = _fit_and_predict(
                cfg, catalogue, schema, fold_of == fold, folder / f"fold{fold}", fold)
            ids.append(fold_ids)
            probs.append(fold_probs)
            skipped.update(fold_skipped)
            timings[f"fold{fold}_s"] = time.perf_counter() - fold_started
            if progress is not None:
                progress(fold + 1, folds)

        run.write_progress(Stage.RANK, fold=folds, folds=folds)
        all_ids = np.concatenate(ids)
        order = np.argsort(pd.Index(frame["id"]).get_indexer(all_ids))  # catalogue order
        all_probs = {head: np.concatenate([fold_probs[head] for fold_probs in probs])[order] for head in schema.heads}
        report = write_evaluation(catalogue, schema, all_ids[order], all_probs, run.evaluation(),
                                  f"{folds}-fold cross-validation, last epoch of each fold")
        issues = rank_label_issues(load_evaluation(run.evaluation()).predictions, schema.classes)
        save_issues(issues, run.label_issues)
        timings["total_s"] = time.perf_counter() - started
        result = CrossvalResult(
            id=crossval_id, folder=str(folder), status=RunState.FINISHED, folds=folds, config=cfg.to_dict(),
            rows=len(all_ids), fold_rows=[len(fold_ids) for fold_ids in ids],
            issues={head: int(issues["is_issue"][issues["head"] == head].sum()) for head in schema.heads},
            metrics=head_summary(report), skipped_images=skipped, timings=timings, error=None,
        )
        run.write_progress(Stage.FINISHED, fold=folds, folds=folds)
    except (Exception, KeyboardInterrupt) as error:
        result = CrossvalResult(
            id=crossval_id, folder=str(folder), status=RunState.FAILED, folds=folds, config=cfg.to_dict(), rows=0,
            fold_rows=[], issues={}, metrics={}, skipped_images={}, timings={},
            error=f"{type(error).__name__}: {error}\n\n{traceback.format_exc()}",
        )
        raise
    finally:
        (folder / SUMMARY_FILE).write_text(json.dumps(result.as_dict(), indent=1))
    return result


def capped_catalogue(catalogue: Catalogue, cfg: TrainConfig) -> Catalogue:
    """The catalogue with only the rows the cross-validation uses (cfg.max_samples, a uniform sample)."""
    frame = catalogue.frame
    ids = frame["id"].to_numpy(dtype=np.int64)
    kept = capped_selection(ids, np.full(len(ids), "train"), cfg.max_samples, cfg.seed)
    return dataclasses.replace(catalogue, frame=frame[kept].reset_index(drop=True))


def _new_folder(folds: int) -> tuple[str, Path]:
    """A fresh crossval id and its folder, created."""
    root = workspace.workspace_dir() / CROSSVAL_FOLDER
    root.mkdir(parents=True, exist_ok=True)
    while True:
        crossval_id = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{folds}fold-{secrets.token_hex(2)}"
        try:
            (root / crossval_id).mkdir()
            return crossval_id, root / crossval_id
        except FileExistsError:  # the same id drawn twice in one second: draw again
            continue


def _fit_and_predict(cfg: TrainConfig, catalogue: Catalogue, schema: LabelSchema, held_out: np.ndarray,
                     folder: Path, fold: int) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, str]]:
    """Train on the rows not `held_out` (bool [n]), predict the held-out ones ->
    (ids int64 [m], head -> probs float32 [m, C], skipped photos {id: why})."""
    import lightning as L  # torch: only when a fold trains, never when the dashboard lists the folders
    from lightning.pytorch.loggers import CSVLogger

    from training.builders import build_datamodule, build_module, run_precision
    from training.evaluate import predict

    frame = catalogue.frame
    split = pd.Series(np.where(held_out, "val", "train"), index=frame.index)
    L.seed_everything(cfg.seed + fold, workers=True, verbose=False)
    module, _ = build_module(cfg, schema, class_counts(schema, frame[~held_out]))
    datamodule = build_datamodule(cfg, catalogue, schema, split, module)
    datamodule.setup("fit")
    trainer = L.Trainer(
        default_root_dir=folder, accelerator=cfg.accelerator, devices=1,
        precision=run_precision(cfg),
        max_epochs=cfg.epochs, gradient_clip_val=cfg.grad_clip, limit_val_batches=0, num_sanity_val_steps=0,
        enable_checkpointing=False, logger=CSVLogger(folder, name="", version=""), log_every_n_steps=1,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    # Each fold's features are its own model's: no one gate could compare them, so none is kept.
    ids, probs, _ = predict(module, datamodule.val_dataloader(), cfg.accelerator,
                            run_precision(cfg))
    return ids, probs, datamodule.cache_report.as_dict()["failed"]


def list_crossvals() -> list[CrossvalResult]:
    """The workspace's ended cross-validations, newest first."""
    summaries = sorted((workspace.workspace_dir() / CROSSVAL_FOLDER).glob(f"*/{SUMMARY_FILE}"), reverse=True)
    return [CrossvalResult(**json.loads(path.read_text())) for path in summaries]
