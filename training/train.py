"""`train(cfg) -> RunRecord`: one training run, from catalogue to checkpoints and the evaluations
of the best one: on the validation split, and on the dataset's fixed test part when the run has one
(training.rows). What the run folder holds is training.run_folder's; how the model and data are
built, training.builders'; the run's record, training.registry's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from core.access.roles import command_line_actor
from core.data.catalogue import Catalogue
from core.data.schema import LabelSchema
from core.evaluation.files import head_summary, mean_macro_f1, write_evaluation
from core.trust.taxonomy import Taxonomy
from training.builders import build_datamodule, build_module, run_precision
from training.calibrate import fit_trust
from training.checkpoints import CHECKPOINT_KEY, checkpoint_payload, load_weights
from training.config import TrainConfig, resolve_rare_min_count
from training.evaluate import evaluate_rows, predict
from training.registry import RunRecord, RunRegistry
from training.rows import (
    FixedTestPart,
    FixedTestState,
    class_counts,
    run_catalogue,
    run_rows,
    run_split,
    run_test_part,
    training_rows,
    with_dataset,
)
from training.run_folder import TEST_PART, VALIDATION, RunFolder, Stage

RUN_ID_ENV = "FASHION_TAGGER_RUN_ID"


@dataclass(frozen=True)
class PreparedRun:
    """What a run trains on, decided once when it starts."""

    catalogue: Catalogue  # the run's rows only (training.rows.run_rows)
    split: pd.Series  # "train"/"val" per row of it
    schema: LabelSchema  # fitted on the training rows
    taxonomy: Taxonomy  # learned from the training rows
    counts: dict[str, list[int]]  # training rows per class of each head
    test: FixedTestPart  # the dataset's fixed test part the run is scored on, or why it has none


def train(cfg: TrainConfig, run_id: str | None = None, registry: RunRegistry | None = None,
          resume: bool = False) -> RunRecord:
    """Train `cfg` and evaluate the best checkpoint on the validation split, and on the dataset's fixed test
    part when the run has one (training.rows); returns the run's record.

    run_id: adopt a run already registered as queued (the dashboard registers it before
    launching; `--resume` requeues it); resume=True continues from its last checkpoint.
    Without run_id a new run is registered, launched by the machine's user (train() is the command
    line's; the dashboard's runs are registered by training.launcher, for the person who asked).
    Any error marks the run failed and is raised; SIGTERM (Cancel) marks it cancelled and keeps
    its last checkpoint.
    """
    registry = registry or RunRegistry()
    cfg = with_dataset(cfg)
    if run_id is None and _launched_rank() > 0:
        run_id = os.environ.get(RUN_ID_ENV)
    record = registry.get(run_id) if run_id else registry.create(cfg.to_dict(), command_line_actor().identity)
    run = RunFolder(record.folder)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # new layers' weights and the data order
    with _run_id_for_other_ranks(record.id):
        try:
            return _train(cfg, record, run, registry, resume)
        except (Exception, KeyboardInterrupt) as error:
            run.discard_unreadable_checkpoints()  # a save cut short by a full disk: room for the record
            registry.mark_failed(record.id, f"{type(error).__name__}: {error}\n\n{traceback.format_exc()}")
            raise


def _train(cfg: TrainConfig, record: RunRecord, run: RunFolder, registry: RunRegistry, resume: bool) -> RunRecord:
    started = time.perf_counter()
    resume_from = _resume_point(run) if resume else None
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_progress(Stage.LOAD)
    prepared = prepare_run(cfg, run)
    module, weights = build_module(cfg, prepared.schema, prepared.counts)
    trainer, checkpoint = _trainer(cfg, run,
                                   [RunFiles(checkpoint_payload(cfg, prepared.schema, prepared.taxonomy), run)])
    if trainer.is_global_zero:
        record = registry.mark_running(record.id, os.getpid(), device=_device(trainer), weights=weights.detail)
    datamodule = build_datamodule(
        cfg, prepared.catalogue, prepared.schema, prepared.split, module,
        progress=lambda done, total: run.write_progress(Stage.CACHE, done=done, total=total),
    )
    datamodule.setup("fit")  # builds the image cache; unreadable photos warn and are counted
    timings = {"prepare_s": time.perf_counter() - started}

    fit_started = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, weights_only=True,  # never unpickle code from a checkpoint
                    ckpt_path=resume_from)
    except SIGTERMException:
        trainer.save_checkpoint(run.last)
        run.write_progress(Stage.CANCELLED)
        return registry.mark_cancelled(record.id)
    timings["fit_s"] = time.perf_counter() - fit_started
    timings["train_images_per_s"] = trainer.global_step * cfg.batch_size / max(timings["fit_s"], 1e-9)

    best_epoch = Path(checkpoint.best_model_path or run.last)
    _keep_as_best(best_epoch, run.best)
    if not trainer.is_global_zero:  # other DDP ranks: rank zero evaluates and reports
        return registry.get(record.id)
    run.write_progress(Stage.EVALUATE)
    eval_started = time.perf_counter()
    module = load_weights(module, run.best)  # the best epoch's weights, for both evaluations
    ids, probs, features = predict(module, datamodule.val_dataloader(), cfg.accelerator, run_precision(cfg))
    trust = fit_trust(run, prepared.schema, prepared.taxonomy, prepared.catalogue, ids, probs, features)
    report = write_evaluation(prepared.catalogue, prepared.schema, ids, probs, run.evaluation(VALIDATION),
                              best_epoch.name, trust, validation_split=True, features=features)
    test = prepared.test
    test_metrics = {"test_part": test.state, "test_rows": test.rows}
    if test.state == FixedTestState.SCORED:
        test_report = evaluate_rows(module, cfg, test.catalogue, prepared.schema, trust, run.evaluation(TEST_PART),
                                    best_epoch.name)
        test_metrics |= {"test_rows": test_report["rows"], "test_mean_macro_f1": mean_macro_f1(test_report["heads"])}
    timings["evaluate_s"] = time.perf_counter() - eval_started
    timings["total_s"] = time.perf_counter() - started
    metrics = {
        "heads": head_summary(report), "mean_macro_f1": mean_macro_f1(report["heads"]),
        # what the best epoch was chosen on: each head's argmax, as Lightning's validation metrics
        "mean_macro_f1_independent": mean_macro_f1(report["independent"]), "best_checkpoint": best_epoch.name,
        "skipped_images": datamodule.cache_report.as_dict()["failed"],
        "train_rows": len(datamodule.train_ids), "val_rows": len(datamodule.val_ids),
        "rare_min_count": prepared.schema.rare_min_count, "precision": str(trainer.precision), **test_metrics,
    }
    run.write_progress(Stage.FINISHED)
    score = checkpoint.best_model_score
    return registry.mark_finished(record.id, None if score is None else float(score), cfg.monitor, metrics, timings)


def _resume_point(run: RunFolder) -> Path | None:
    """The checkpoint a resumed run continues from (RunFolder.resume_checkpoint; ValueError when none
    is whole). The damaged ones passed over are deleted, saying so: Lightning would otherwise save
    beside a damaged last.ckpt as last-v1.ckpt."""
    resume_from, damaged = run.resume_checkpoint()
    if damaged:
        for path in damaged:
            path.unlink(missing_ok=True)
        print(f"note: resuming run {run.path.name} from {resume_from.name}: {', '.join(map(str, damaged))} "
              f"{'is' if len(damaged) == 1 else 'are'} cut short or damaged (deleted)", file=sys.stderr, flush=True)
    return resume_from


def prepare_run(cfg: TrainConfig, run: RunFolder) -> PreparedRun:
    """Load the catalogue, split it, fit the label schema and learn the taxonomy on the training
    rows; write config.json, split.parquet, schema.json and taxonomy.json. A run without a test part
    says why on stderr, unless it was asked for none (test_part=false)."""
    catalogue = run_catalogue(cfg, run.path)
    split = run_split(cfg, catalogue, run)
    test = run_test_part(cfg, catalogue, split)
    if test.state in (FixedTestState.TOO_FEW, FixedTestState.TRAINED_ON):
        print(f"note: run {run.path.name} has no test part: {test.describe()}", file=sys.stderr, flush=True)
    rows = training_rows(catalogue, split)
    schema = LabelSchema.fit(rows, rare_policy=cfg.rare_policy, rare_min_count=resolve_rare_min_count(cfg, len(rows)),
                             heads=cfg.heads)
    taxonomy = Taxonomy.fit(rows)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    cfg.save(run.config)
    schema.save(run.schema)
    taxonomy.save(run.taxonomy)
    return PreparedRun(*run_rows(catalogue, split), schema, taxonomy, class_counts(schema, rows), test)


class FailOnNonFiniteLoss(Callback):
    """Ends the run when the training loss is NaN or infinite: the weights are lost from then on,
    and early stopping would otherwise end it quietly, as if finished."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            raise FloatingPointError(
                f"the training loss is {loss.float().item()} at step {trainer.global_step} (epoch "
                f"{trainer.current_epoch + 1}, batch {batch_idx + 1}): training diverged; the learning rate is "
                f"likely too high (now {lr:.3g}: lower lr), or the data holds a broken batch"
            )


class RunFiles(Callback):
    """Puts the run's config, schema and taxonomy (`payload`) into every checkpoint, and keeps
    progress.json current."""

    def __init__(self, payload: dict, run: RunFolder, every_n_steps: int = 5) -> None:
        self.payload, self.run, self.every_n_steps = payload, run, every_n_steps

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.payload

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not trainer.is_global_zero:  # DDP: rank zero speaks for the run
            return
        if batch_idx % self.every_n_steps == 0 or batch_idx + 1 == trainer.num_training_batches:
            self.run.write_progress(Stage.TRAIN, **_trainer_position(trainer, batch_idx + 1))

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            self.run.write_progress(Stage.VALIDATE, **_trainer_position(trainer, trainer.num_training_batches))


def _trainer_position(trainer: L.Trainer, batch_in_epoch: int) -> dict[str, Any]:
    loss = trainer.callback_metrics.get("train/loss")
    return {
        "epoch": trainer.current_epoch + 1, "epochs": trainer.max_epochs,
        "step": batch_in_epoch, "steps_per_epoch": int(trainer.num_training_batches),
        "global_step": trainer.global_step, "train_loss": None if loss is None else float(loss),
    }


def _device(trainer: L.Trainer) -> str:
    root, count = trainer.strategy.root_device, trainer.num_devices * trainer.num_nodes
    if root.type == "cuda":
        return f"{torch.cuda.get_device_name(root)} x{count}"
    return f"{root.type}{f' x{count} processes' if count > 1 else ''} ({torch.get_num_threads()} threads)"


def _trainer(cfg: TrainConfig, run: RunFolder, callbacks: list[Callback]) -> tuple[L.Trainer, ModelCheckpoint]:
    run.set_metrics_aside()  # a resumed run: its earlier epochs stay in the curves
    # Expected: the run folder already holds config.json and schema.json, and a resumed run's
    # checkpoints folder its earlier checkpoints.
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    mode = cfg.monitor_mode
    checkpoint = ModelCheckpoint(
        dirpath=run.checkpoints, filename="epoch{epoch:03d}", auto_insert_metric_name=False,
        monitor=cfg.monitor, mode=mode, save_top_k=1, save_last=True,
    )
    trainer = L.Trainer(
        default_root_dir=run.path,
        accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=cfg.strategy,
        precision=run_precision(cfg), max_epochs=cfg.epochs, gradient_clip_val=cfg.grad_clip,
        callbacks=[checkpoint, EarlyStopping(cfg.monitor, patience=cfg.patience, mode=mode),
                   LearningRateMonitor("step"), FailOnNonFiniteLoss(), *callbacks],
        logger=[CSVLogger(run.path, name="", version=""),
                TensorBoardLogger(run.path, name=run.tensorboard.name, version="")],
        log_every_n_steps=1, enable_model_summary=False,
    )
    return trainer, checkpoint


def _keep_as_best(checkpoint: Path, best: Path) -> None:
    """Make `best` (checkpoints/best.ckpt) the best epoch's checkpoint: a hard link, no extra disk."""
    if checkpoint != best:
        best.unlink(missing_ok=True)
        try:
            os.link(checkpoint, best)
        except OSError:  # a file system without hard links
            shutil.copyfile(checkpoint, best)


@contextlib.contextmanager
def _run_id_for_other_ranks(run_id: str) -> Iterator[None]:
    """Lightning's DDP launcher re-runs this command for the other ranks with this process's
    environment: with the run's id in it, they adopt the same run instead of registering their own."""
    previous = os.environ.get(RUN_ID_ENV)
    os.environ[RUN_ID_ENV] = run_id
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_ID_ENV, None)
        else:
            os.environ[RUN_ID_ENV] = previous


def _launched_rank() -> int:
    """Non-zero in the processes Lightning's DDP launcher starts for ranks other than zero."""
    return int(os.environ.get("LOCAL_RANK", 0)) + int(os.environ.get("NODE_RANK", 0))
