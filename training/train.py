"""`train(cfg) -> RunRecord`: one training run, from catalogue to checkpoint and evaluation files.

A run folder (`<workspace>/runs/<run_id>/`) holds:
    config.json          the TrainConfig (also inside every checkpoint, with the label schema)
    schema.json          the label schema fitted on the run's training rows
    checkpoints/         best.ckpt (by cfg.monitor) and last.ckpt
    metrics.csv          Lightning's CSVLogger: one row per logged step/epoch
    tensorboard/         TensorBoard events
    progress.json        where the run is now (stage, epoch, step), for the Train page
    evaluation/          the validation split through the best checkpoint (training.evaluate)
    run.log              the CLI's output when launched from the dashboard
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from core import workspace
from core.backbones import create_backbone
from core.data.catalogue import Catalogue, load_catalogue
from core.data.schema import IGNORE_INDEX, LabelSchema
from core.data.split import split_catalogue
from core.datamodule import CatalogueDataModule, capped_selection
from core.corrections import apply_corrections, corrections_snapshot
from core.labelstore import LabelStore
from core.model import MultiHeadNet, SeedNet, TaggerModule
from core.transforms import data_config
from training.config import TrainConfig, resolve_channels_last, resolve_precision, resolve_rare_min_count
from training.evaluate import load_weights, predict, summarise, write_evaluation
from training.registry import RunRecord, RunRegistry

CHECKPOINT_KEY = "fashion_tagger"  # the checkpoint entry holding the run's config and schema
PROGRESS_FILE = "progress.json"
RUN_ID_ENV = "FASHION_TAGGER_RUN_ID"


EARLIER_METRICS = "metrics.until-*.csv"  # a resumed run's earlier attempts' metrics.csv, oldest first by name


def run_paths(folder: Path) -> dict[str, Path]:
    """The files of a run folder, by name."""
    return {
        "config": folder / "config.json",
        "schema": folder / "schema.json",
        "checkpoints": folder / "checkpoints",
        "best": folder / "checkpoints" / "best.ckpt",
        "last": folder / "checkpoints" / "last.ckpt",
        "metrics": folder / "metrics.csv",
        "progress": folder / PROGRESS_FILE,
        "evaluation": folder / "evaluation",
        "log": folder / "run.log",
        "tensorboard": folder / "tensorboard",
        "corrections": folder / "corrections.json",
    }


def dataset_folder(cfg: TrainConfig) -> Path:
    """cfg.data, else FASHION_TAGGER_DATA, else the demo dataset (generated if needed)."""
    if cfg.data:
        return Path(cfg.data)
    return workspace.configured_dataset_dir() or workspace.ensure_demo()


def run_catalogue(cfg: TrainConfig, folder: Path) -> Catalogue:
    """The catalogue a run trains on: cfg.data, with the label store's corrections when cfg.corrections.

    The corrections are read once, when the run starts, into `<run>/corrections.json`: a resumed
    run and a later evaluation of its split see the labels it was trained with, not newer ones.
    """
    catalogue = load_catalogue(cfg.data)
    if not cfg.corrections:
        return catalogue
    snapshot = run_paths(folder)["corrections"]
    if not snapshot.exists():
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.write_text(json.dumps(corrections_snapshot(LabelStore(), catalogue.root)))
    return apply_corrections(catalogue, json.loads(snapshot.read_text()))


def run_split(cfg: TrainConfig, catalogue: Catalogue) -> pd.Series:
    """"train"/"val" per catalogue row: the stratified split of the catalogue's own rows (the same
    as a run without corrections, but for relabelled rows), with reviewed new photos always in training."""
    frame = catalogue.frame
    added = frame["id"].isin(list(catalogue.extra_images)).to_numpy()
    split = pd.Series("train", index=frame.index)
    split[~added] = split_catalogue(frame[~added], val_fraction=cfg.val_fraction, seed=cfg.seed)
    return split


def class_counts(schema: LabelSchema, labels: np.ndarray) -> dict[str, list[int]]:
    """Training rows per class of each head, in class-index order (ignored labels not counted)."""
    counts = {}
    for column, head in enumerate(schema.heads):
        kept = labels[:, column][labels[:, column] != IGNORE_INDEX]
        counts[head] = np.bincount(kept, minlength=len(schema.classes[head])).tolist()
    return counts


def build_module(cfg: TrainConfig, schema: LabelSchema, counts: dict[str, list[int]], pretrained: str | None = None):
    """The LightningModule for `cfg` and the weights its backbone started from.

    pretrained: overrides cfg.pretrained ("none" when a checkpoint will supply every weight).
    """
    backbone, weights = create_backbone(cfg.backbone, pretrained or cfg.pretrained, num_classes=0)
    num_classes = schema.num_classes()
    if cfg.head == "seed_mlp":
        net = SeedNet(backbone, num_classes, freeze_backbone=cfg.freeze_backbone)
    else:
        if cfg.freeze_backbone:
            backbone.requires_grad_(False)
        net = MultiHeadNet(backbone, num_classes)
    module = TaggerModule(
        net, schema.heads, counts, imbalance=cfg.imbalance, loss=cfg.loss, tau=cfg.tau,
        focal_gamma=cfg.focal_gamma, lr=cfg.lr, weight_decay=cfg.weight_decay, scheduler=cfg.scheduler,
        warmup_fraction=cfg.warmup_fraction, step_size=cfg.step_size, gamma=cfg.gamma,
    )
    return module, weights


def build_datamodule(cfg: TrainConfig, catalogue: Catalogue, schema: LabelSchema, split: pd.Series,
                     module: TaggerModule, progress: Callable[[int, int], None] | None = None) -> CatalogueDataModule:
    """The DataModule of `cfg` over `split` ("train"/"val" per catalogue row), preprocessing as
    `module`'s backbone expects; `progress(done, total)` while the image cache is built."""
    return CatalogueDataModule(
        catalogue, schema, split, cfg.image_size, data_config(module.net.backbone, cfg.image_size),
        batch_size=cfg.batch_size, num_workers=cfg.num_workers, cache_root=workspace.workspace_dir(),
        max_samples=cfg.max_samples, seed=cfg.seed, train_scale=(0.7, 1.0) if cfg.augment else (1.0, 1.0),
        progress=progress,
    )


class RunFiles(Callback):
    """Puts the config and schema into every checkpoint, and keeps progress.json current."""

    def __init__(self, cfg: TrainConfig, schema: LabelSchema, progress_path: Path, every_n_steps: int = 5) -> None:
        self.payload = {"config": cfg.to_dict(), "schema": schema.to_dict()}
        self.progress_path, self.every_n_steps = progress_path, every_n_steps

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.payload

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not trainer.is_global_zero:  # DDP: rank zero speaks for the run
            return
        if batch_idx % self.every_n_steps == 0 or batch_idx + 1 == trainer.num_training_batches:
            write_progress(self.progress_path, stage="train", **_trainer_position(trainer, batch_idx + 1))

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            write_progress(self.progress_path, stage="validate", **_trainer_position(trainer, trainer.num_training_batches))


def _trainer_position(trainer: L.Trainer, batch_in_epoch: int) -> dict[str, Any]:
    loss = trainer.callback_metrics.get("train/loss")
    return {
        "epoch": trainer.current_epoch + 1, "epochs": trainer.max_epochs,
        "step": batch_in_epoch, "steps_per_epoch": int(trainer.num_training_batches),
        "global_step": trainer.global_step, "train_loss": None if loss is None else float(loss),
    }


def write_progress(path: Path, **fields: Any) -> None:
    """Replace progress.json atomically (the page may read it at any moment); the temporary file is
    this process's own, so DDP ranks reporting a stage at once never trip over each other's."""
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps({**fields, "updated": time.time()}))
    os.replace(temporary, path)


def read_progress(folder: Path) -> dict[str, Any] | None:
    """The run's progress.json, or None before the run wrote one."""
    try:
        return json.loads(run_paths(Path(folder))["progress"].read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _device(trainer: L.Trainer) -> str:
    root, count = trainer.strategy.root_device, trainer.num_devices * trainer.num_nodes
    if root.type == "cuda":
        return f"{torch.cuda.get_device_name(root)} x{count}"
    return f"{root.type}{f' x{count} processes' if count > 1 else ''} ({torch.get_num_threads()} threads)"


def _prepare_run(cfg: TrainConfig, catalogue: Catalogue, folder: Path) -> tuple[LabelSchema, Any]:
    """Split, fit the label schema on the run's training rows, write config.json and schema.json."""
    frame = catalogue.frame
    split = run_split(cfg, catalogue)
    used = capped_selection(frame["id"].to_numpy(), split.to_numpy(), cfg.max_samples, cfg.seed)
    train_rows = frame[used & (split == "train").to_numpy()]
    rare_min_count = resolve_rare_min_count(cfg, len(train_rows))
    schema = LabelSchema.fit(train_rows, rare_policy=cfg.rare_policy, rare_min_count=rare_min_count, heads=cfg.heads)
    paths = run_paths(folder)
    paths["checkpoints"].mkdir(parents=True, exist_ok=True)
    paths["config"].write_text(json.dumps(cfg.to_dict(), indent=2))
    schema.save(paths["schema"])
    return schema, split


def _train_counts(cfg: TrainConfig, catalogue: Catalogue, schema: LabelSchema, split) -> dict[str, list[int]]:
    frame = catalogue.frame
    used = capped_selection(frame["id"].to_numpy(), split.to_numpy(), cfg.max_samples, cfg.seed)
    return class_counts(schema, schema.encode(frame[used & (split == "train").to_numpy()]))


def _trainer(cfg: TrainConfig, folder: Path, callbacks: list[Callback]) -> tuple[L.Trainer, ModelCheckpoint]:
    paths = run_paths(folder)
    metrics = paths["metrics"]
    if metrics.exists():  # a resumed run: CSVLogger would delete the earlier epochs' rows
        os.replace(metrics, metrics.with_name(EARLIER_METRICS.replace("*", time.strftime("%Y%m%d-%H%M%S"))))
    # Expected: the run folder already holds config.json and schema.json, and a resumed run's
    # checkpoints folder its earlier checkpoints.
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    mode = cfg.monitor_mode
    checkpoint = ModelCheckpoint(
        dirpath=paths["checkpoints"], filename="epoch{epoch:03d}", auto_insert_metric_name=False,
        monitor=cfg.monitor, mode=mode, save_top_k=1, save_last=True,
    )
    trainer = L.Trainer(
        default_root_dir=folder,
        accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=cfg.strategy,
        precision=resolve_precision(cfg), max_epochs=cfg.epochs, gradient_clip_val=cfg.grad_clip,
        callbacks=[checkpoint, EarlyStopping(cfg.monitor, patience=cfg.patience, mode=mode),
                   LearningRateMonitor("step"), *callbacks],
        logger=[CSVLogger(folder, name="", version=""), TensorBoardLogger(folder, name=paths["tensorboard"].name, version="")],
        log_every_n_steps=1, enable_model_summary=False,
    )
    return trainer, checkpoint


def train(cfg: TrainConfig, run_id: str | None = None, registry: RunRegistry | None = None,
          resume: bool = False) -> RunRecord:
    """Train `cfg` and evaluate the best checkpoint on the validation split; returns the run's record.

    run_id: adopt a run already registered as queued (the dashboard registers it before
    launching; `--resume` requeues it); resume=True continues from its last checkpoint.
    Without run_id a new run is registered. Any error marks the run failed and is raised;
    SIGTERM (Cancel) marks it cancelled and keeps its last checkpoint.
    """
    registry = registry or RunRegistry()
    if cfg.data is None:
        cfg = replace(cfg, data=str(dataset_folder(cfg)))
    if run_id is None and _launched_rank() > 0:
        run_id = os.environ.get(RUN_ID_ENV)
    record = registry.get(run_id) if run_id else registry.create(cfg.to_dict())
    # Lightning's DDP launcher re-runs this command for the other ranks with this environment:
    # they adopt the same run instead of registering their own.
    previous_run_env = os.environ.get(RUN_ID_ENV)
    os.environ[RUN_ID_ENV] = record.id
    folder = Path(record.folder)
    paths = run_paths(folder)
    timings: dict[str, float | None] = {}
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # new layers' weights and the data order
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_progress(paths["progress"], stage="load")
        catalogue = run_catalogue(cfg, folder)
        schema, split = _prepare_run(cfg, catalogue, folder)
        module, weights = build_module(cfg, schema, _train_counts(cfg, catalogue, schema, split))
        if resolve_channels_last(cfg):
            module = module.to(memory_format=torch.channels_last)
        trainer, checkpoint = _trainer(cfg, folder, [RunFiles(cfg, schema, paths["progress"])])
        if trainer.is_global_zero:
            record = registry.mark_running(record.id, os.getpid(), device=_device(trainer), weights=weights.detail)

        datamodule = build_datamodule(
            cfg, catalogue, schema, split, module,
            progress=lambda done, total: write_progress(paths["progress"], stage="cache", done=done, total=total),
        )
        datamodule.setup("fit")  # builds the image cache; unreadable photos warn and are counted
        timings["prepare_s"] = time.perf_counter() - started

        fit_started = time.perf_counter()
        try:
            trainer.fit(module, datamodule=datamodule,
                        ckpt_path=str(paths["last"]) if resume and paths["last"].exists() else None)
        except SIGTERMException:
            trainer.save_checkpoint(paths["last"])
            write_progress(paths["progress"], stage="cancelled")
            return registry.mark_cancelled(record.id)
        timings["fit_s"] = time.perf_counter() - fit_started
        timings["train_images_per_s"] = trainer.global_step * cfg.batch_size / max(timings["fit_s"], 1e-9)

        write_progress(paths["progress"], stage="evaluate")
        eval_started = time.perf_counter()
        best_epoch = Path(checkpoint.best_model_path or paths["last"])
        best = _keep_as_best(best_epoch, paths["best"])
        if not trainer.is_global_zero:  # other DDP ranks: rank zero evaluates and reports
            return registry.get(record.id)
        load_weights(module, best)
        ids, probs = predict(module, datamodule.val_dataloader(), cfg.accelerator, resolve_precision(cfg))
        summary = summarise(write_evaluation(catalogue, schema, ids, probs, paths["evaluation"], best_epoch.name))
        timings["evaluate_s"] = time.perf_counter() - eval_started
        timings["total_s"] = time.perf_counter() - started
        metrics = {
            "heads": summary, "best_checkpoint": best_epoch.name,
            "skipped_images": {str(k): v for k, v in datamodule.cache_report.failed.items()},
            "train_rows": len(datamodule.train_ids), "val_rows": len(datamodule.val_ids),
            "rare_min_count": schema.rare_min_count, "precision": str(trainer.precision),
        }
        write_progress(paths["progress"], stage="finished")
        score = checkpoint.best_model_score
        return registry.mark_finished(record.id, None if score is None else float(score), cfg.monitor, metrics, timings)
    except (Exception, KeyboardInterrupt) as error:
        registry.mark_failed(record.id, f"{type(error).__name__}: {error}\n\n{traceback.format_exc()}")
        raise
    finally:
        if previous_run_env is None:
            os.environ.pop(RUN_ID_ENV, None)
        else:
            os.environ[RUN_ID_ENV] = previous_run_env


def _keep_as_best(checkpoint: Path, best: Path) -> Path:
    """Make `best` (checkpoints/best.ckpt) the best epoch's checkpoint: a hard link, no extra disk."""
    if checkpoint != best:
        best.unlink(missing_ok=True)
        try:
            os.link(checkpoint, best)
        except OSError:  # a file system without hard links
            shutil.copyfile(checkpoint, best)
    return best


def _launched_rank() -> int:
    """Non-zero in the processes Lightning's DDP launcher starts for ranks other than zero."""
    return int(os.environ.get("LOCAL_RANK", 0)) + int(os.environ.get("NODE_RANK", 0))
