"""A run's checkpoints: what they hold, and the model (or a Predictor) rebuilt from one.

Every checkpoint carries, under CHECKPOINT_KEY, the run's config, label schema and taxonomy
(put there by training.train) and, once the run is calibrated, its calibration (added by
`add_to_checkpoints`), plus the module's class counts (its hyper-parameters). So it rebuilds the
net and its trust layer on its own: the backbone starts from no weights at all (pretrained="none")
and the checkpoint supplies every one. Which file is "best" or "last" is training.run_folder's
business.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from core.data.schema import LabelSchema
from core.model.module import TaggerModule
from core.model.predictor import Predictor
from core.trust.abstention import TARGET_ERROR
from core.trust.layer import Calibration, Trust
from core.trust.taxonomy import Taxonomy
from training.builders import build_module
from training.config import TrainConfig
from training.run_folder import RunFolder

CHECKPOINT_KEY = "fashion_tagger"  # the checkpoint entry holding the run's config, schema, taxonomy, calibration
PREDICT_DEVICES = ("auto", "cpu", "cuda")  # auto: the first CUDA GPU when torch sees one, else the CPU


class CheckpointRefused(ValueError):
    """A checkpoint file read_checkpoint refuses, with one line naming it and why."""


def read_checkpoint(path: Path) -> dict:
    """A run's checkpoint file, read with torch.load(weights_only=True): tensors and plain data only,
    never code. CheckpointRefused naming the file when it would need other Python objects (a crafted
    or foreign file; torch's own refusal is many lines), when its archive is corrupt inside, or when
    it holds no CHECKPOINT_KEY entry (not a checkpoint of a run)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        named = re.search(r"GLOBAL ([\w.]+)", str(error))
        raise CheckpointRefused(
            f"the checkpoint {path} is refused: loading it would need Python objects beyond tensors and plain data"
            f"{f' ({named.group(1)})' if named else ''}, which could run code; a run's checkpoints hold none"
        ) from error
    except RuntimeError as error:  # a whole zip whose members are damaged
        raise CheckpointRefused(f"the checkpoint {path} cannot be read: {str(error).splitlines()[0]}") from error
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointRefused(f"the checkpoint {path} holds no {CHECKPOINT_KEY} entry: not a checkpoint of a "
                                "Fashion Tagger run")
    return checkpoint


def checkpoint_payload(cfg: TrainConfig, schema: LabelSchema, taxonomy: Taxonomy) -> dict:
    """What every checkpoint of a run carries under CHECKPOINT_KEY from the start."""
    return {"config": cfg.to_dict(), "schema": schema.to_dict(), "taxonomy": taxonomy.to_dict()}


def add_to_checkpoints(run: RunFolder, entries: Mapping[str, Any]) -> None:
    """Add `entries` to CHECKPOINT_KEY in every checkpoint file of the run, each replaced atomically;
    hard links (best.ckpt and its epoch file) stay one file."""
    rewritten: dict[tuple[int, int], Path] = {}  # (device, inode) before -> the new file
    for path in run.checkpoint_files():
        stat = path.stat()
        same = rewritten.get((stat.st_dev, stat.st_ino))
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        if same is not None:
            os.link(same, temporary)
        else:
            checkpoint = read_checkpoint(path)
            checkpoint[CHECKPOINT_KEY] = {**checkpoint[CHECKPOINT_KEY], **entries}
            torch.save(checkpoint, temporary)
            rewritten[(stat.st_dev, stat.st_ino)] = path
        os.replace(temporary, path)


def stored_calibration(calibration: Calibration) -> dict:
    """The calibration as a checkpoint holds it: its dict, the gate's reference features a tensor
    (a checkpoint loads with weights_only=True, which takes tensors but no numpy array)."""
    values = calibration.to_dict()
    if values["typicality"] is not None:
        values["typicality"] = {**values["typicality"],
                                "reference": torch.from_numpy(values["typicality"]["reference"])}
    return values


def trust_of(payload: Mapping[str, Any], schema: LabelSchema) -> Trust | None:
    """The trust layer a checkpoint's payload holds: None for a run trained before it existed
    (no taxonomy; `python -m training calibrate` adds it), uncalibrated until calibrated."""
    if "taxonomy" not in payload:
        return None
    calibration = Calibration.from_dict(payload["calibration"]) if "calibration" in payload else None
    return Trust(schema, Taxonomy.from_dict(payload["taxonomy"]), calibration)


def load_run_module(folder: str | Path, which: str = "best"
                    ) -> tuple[TaggerModule, TrainConfig, LabelSchema, Trust | None]:
    """The run's TaggerModule with the weights of checkpoint `which` (`RunFolder.checkpoint`), in
    eval mode on the CPU, with the config, label schema and trust layer (`trust_of`) the
    checkpoint holds. The calibration (temperatures, thresholds, the gate's reference features) was
    fitted on the best checkpoint's predictions and is written into every checkpoint; with another
    checkpoint's weights it certifies nothing, so it is left out there: proposals follow the taxonomy,
    nothing is accepted without a person."""
    run = RunFolder(folder)
    path = run.checkpoint(which)
    checkpoint = read_checkpoint(path)
    payload = checkpoint[CHECKPOINT_KEY]
    cfg = TrainConfig.from_dict(payload["config"])
    schema = LabelSchema.from_dict(payload["schema"])
    module, _ = build_module(cfg, schema, checkpoint["hyper_parameters"]["class_counts"], pretrained="none")
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    trust = trust_of(payload, schema)
    if trust is not None and run.best.exists() and not os.path.samefile(path, run.best):
        trust = Trust(schema, trust.taxonomy)
    return module.eval(), cfg, schema, trust


def load_weights(module: TaggerModule, checkpoint: Path) -> TaggerModule:
    """Load a Lightning checkpoint's weights into `module` (strict) and return it."""
    state = read_checkpoint(checkpoint)["state_dict"]
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


def load_predictor(folder: str | Path, which: str = "best", run_id: str | None = None, device: str = "cpu",
                   target_error: float = TARGET_ERROR) -> Predictor:
    """A Predictor over the run's checkpoint `which` on `device` (see `predict_device`; the
    dashboard keeps the CPU, leaving a GPU to training), at the image size the run was trained at,
    proposing through the run's trust layer and accepting at `target_error`; `run_id` is kept for
    display. Predictions run in channels_last memory format: faster for these convolutions on the
    CPU too, and the same numbers within 1e-5."""
    target = predict_device(device)
    module, cfg, schema, trust = load_run_module(folder, which)
    return Predictor(module.to(target), schema, cfg.image_size, run_id=run_id, channels_last=True,
                     checkpoint=RunFolder(folder).checkpoint(which).name, trust=trust, target_error=target_error)

