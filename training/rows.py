"""The rows a run is made of, decided once when it starts and kept in its folder: its catalogue (with
the label store's corrections when it trains on them), its split, its training rows and their class
counts. `train`, `evaluate`, `calibrate` and data health all read them from here, so a run and every
later look at it see the same rows and labels. Imports no torch: data health's first view reads a
run's split without it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from core import workspace
from core.data.catalogue import Catalogue, DatasetKey, load_catalogue
from core.data.schema import IGNORE_INDEX, LabelSchema
from core.data.split import capped_selection, split_catalogue, split_catalogue_grouped
from core.health.files import near_duplicate_groups
from core.labels.corrections import apply_corrections, corrections_snapshot
from core.labels.store import LabelStore
from training.config import SplitStrategy, TrainConfig, uses_cuda
from training.machine import Machine
from training.run_folder import RunFolder


def with_dataset(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with its dataset folder decided and resolved (`DatasetKey`): cfg.data, else
    FASHION_TAGGER_DATA, else the demo dataset (generated if needed)."""
    folder = cfg.data or workspace.configured_dataset_dir() or workspace.ensure_demo()
    return dataclasses.replace(cfg, data=str(DatasetKey.of(folder)))


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
        store = LabelStore(workspace=workspace.workspace_dir())
        snapshot.write_text(json.dumps(corrections_snapshot(store, catalogue.root)))
    return apply_corrections(catalogue, json.loads(snapshot.read_text()))


def run_split(cfg: TrainConfig, catalogue: Catalogue, run: RunFolder) -> pd.Series:
    """The rows the run uses, "train"/"val" by product id: as its folder keeps them, else decided now
    (`decide_split`) and kept there, so it is decided once per run whatever asks first."""
    split = run.read_split()
    return split if split is not None else run.keep_split(decide_split(cfg, catalogue))


def decide_split(cfg: TrainConfig, catalogue: Catalogue) -> pd.Series:
    """"train"/"val" by product id for the rows a run of `cfg` uses: the split of the catalogue's own
    rows (the same as a run without corrections, but for relabelled rows), reviewed new photos always
    in training, then capped by cfg.max_samples (`capped_selection`, each part's share kept).

    cfg.split "grouped" keeps near-duplicate photos together: their groups come from the pretrained
    backbone's embeddings, computed once per dataset and cached in the workspace (on the run's GPU
    when it has one)."""
    frame = catalogue.frame
    added = frame["id"].isin(list(catalogue.extra_images)).to_numpy()
    split = pd.Series("train", index=frame.index)
    own = frame[~added]
    if cfg.split == SplitStrategy.GROUPED:
        groups = near_duplicate_groups(catalogue, workspace.workspace_dir(), cfg.group_similarity,
                                       ids=own["id"].tolist(),
                                       device="cuda" if uses_cuda(cfg, Machine.from_torch(details=False)) else "cpu")
        split[~added] = split_catalogue_grouped(own, groups, val_fraction=cfg.val_fraction, seed=cfg.seed)
    else:
        split[~added] = split_catalogue(own, val_fraction=cfg.val_fraction, seed=cfg.seed)
    ids = frame["id"].to_numpy()
    used = capped_selection(ids, split.to_numpy(), cfg.max_samples, cfg.seed)
    return pd.Series(split.to_numpy()[used], index=pd.Index(ids[used], name="id"), name="split")


def run_rows(catalogue: Catalogue, split: pd.Series) -> tuple[Catalogue, pd.Series]:
    """The catalogue cut to the rows of `split` (by id, `run_split`'s), and their part per row of it:
    what a run's DataModule takes. Rows the catalogue has lost since are left out."""
    frame = catalogue.frame
    kept = frame[frame["id"].isin(split.index)].reset_index(drop=True)
    return dataclasses.replace(catalogue, frame=kept), pd.Series(split.loc[kept["id"]].to_numpy(), index=kept.index)


def training_rows(catalogue: Catalogue, split: pd.Series) -> pd.DataFrame:
    """The catalogue rows the run trains on (`split`'s "train" part, by id)."""
    frame = catalogue.frame
    return frame[frame["id"].isin(split.index[split == "train"])]


def class_counts(schema: LabelSchema, rows: pd.DataFrame) -> dict[str, list[int]]:
    """Training rows per class of each head, in class-index order (ignored labels not counted)."""
    labels = schema.encode(rows)
    counts = {}
    for column, head in enumerate(schema.heads):
        kept = labels[:, column][labels[:, column] != IGNORE_INDEX]
        counts[head] = np.bincount(kept, minlength=len(schema.classes[head])).tolist()
    return counts
