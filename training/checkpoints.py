"""A run's checkpoints: what they hold, and the model (or a Predictor) rebuilt from one.

Every checkpoint carries the run's config and label schema (under CHECKPOINT_KEY, put there by
training.train) and the module's class counts (its hyper-parameters), so it rebuilds the net on
its own: the backbone starts from no weights at all (pretrained="none") and the checkpoint
supplies every one. Which file is "best" or "last" is training.run_folder's business.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.data.schema import LabelSchema
from core.model import TaggerModule
from core.prediction import Predictor
from training.builders import build_module
from training.config import TrainConfig
from training.run_folder import RunFolder

CHECKPOINT_KEY = "fashion_tagger"  # the checkpoint entry holding the run's config and schema
PREDICT_DEVICES = ("auto", "cpu", "cuda")  # auto: the first CUDA GPU when torch sees one, else the CPU


def checkpoint_payload(cfg: TrainConfig, schema: LabelSchema) -> dict:
    """What every checkpoint of a run carries under CHECKPOINT_KEY."""
    return {"config": cfg.to_dict(), "schema": schema.to_dict()}


def load_run_module(folder: str | Path, which: str = "best") -> tuple[TaggerModule, TrainConfig, LabelSchema]:
    """The run's TaggerModule with the weights of checkpoint `which` (`RunFolder.checkpoint`), in
    eval mode on the CPU, with the config and label schema the checkpoint was trained with."""
    checkpoint = torch.load(RunFolder(folder).checkpoint(which), map_location="cpu", weights_only=True)
    cfg = TrainConfig.from_dict(checkpoint[CHECKPOINT_KEY]["config"])
    schema = LabelSchema.from_dict(checkpoint[CHECKPOINT_KEY]["schema"])
    module, _ = build_module(cfg, schema, checkpoint["hyper_parameters"]["class_counts"], pretrained="none")
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    return module.eval(), cfg, schema


def load_weights(module: TaggerModule, checkpoint: Path) -> TaggerModule:
    """Load a Lightning checkpoint's weights into `module` (strict) and return it."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state, strict=True)
    return module


def predict_device(name: str) -> torch.device:
    """The device PREDICT_DEVICES' `name` stands for here; ValueError naming the choices for an
    unknown name, and saying what to do when "cuda" is asked for without a GPU."""
    if name not in PREDICT_DEVICES:
        raise ValueError(f"device must be one of {', '.join(PREDICT_DEVICES)}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda: torch sees no CUDA GPU on this machine; use cpu or auto")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def load_predictor(folder: str | Path, which: str = "best", run_id: str | None = None, device: str = "cpu") -> Predictor:
    """A Predictor over the run's checkpoint `which` on `device` (see `predict_device`; the
    dashboard keeps the CPU, leaving a GPU to training), at the image size the run was trained at;
    `run_id` is kept for display. Predictions run in channels_last memory format: faster for these
    convolutions on the CPU too, and the same numbers within 1e-5."""
    target = predict_device(device)
    module, cfg, schema = load_run_module(folder, which)
    return Predictor(module.to(target), schema, cfg.image_size, run_id=run_id, channels_last=True,
                     checkpoint=RunFolder(folder).checkpoint(which).name)
