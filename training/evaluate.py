"""Evaluate a run: its model's probabilities over a catalogue's rows (`predict`), scored through
its trust layer and written by core.evaluation.files, and the label issues they point at.

`evaluate_checkpoint` evaluates a checkpoint after training (`python -m training evaluate`);
`evaluate_rows` scores a module on a catalogue's rows (`train` scores the test part with it); `train`
and `crossval` predict their validation rows with their module in memory and write through
core.evaluation.files.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from core.data.catalogue import Catalogue, load_catalogue
from core.data.schema import LabelSchema
from core.evaluation.files import is_complete, load_evaluation, write_evaluation
from core.evaluation.label_issues import rank_evaluation, read_issues
from core.images.transforms import data_config
from core.model.module import TaggerModule
from core.trust.layer import Trust
from training.builders import build_datamodule, run_precision
from training.checkpoints import load_run_module
from training.config import TrainConfig
from training.rows import FixedTestState, run_catalogue, run_rows, run_split, run_test_part
from training.run_folder import TEST_PART, RunFolder, evaluation_name
from training.scale import RayCluster, ray_evaluation


def predict(module: TaggerModule, loader: DataLoader, accelerator: str = "auto",
            precision: str = "32-true") -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Run `loader` through the module on one device -> (ids int64 [n], head -> probs float32 [n, C],
    the backbone's pooled features float32 [n, D] at the half precision an evaluation keeps them in,
    so a calibration refitted from the kept ones is the one fitted now)."""
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, logger=False,
                        enable_progress_bar=False, enable_model_summary=False)
    outputs = trainer.predict(module, dataloaders=loader)
    ids = torch.cat([batch["id"] for batch in outputs]).numpy()
    probs = {head: torch.cat([batch["probs"][head].float() for batch in outputs]).numpy() for head in module.heads}
    return ids, probs, torch.cat([batch["features"].half().float() for batch in outputs]).numpy()


def evaluate_checkpoint(folder: str | Path, data: str | Path | None = None, which: str = "best",
                        cluster: RayCluster | None = None, test_part: bool = False) -> tuple[Path, dict]:
    """Evaluate the run's checkpoint `which` through its trust layer and write the evaluation files;
    its probabilities computed here, or on the Ray cluster (training.scale; in float32 there).

    data: None evaluates the run's own validation split (the same rows as at training time) into
    `<run>/evaluation/`, or with test_part its dataset's fixed test part (training.rows.run_test_part)
    into `<run>/evaluation.test-part/`; a catalogue folder evaluates every row of it into
    `<run>/evaluation-<name>/` (`evaluation_name`), leaving the others as they are.
    Returns (the evaluation folder, its report). ValueError for data with test_part, or a run without
    a test part (saying why).
    """
    if data is not None and test_part:
        raise ValueError("evaluate a run on another catalogue (--data) or on its dataset's test part, not both")
    run = RunFolder(folder)
    checkpoint = run.checkpoint(which)
    module, cfg, schema, trust = load_run_module(folder, which)
    split = None
    if data is not None:  # every row of another catalogue
        catalogue = load_catalogue(data)
    else:  # the run's own rows, with the corrections it trained on
        catalogue = run_catalogue(cfg, run.path)
        split = run_split(cfg, catalogue, run)
        if test_part:
            test = run_test_part(cfg, catalogue, split)
            if test.state != FixedTestState.SCORED:
                raise ValueError(f"run {run.path.name} has no test part: {test.describe()}")
            catalogue, split = test.catalogue, None
        else:
            catalogue, split = run_rows(catalogue, split)
    target = run.evaluation(TEST_PART if test_part else evaluation_name(data))
    return target, evaluate_rows(module, cfg, catalogue, schema, trust, target, checkpoint.name, split, cluster,
                                 run.path, which)


def evaluate_rows(module: TaggerModule, cfg: TrainConfig, catalogue: Catalogue, schema: LabelSchema,
                  trust: Trust | None, target: Path, checkpoint: str, split: pd.Series | None = None,
                  cluster: RayCluster | None = None, folder: Path | None = None, which: str = "best") -> dict:
    """Score `module` (a run's model, `checkpoint` names it) on `catalogue`'s rows through `trust` and write
    the evaluation into `target`; returns its report.

    split: "train"/"val" per catalogue row: its "val" rows are scored, as the run's validation split
    (core.evaluation.files.write_evaluation's validation_split); None: every row, none of them the
    run's validation rows. cluster: the probabilities come from the Ray cluster, which loads the
    checkpoint `which` of run folder `folder` itself; None: from `module`, here."""
    validation = split is not None
    datamodule = build_datamodule(cfg, catalogue, schema, split if validation else
                                  pd.Series("val", index=catalogue.frame.index), module)
    datamodule.setup("validate")
    if cluster is None:
        ids, probs, features = predict(module, datamodule.val_dataloader(), cfg.accelerator, run_precision(cfg))
    else:
        rows = datamodule.val_set
        ids, probs, features = ray_evaluation(cluster, folder, which, rows.folder, rows.ids,
                                              data_config(module.net.backbone, cfg.image_size), module.heads,
                                              cfg.batch_size)
    return write_evaluation(catalogue, schema, ids, probs, target, checkpoint, trust, validation_split=validation,
                            features=features)


def label_issues(folder: str | Path) -> pd.DataFrame:
    """The ranked label issues (core.evaluation.label_issues) of a cross-validation folder, as it saved them,
    or of a run folder, ranked now from its validation evaluation. FileNotFoundError when the
    folder holds neither."""
    run = RunFolder(folder)
    if run.label_issues.is_file():
        return read_issues(run.label_issues)
    if not (run.schema.is_file() and is_complete(run.evaluation())):
        raise FileNotFoundError(
            f"{run.path} holds neither {run.label_issues.name} (python -m training crossval writes one) nor a "
            "run's schema.json and complete evaluation/")
    return rank_evaluation(load_evaluation(run.evaluation()).predictions, LabelSchema.load(run.schema).classes)
