"""The torch side of what a run is made of, built from its config: the LightningModule and the
DataModule (its rows come from training.rows). `train`, `crossval`, `evaluate` and checkpoint loading
all build through here, so a run and a later evaluation of it see the same net and preprocessing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pandas as pd

from core import workspace
from core.data.catalogue import Catalogue
from core.data.schema import LabelSchema
from core.images.transforms import Normalise, data_config
from core.model.backbones import LoadedWeights, create_backbone
from core.model.datamodule import CatalogueDataModule
from core.model.module import ConditionedNet, MultiHeadNet, SeedNet, TaggerModule
from core.model.options import HeadType
from training.config import AUTO, TrainConfig, resolve_channels_last, resolve_precision
from training.machine import Machine


def build_module(cfg: TrainConfig, schema: LabelSchema, counts: dict[str, list[int]],
                 pretrained: str | None = None) -> tuple[TaggerModule, LoadedWeights]:
    """The LightningModule for `cfg` (in channels_last memory format when the config resolves to
    it; normalising its uint8 batches by the backbone's data config) and the weights its backbone
    started from. The normalisation is the backbone's, never stored in a checkpoint: a checkpoint
    of any age loads into a module that normalises as today.

    pretrained: overrides cfg.pretrained ("none" when a checkpoint will supply every weight).
    """
    backbone, weights = create_backbone(cfg.backbone, pretrained or cfg.pretrained, num_classes=0)
    num_classes = schema.num_classes()
    if cfg.head == HeadType.SEED_MLP:
        net = SeedNet(backbone, num_classes, freeze_backbone=cfg.freeze_backbone)
    else:
        if cfg.freeze_backbone:
            backbone.requires_grad_(False)
        net = (ConditionedNet if cfg.head == HeadType.CONDITIONED else MultiHeadNet)(backbone, num_classes)
    module = TaggerModule(
        net, schema.heads, counts, Normalise.from_config(data_config(backbone)), imbalance=cfg.imbalance,
        loss=cfg.loss, head_weights=cfg.head_weight_map() or None, tau=cfg.tau, focal_gamma=cfg.focal_gamma,
        lr=cfg.lr, weight_decay=cfg.weight_decay, scheduler=cfg.scheduler, warmup_fraction=cfg.warmup_fraction,
        step_size=cfg.step_size, gamma=cfg.gamma, label_smoothing=cfg.label_smoothing, ema_decay=cfg.ema_decay,
        tta_flip=cfg.tta_flip, channels_last=resolve_channels_last(cfg, Machine.from_torch(details=False)),
    )
    return module, weights


def build_datamodule(cfg: TrainConfig, catalogue: Catalogue, schema: LabelSchema, split: pd.Series,
                     module: TaggerModule, progress: Callable[[int, int], None] | None = None) -> CatalogueDataModule:
    """The DataModule of `cfg` over `split` ("train"/"val" per catalogue row: training.rows.run_rows
    gives a run's), preprocessing as `module`'s backbone expects; `progress(done, total)` while the
    image cache is built. The rows are taken as they are: a run's split is capped by max_samples already."""
    # Expected: the module normalises every batch after the transfer (core.model.module), whichever
    # DataModule feeds it; Lightning warns about that hook whenever a DataModule is passed.
    warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule`")
    return CatalogueDataModule(
        catalogue, schema, split, cfg.image_size, data_config(module.net.backbone, cfg.image_size),
        batch_size=cfg.batch_size, num_workers=cfg.num_workers, cache_root=workspace.workspace_dir(),
        seed=cfg.seed, train_scale=(0.7, 1.0) if cfg.augment else (1.0, 1.0),
        progress=progress,
    )


def run_precision(cfg: TrainConfig) -> str:
    """The Lightning precision `cfg` trains and predicts in on this machine (`resolve_precision`);
    CUDA is initialised only when "auto" needs to know whether the GPU runs bf16."""
    return resolve_precision(cfg, Machine.from_torch(details=cfg.precision == AUTO))
