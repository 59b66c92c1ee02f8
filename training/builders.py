"""What a run is made of, built from its config: the catalogue it trains on, its split, the rows it
uses, the LightningModule and the DataModule. `train`, `crossval` and checkpoint loading all build
through here, so a run and a later evaluation of it see the same rows, labels and preprocessing.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from core import workspace
from core.backbones import LoadedWeights, create_backbone
from core.corrections import apply_corrections, corrections_snapshot
from core.data.catalogue import Catalogue, dataset_key, load_catalogue
from core.data.schema import IGNORE_INDEX, LabelSchema
from core.data.split import split_catalogue, split_catalogue_grouped
from core.datamodule import CatalogueDataModule, capped_selection
from core.health import near_duplicate_groups
from core.labelstore import LabelStore
from core.model import ConditionedNet, MultiHeadNet, SeedNet, TaggerModule
from core.transforms import Normalise, data_config
from training.config import TrainConfig, resolve_channels_last, uses_cuda
from training.run_folder import RunFolder


def with_dataset(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with its dataset folder decided and resolved (`dataset_key`): cfg.data, else
    FASHION_TAGGER_DATA, else the demo dataset (generated if needed)."""
    folder = cfg.data or workspace.configured_dataset_dir() or workspace.ensure_demo()
    return dataclasses.replace(cfg, data=dataset_key(folder))


def run_catalogue(cfg: TrainConfig, folder: Path) -> Catalogue:
    """The catalogue a run trains on: cfg.data, with the label store's corrections when cfg.corrections.

    The corrections are read once, when the run starts, into the run folder's corrections.json: a
    resumed run and a later evaluation of its split see the labels it was trained with, not newer ones.
    """
    catalogue = load_catalogue(cfg.data)
    if not cfg.corrections:
        return catalogue
    snapshot = RunFolder(folder).corrections
    if not snapshot.exists():
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.write_text(json.dumps(corrections_snapshot(LabelStore(), catalogue.root)))
    return apply_corrections(catalogue, json.loads(snapshot.read_text()))


def run_split(cfg: TrainConfig, catalogue: Catalogue) -> pd.Series:
    """"train"/"val" per catalogue row: the split of the catalogue's own rows (the same as a run
    without corrections, but for relabelled rows), with reviewed new photos always in training.

    cfg.split "grouped" keeps near-duplicate photos together: their groups come from the pretrained
    backbone's embeddings, computed once per dataset and cached in the workspace (on the run's GPU
    when it has one), so a resumed run and a later evaluation see the same split."""
    frame = catalogue.frame
    added = frame["id"].isin(list(catalogue.extra_images)).to_numpy()
    split = pd.Series("train", index=frame.index)
    own = frame[~added]
    if cfg.split == "grouped":
        groups = near_duplicate_groups(catalogue, workspace.workspace_dir(), cfg.group_similarity, ids=own["id"].tolist(),
                                       device="cuda" if uses_cuda(cfg) else "cpu")
        split[~added] = split_catalogue_grouped(own, groups, val_fraction=cfg.val_fraction, seed=cfg.seed)
    else:
        split[~added] = split_catalogue(own, val_fraction=cfg.val_fraction, seed=cfg.seed)
    return split


def training_rows(cfg: TrainConfig, catalogue: Catalogue, split: pd.Series) -> pd.DataFrame:
    """The catalogue rows the run trains on: its training split, capped by cfg.max_samples."""
    frame = catalogue.frame
    used = capped_selection(frame["id"].to_numpy(), split.to_numpy(), cfg.max_samples, cfg.seed)
    return frame[used & (split == "train").to_numpy()]


def class_counts(schema: LabelSchema, rows: pd.DataFrame) -> dict[str, list[int]]:
    """Training rows per class of each head, in class-index order (ignored labels not counted)."""
    labels = schema.encode(rows)
    counts = {}
    for column, head in enumerate(schema.heads):
        kept = labels[:, column][labels[:, column] != IGNORE_INDEX]
        counts[head] = np.bincount(kept, minlength=len(schema.classes[head])).tolist()
    return counts


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
    if cfg.head == "seed_mlp":
        net = SeedNet(backbone, num_classes, freeze_backbone=cfg.freeze_backbone)
    else:
        if cfg.freeze_backbone:
            backbone.requires_grad_(False)
        net = (ConditionedNet if cfg.head == "conditioned" else MultiHeadNet)(backbone, num_classes)
    module = TaggerModule(
        net, schema.heads, counts, Normalise.from_config(data_config(backbone)), imbalance=cfg.imbalance,
        loss=cfg.loss, head_weights=cfg.head_weight_map() or None, tau=cfg.tau, focal_gamma=cfg.focal_gamma,
        lr=cfg.lr, weight_decay=cfg.weight_decay, scheduler=cfg.scheduler, warmup_fraction=cfg.warmup_fraction,
        step_size=cfg.step_size, gamma=cfg.gamma, label_smoothing=cfg.label_smoothing, ema_decay=cfg.ema_decay,
        tta_flip=cfg.tta_flip, channels_last=resolve_channels_last(cfg),
    )
    return module, weights


def build_datamodule(cfg: TrainConfig, catalogue: Catalogue, schema: LabelSchema, split: pd.Series,
                     module: TaggerModule, progress: Callable[[int, int], None] | None = None) -> CatalogueDataModule:
    """The DataModule of `cfg` over `split` ("train"/"val" per catalogue row), preprocessing as
    `module`'s backbone expects; `progress(done, total)` while the image cache is built."""
    # Expected: the module normalises every batch after the transfer (core.model), whichever
    # DataModule feeds it; Lightning warns about that hook whenever a DataModule is passed.
    warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule`")
    return CatalogueDataModule(
        catalogue, schema, split, cfg.image_size, data_config(module.net.backbone, cfg.image_size),
        batch_size=cfg.batch_size, num_workers=cfg.num_workers, cache_root=workspace.workspace_dir(),
        max_samples=cfg.max_samples, seed=cfg.seed, train_scale=(0.7, 1.0) if cfg.augment else (1.0, 1.0),
        progress=progress,
    )
