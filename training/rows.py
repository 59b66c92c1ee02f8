"""The rows a run is made of, decided once when it starts and kept in its folder: its catalogue (with
the label store's corrections when it trains on them), its split, its training rows and their class
counts, and the test part it is scored on. `train`, `evaluate`, `calibrate` and data health all read
them from here, so a run and every later look at it see the same rows and labels. Imports no torch:
data health's first view reads a run's split without it.

The test part: a new run (cfg.test_part, the default) leaves the dataset's fixed test part
(core.data.split.in_test_part) out of training and validation, whatever its seed, split strategy or
max_samples cap, and is scored on all of it after training, so every run of a dataset is scored on
the same rows. Reviewed new photos are never in it (they always train). A catalogue whose test part
would hold fewer than MIN_TEST_ROWS rows keeps them for training and validation, and its runs say
so and have no test score. A grouped run also leaves out the near-duplicates of test-part photos,
so that the test part never scores a near-copy of a training photo. Which rows score a run later is
read from the data (`run_test_part`), not from its config: a run whose split holds test-part rows
(started before runs left it out) has none.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from core import workspace
from core.choices import Choice
from core.data.catalogue import Catalogue, DatasetKey, load_catalogue
from core.data.schema import IGNORE_INDEX, LabelSchema
from core.data.split import (
    MIN_TEST_ROWS,
    SPLITS,
    capped_selection,
    catalogue_test_rows,
    new_run_parts,
)
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
    (`decide_split`) and kept there, so it is decided once per run whatever asks first. A run that has
    checkpoints but no split was trained before runs kept their split, and before the test part: its
    split is decided as it was then, with every row."""
    split = run.read_split()
    if split is not None:
        return split
    if run.checkpoint_files():
        cfg = dataclasses.replace(cfg, test_part=False)
    return run.keep_split(decide_split(cfg, catalogue))


class FixedTestState(Choice):
    """Whether a run is scored on its dataset's fixed test part, and why not."""

    SCORED = "scored"  # left out of training and validation; the run is scored on it
    OFF = "off"  # cfg.test_part is false
    TOO_FEW = "too few rows"  # the catalogue's test part holds fewer than MIN_TEST_ROWS rows: they train
    TRAINED_ON = "trained on"  # the run's split holds rows of it (from before runs left it out, or too few then)


@dataclasses.dataclass(frozen=True)
class FixedTestPart:
    """A run's test part: its state and its rows (SCORED: those it is scored on; TOO_FEW: those the
    catalogue's test part holds; TRAINED_ON: those in the run's split; OFF: none counted)."""

    state: FixedTestState
    rows: int
    catalogue: Catalogue | None = None  # SCORED: the run's catalogue cut to the test part's rows

    def describe(self) -> str:
        return describe_test_part(self.state, self.rows)


def describe_test_part(state: FixedTestState, rows: int) -> str:
    """What a run's test part is (SCORED), or why it has none (a record keeps its state and rows: `FixedTestPart`)."""
    return {
        FixedTestState.SCORED: f"the dataset's fixed test part, {rows:,} rows it never trained or validated on, "
                               "the same for every run of the dataset",
        FixedTestState.OFF: "test_part=false, it trained and validated on every row",
        FixedTestState.TOO_FEW: f"the dataset's test part holds {rows:,} rows, fewer than {MIN_TEST_ROWS}: too few "
                                "to score a run on, they train and validate with the others",
        FixedTestState.TRAINED_ON: f"{rows:,} rows of the dataset's test part are in its split (a run started "
                                   "before runs left the test part out, or while the dataset was too small for one)",
    }[state]


def run_test_part(cfg: TrainConfig, catalogue: Catalogue, split: pd.Series) -> FixedTestPart:
    """The test part a run of `cfg` is scored on, of its catalogue as it is now: the dataset's test part
    (reviewed new photos never in it) when none of its rows is in `split`, the run's; else why it has none."""
    rows = catalogue_test_rows(catalogue.frame, catalogue.added_rows())
    in_split = rows & catalogue.frame["id"].isin(split.index).to_numpy()
    if not cfg.test_part:
        return FixedTestPart(FixedTestState.OFF, 0)
    if rows.sum() < MIN_TEST_ROWS:
        return FixedTestPart(FixedTestState.TOO_FEW, int(rows.sum()))
    if in_split.any():
        return FixedTestPart(FixedTestState.TRAINED_ON, int(in_split.sum()))
    return FixedTestPart(FixedTestState.SCORED, int(rows.sum()),
                         dataclasses.replace(catalogue, frame=catalogue.frame[rows].reset_index(drop=True)))


def catalogue_parts(cfg: TrainConfig, catalogue: Catalogue) -> pd.Series:
    """Each catalogue row's part in a new run of `cfg` before max_samples' cap (index = catalogue.frame's):
    core.data.split.new_run_parts' (TEST for the dataset's test part, reviewed new photos "train", the
    other rows split "train"/"val" by cfg.split, None for a row a grouped run leaves out as a
    near-duplicate of a test-part photo).

    cfg.split "grouped" keeps near-duplicate photos together: their groups come from the pretrained
    backbone's embeddings, computed once per dataset and cached in the workspace (on the run's GPU
    when it has one)."""
    frame, added = catalogue.frame, catalogue.added_rows()
    groups = None
    if cfg.split == SplitStrategy.GROUPED:
        groups = near_duplicate_groups(catalogue, workspace.workspace_dir(), cfg.group_similarity,
                                       ids=frame["id"][~added].tolist(),
                                       device="cuda" if uses_cuda(cfg, Machine.from_torch(details=False)) else "cpu")
    return new_run_parts(frame, added, cfg.val_fraction, cfg.seed, cfg.test_part, groups)


def decide_split(cfg: TrainConfig, catalogue: Catalogue) -> pd.Series:
    """"train"/"val" by product id for the rows a run of `cfg` uses: `catalogue_parts`' (the split of the
    catalogue's own rows but for the test part, the same as a run without corrections but for
    relabelled rows, reviewed new photos always in training), capped by cfg.max_samples
    (`capped_selection`, each part's share kept)."""
    parts = catalogue_parts(cfg, catalogue)
    used = parts.isin(SPLITS).to_numpy()
    ids, split = catalogue.frame["id"].to_numpy()[used], parts.to_numpy()[used]
    kept = capped_selection(ids, split, cfg.max_samples, cfg.seed)
    return pd.Series(split[kept], index=pd.Index(ids[kept], name="id"), name="split")


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
