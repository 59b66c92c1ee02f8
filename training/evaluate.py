"""Evaluate a run's checkpoint: per-sample probabilities, per-head reports and confusion matrices.

Files written to `<run>/evaluation/`:
    predictions.parquet  one row per image: id; per head `<head>` (true label, None when ignored),
                         `<head>_pred`, `<head>_p` (its probability), `<head>_probs` (all classes,
                         in the schema's class order)
    report.json          {"checkpoint", "rows", "data", "heads": {head: core.metrics report
                         + "unknown_classes": {name: rows}}}
    confusion.json       {head: {"classes": [...], "matrix": [[true x predicted counts]]}}
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from core.data.catalogue import Catalogue
from core.data.schema import LabelSchema
from core.evaluation import count_unknown_classes
from core.metrics import head_reports
from core.model import TaggerModule

SUMMARY_KEYS = ("accuracy", "macro_f1", "weighted_f1", "support", "excluded")


def predict(module: TaggerModule, loader: DataLoader, accelerator: str = "auto",
            precision: str = "32-true") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run `loader` through the module on one device -> (ids int64 [n], head -> probs float32 [n, C])."""
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, logger=False,
                        enable_progress_bar=False, enable_model_summary=False)
    outputs = trainer.predict(module, dataloaders=loader)
    ids = torch.cat([batch["id"] for batch in outputs]).numpy()
    probs = {head: torch.cat([batch["probs"][head].float() for batch in outputs]).numpy() for head in module.heads}
    return ids, probs


def write_evaluation(catalogue: Catalogue, schema: LabelSchema, ids: np.ndarray, probs: dict[str, np.ndarray],
                     folder: Path, checkpoint: str) -> dict:
    """Write the evaluation files for predictions on catalogue `ids`; returns report.json's content.

    True values the schema never saw count as errors of their head, reported by name
    (`core.evaluation.count_unknown_classes`).
    """
    rows = catalogue.frame.set_index("id").loc[ids].reset_index()
    labels = schema.encode(rows)
    reports = head_reports(labels, probs, schema.classes)
    folder.mkdir(parents=True, exist_ok=True)
    columns: dict[str, object] = {"id": ids}
    for column, head in enumerate(schema.heads):
        columns[head] = schema.decode(head, labels[:, column])
        columns[f"{head}_pred"] = schema.decode(head, probs[head].argmax(axis=1))
        columns[f"{head}_p"] = probs[head].max(axis=1)
        columns[f"{head}_probs"] = list(probs[head])
    pd.DataFrame(columns).to_parquet(folder / "predictions.parquet", index=False)
    heads = {head: entry["report"] for head, entry in reports.items()}
    (folder / "report.json").write_text(json.dumps({"checkpoint": checkpoint, "rows": len(ids), "heads": heads}))
    confusion = {head: {"classes": schema.classes[head], "matrix": entry["confusion"]} for head, entry in reports.items()}
    (folder / "confusion.json").write_text(json.dumps(confusion))
    return count_unknown_classes(folder, rows, schema, str(catalogue.root))


def summarise(report: dict) -> dict:
    """{head: {accuracy, macro_f1, weighted_f1, support, excluded}, "mean_macro_f1": float} of a report."""
    heads = report["heads"]
    summary: dict = {head: {key: entry[key] for key in SUMMARY_KEYS} for head, entry in heads.items()}
    summary["mean_macro_f1"] = float(np.mean([entry["macro_f1"] for entry in heads.values()]))
    return summary


def load_weights(module: TaggerModule, checkpoint: Path) -> TaggerModule:
    """Load a Lightning checkpoint's weights into `module` (strict) and return it."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state, strict=True)
    return module
