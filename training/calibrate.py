"""A run's trust layer (core.trust.layer), fitted after training on its validation rows and kept with it:
calibration.json in the run folder and the calibration inside its checkpoints.

`train()` calls `fit_trust` with the validation predictions it has just made. `calibrate_run`
(`python -m training calibrate RUN_ID`) does the same for a run that already has its validation
evaluation, from the saved probabilities and features, without a forward pass: for runs trained
before the trust layer existed (it learns their taxonomy from their training rows first), or to
refit. An evaluation written before features were kept gives no typicality gate: evaluate the run
again (`python -m training evaluate RUN_ID`) first.

`calibrate_source_run` (`python -m training calibrate RUN_ID --source NAME`) certifies one source's
heads on the decisions people made on its photos (core.labels.sources), for photos unlike the
run's validation photos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.access.roles import Actor
from core.data.catalogue import Catalogue
from core.data.schema import LabelSchema
from core.evaluation.files import load_evaluation, read_features, read_report, write_evaluation
from core.labels.sources import calibrate_source, sources
from core.labels.store import LabelStore
from core.trust.layer import TARGETS, Calibration, Trust, fit_calibration
from core.trust.sources import more_rows_needed
from core.trust.taxonomy import Taxonomy
from core.workspace import workspace_dir
from training.checkpoints import add_to_checkpoints, stored_calibration
from training.config import TrainConfig
from training.rows import run_catalogue, run_split, training_rows
from training.run_folder import RunFolder


def fit_trust(run: RunFolder, schema: LabelSchema, taxonomy: Taxonomy, catalogue: Catalogue, ids: np.ndarray,
              probs: dict[str, np.ndarray], features: np.ndarray | None) -> Trust:
    """Fit the calibration on validation rows `ids` (probs: head -> raw softmax [n, C]; features: their
    pooled backbone features [n, D], None: no typicality gate), save it in the run folder and its
    checkpoints; returns the calibrated trust layer."""
    labels = schema.encode(catalogue.frame.set_index("id").loc[ids].reset_index())
    calibration = fit_calibration(schema, taxonomy, ids, labels, probs, features)
    calibration.save(run.calibration)
    add_to_checkpoints(run, {"calibration": stored_calibration(calibration)})
    return Trust(schema, taxonomy, calibration)


def calibrate_run(folder: str | Path) -> dict:
    """Fit (or refit) the trust layer of a run from its validation evaluation, and write that
    evaluation again with it; returns the new report. FileNotFoundError when the run has no
    complete validation evaluation or no checkpoint."""
    run = RunFolder(folder)
    run.checkpoint("best")  # FileNotFoundError naming what there is
    cfg = TrainConfig.from_file(run.config)
    schema = LabelSchema.load(run.schema)
    evaluation = load_evaluation(run.evaluation())
    catalogue = run_catalogue(cfg, run.path)
    if run.taxonomy.is_file():
        taxonomy = Taxonomy.load(run.taxonomy)
    else:
        taxonomy = Taxonomy.fit(training_rows(catalogue, run_split(cfg, catalogue, run)))
        taxonomy.save(run.taxonomy)
        add_to_checkpoints(run, {"taxonomy": taxonomy.to_dict()})
    predictions = evaluation.predictions
    ids = predictions["id"].to_numpy()
    probs = {head: np.stack(predictions[f"{head}_probs"].to_numpy()) for head in schema.heads}
    features = read_features(run.evaluation())
    trust = fit_trust(run, schema, taxonomy, catalogue, ids, probs, features)
    checkpoint = read_report(run.evaluation())["checkpoint"]
    return write_evaluation(catalogue, schema, ids, probs, run.evaluation(), checkpoint, trust, validation_split=True,
                            features=features)


def calibrate_source_run(folder: str | Path, source: str, actor: Actor, dataset: str | Path | None = None) -> dict:
    """Certify a source's heads for a run on the decisions people made on its photos with the run's
    proposals shown (core.labels.sources.calibrate_source), in the workspace's label store; the
    photos' dataset is the run's unless `dataset` names another. Returns, JSON-ready,
    {"run", "source", "dataset", "heads": {head: {"decisions", "targets": {E: {"threshold",
    "more_needed"}}}}} with E as text ("0.02"). FileNotFoundError when the run has no calibration,
    ValueError when the source has no photo in the dataset."""
    run = RunFolder(folder)
    if not run.calibration.is_file():
        raise FileNotFoundError(f"run {run.path.name} has no calibration ({run.calibration}): "
                                f"python -m training calibrate {run.path.name}")
    calibration = Calibration.load(run.calibration)
    root = dataset if dataset is not None else run_catalogue(TrainConfig.from_file(run.config), run.path).root
    store = LabelStore(workspace=workspace_dir())
    known = sources(store, root)
    if source not in known:
        raise ValueError(f"no photo of the source {source!r} in {root}; its sources: "
                         + (", ".join(sorted(known)) or "none yet"))
    certified = calibrate_source(store, root, source, run.path.name, calibration.selections, actor)
    return {"run": run.path.name, "source": source, "dataset": str(root), "heads": {
        head: {"decisions": selection.rows, "targets": {
            str(target): {"threshold": selection.threshold(target, calibration.delta),
                          "more_needed": more_rows_needed(selection, target, calibration.delta)}
            for target in TARGETS}}
        for head, selection in certified.selections.items()}}
