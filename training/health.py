"""Data health (core.health.files) under a run's model or the pretrained backbone, and the split whose
leakage it counts: what `python -m training health` and the Data health page share.

It lives under training because a run's model and split are training's: the run's best checkpoint
gives the backbone (core never imports training), and its config rebuilds the exact rows it
trained and validated on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from core import workspace
from core.data.catalogue import Catalogue, same_dataset
from core.health.embeddings import ModelIdentity, pretrained_identity
from core.health.files import Health, HealthFolder, Progress, compute_health, health_folder
from training.config import TrainConfig
from training.registry import RunRecord
from training.rows import decide_split, run_catalogue, run_split
from training.run_folder import RunFolder
from training.scale import RayCluster, ray_embedder

if TYPE_CHECKING:
    from core.health.embedder import EmbeddingModel


def model_identity(record: RunRecord | None) -> ModelIdentity:
    """Which model a health computation uses: the run's best checkpoint, or without a run the
    offline pretrained backbone. Cheap: nothing is loaded. FileNotFoundError when the run has no
    best checkpoint."""
    if record is None:
        return pretrained_identity()
    checkpoint = RunFolder(record.folder).checkpoint("best")
    stat = checkpoint.stat()
    config = record.config
    return ModelIdentity(f"run-{record.id}-best", f"{checkpoint.name} {stat.st_size} {stat.st_mtime_ns}",
                         f"run {record.id} ({config.get('backbone')}, best checkpoint), {config.get('image_size')} px")


def embedding_model(record: RunRecord | None) -> EmbeddingModel:
    """The backbone of the run's best checkpoint (or the pretrained one) with the data config the
    run was trained at, in eval mode on the CPU."""
    # torch: only computing embeddings needs it (core.health.files says why it is imported here)
    from core.health.embedder import EmbeddingModel, pretrained_model
    from core.images.transforms import data_config
    from training.checkpoints import load_run_module

    if record is None:
        return pretrained_model()
    module, cfg, *_ = load_run_module(record.folder, "best")
    backbone = module.inference_net.backbone.eval()
    return EmbeddingModel(model_identity(record), backbone, data_config(backbone, cfg.image_size))


def folder_of(catalogue: Catalogue, record: RunRecord | None) -> HealthFolder:
    """Where the catalogue's health under the run's model (or the pretrained one) is kept."""
    return health_folder(workspace.workspace_dir(), catalogue.root, model_identity(record).key)


def compute(catalogue: Catalogue, record: RunRecord | None, device: str = "cpu",
            progress: Progress | None = None, cluster: RayCluster | None = None) -> Health:
    """Compute and write the catalogue's health under the run's model (or the pretrained one), its
    embeddings here (on `device`) or on the Ray cluster."""
    if cluster is None:
        return compute_health(catalogue, embedding_model(record), workspace.workspace_dir(), device=device,
                              progress=progress, engine=f"local ({device})")
    cluster.connect()
    return compute_health(catalogue, embedding_model(record), workspace.workspace_dir(), progress=progress,
                          embed=ray_embedder(cluster), engine=cluster.describe())


def default_split(catalogue: Catalogue) -> pd.Series:
    """The split a new run of the catalogue gets by default ("train"/"val" by id; the dataset's fixed
    test part in neither)."""
    return decide_split(TrainConfig(), catalogue)


def health_split(catalogue: Catalogue, record: RunRecord | None) -> tuple[pd.Series, str]:
    """The split whose leakage is counted, "train"/"val" by id, and what it is, in words.

    A run trained on this catalogue: the rows it trained and validated on (its split, its
    corrections, its max_samples cap; rows it did not use are in neither). Otherwise the
    catalogue's default split."""
    if record is None or not same_dataset(record.config["data"], catalogue.root):
        why = "" if record is None else f" (run {record.id} trained on another catalogue)"
        return default_split(catalogue), f"the default split of a new run{why}"
    run = RunFolder(record.folder)
    split = run.read_split()
    if split is None:  # a run from before runs kept their split: decided now (torch only for a grouped one), and kept
        cfg = TrainConfig.from_dict(record.config)
        split = run_split(cfg, run_catalogue(cfg, run.path), run)
    return split, f"the split of run {record.id}"

