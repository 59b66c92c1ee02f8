"""A run's checkpoints: find one, rebuild the model (or a Predictor) from it, and evaluate it on a catalogue.

Every checkpoint carries the run's config and label schema (`train.CHECKPOINT_KEY`) and the
module's class counts (its hyper-parameters), so it rebuilds the net on its own: the backbone
starts from no weights at all (pretrained="none") and the checkpoint supplies every one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import torch

from core import workspace
from core.data.catalogue import load_catalogue
from core.data.schema import LabelSchema
from core.datamodule import CatalogueDataModule
from core.evaluation import VALIDATION
from core.model import TaggerModule
from core.prediction import Predictor
from core.transforms import data_config
from training.config import TrainConfig, resolve_channels_last, resolve_precision
from training.evaluate import predict, write_evaluation
from training.train import CHECKPOINT_KEY, build_module, run_catalogue, run_paths, run_split

CHECKPOINT_CHOICES = ("best", "last")


def checkpoint_path(folder: str | Path, which: str = "best") -> Path:
    """The checkpoint file `which` of the run in `folder`.

    which: "best" (best.ckpt; a run cancelled before its end has none, then the one
    `epochNNN.ckpt` its top-1 ModelCheckpoint keeps), "last", or a file name in checkpoints/.
    Raises FileNotFoundError naming the checkpoints there are.
    """
    paths = run_paths(Path(folder))
    folder_files = sorted(path.name for path in paths["checkpoints"].glob("*.ckpt"))
    if which == "best":
        epochs = [name for name in folder_files if re.fullmatch(r"epoch\d+\.ckpt", name)]
        chosen = paths["best"] if paths["best"].exists() else (
            paths["checkpoints"] / epochs[0] if len(epochs) == 1 else None)
    elif which == "last":
        chosen = paths["last"]
    else:
        chosen = paths["checkpoints"] / which
    if chosen is None or not chosen.is_file():
        raise FileNotFoundError(
            f"no {which!r} checkpoint in {paths['checkpoints']}; it holds: {', '.join(folder_files) or 'nothing'} "
            f"(choose {', '.join(CHECKPOINT_CHOICES)} or one of those file names)"
        )
    return chosen


def has_checkpoint(folder: str | Path | None, which: str = "best") -> bool:
    """Whether the run in `folder` has checkpoint `which` (see `checkpoint_path`)."""
    if not folder:
        return False
    try:
        checkpoint_path(folder, which)
    except FileNotFoundError:
        return False
    return True


def load_run_module(folder: str | Path, which: str = "best") -> tuple[TaggerModule, TrainConfig, LabelSchema]:
    """The run's TaggerModule with the weights of checkpoint `which` (see `checkpoint_path`), in
    eval mode on the CPU, with the config and label schema the checkpoint was trained with."""
    checkpoint = torch.load(checkpoint_path(folder, which), map_location="cpu", weights_only=True)
    cfg = TrainConfig.from_dict(checkpoint[CHECKPOINT_KEY]["config"])
    schema = LabelSchema.from_dict(checkpoint[CHECKPOINT_KEY]["schema"])
    module, _ = build_module(cfg, schema, checkpoint["hyper_parameters"]["class_counts"], pretrained="none")
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    return module.eval(), cfg, schema


PREDICT_DEVICES = ("auto", "cpu", "cuda")  # auto: the first CUDA GPU when torch sees one, else the CPU


def predict_device(name: str) -> torch.device:
    """The device PREDICT_DEVICES' `name` stands for here; ValueError naming the choices for an
    unknown name, and saying what to do when "cuda" is asked for without a GPU."""
    if name not in PREDICT_DEVICES:
        raise ValueError(f"device must be one of {', '.join(PREDICT_DEVICES)}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda: torch sees no CUDA GPU on this machine; use cpu or auto")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def load_predictor(folder: str | Path, which: str = "best", run_id: str | None = None, device: str = "cpu") -> Predictor:
    """A Predictor over the run's checkpoint `which` (see `checkpoint_path`) on `device` (see
    `predict_device`; the dashboard keeps the CPU, leaving a GPU to training), at the image size
    the run was trained at; `run_id` is kept for display."""
    target = predict_device(device)
    module, cfg, schema = load_run_module(folder, which)
    return Predictor(module.to(target), schema, cfg.image_size, run_id=run_id,
                     checkpoint=checkpoint_path(folder, which).name)


def evaluation_name(data: str | Path | None) -> str:
    """The evaluation folder's name: `evaluation` for the run's validation split, else
    `evaluation-<dataset folder name>` (characters other than letters, digits, `.`, `_`, `-` as `_`)."""
    if data is None:
        return VALIDATION
    return f"{VALIDATION}-{re.sub(r'[^A-Za-z0-9._-]', '_', Path(data).resolve().name)}"


def evaluate_checkpoint(folder: str | Path, data: str | Path | None = None, which: str = "best") -> tuple[Path, dict]:
    """Evaluate the run's checkpoint `which` and write the evaluation files (training.evaluate).

    data: None evaluates the run's own validation split (the same rows as at training time) into
    `<run>/evaluation/`; a catalogue folder evaluates every row of it into
    `<run>/evaluation-<name>/` (`evaluation_name`), leaving the validation evaluation as it is.
    True values the run's schema never saw count as errors of their head, reported by name.
    Returns (the evaluation folder, its report).
    """
    folder = Path(folder)
    checkpoint = checkpoint_path(folder, which)
    module, cfg, schema = load_run_module(folder, which)
    if data is None:  # the run's own rows, with the corrections it trained on
        catalogue = run_catalogue(cfg, folder)
        split, max_samples = run_split(cfg, catalogue), cfg.max_samples
    else:
        catalogue = load_catalogue(data)
        split, max_samples = pd.Series("val", index=catalogue.frame.index), None
    if resolve_channels_last(cfg):
        module = module.to(memory_format=torch.channels_last)
    datamodule = CatalogueDataModule(
        catalogue, schema, split, cfg.image_size, data_config(module.net.backbone, cfg.image_size),
        batch_size=cfg.batch_size, num_workers=cfg.num_workers, cache_root=workspace.workspace_dir(),
        max_samples=max_samples, seed=cfg.seed,
    )
    datamodule.setup("validate")
    ids, probs = predict(module, datamodule.val_dataloader(), cfg.accelerator, resolve_precision(cfg))
    target = folder / evaluation_name(data)
    return target, write_evaluation(catalogue, schema, ids, probs, target, checkpoint.name)
