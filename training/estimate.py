"""A rough time and memory hint for a training config before it starts, and the valid but unlikely
settings to warn about (the Train form)."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from core.data.split import SPLITS, capped_selection
from training.config import Accelerator, TrainConfig, resolve_precision
from training.machine import Machine
from training.registry import RunRecord, RunState

# Rough by design: it says which order of magnitude to expect (seconds, minutes, hours) and
# whether a batch fits, not a forecast.
# tf_efficientnet_lite0 at 224 px on 2 CPU cores (DESIGN.md, "Pretrained weights without a network").
CPU_TRAIN_MS, CPU_EVAL_MS, CPU_CORES_MEASURED = 74.0, 26.0, 2
# efficientnet_b0 (lite0's size) at 224 px, bf16 + channels_last on an H200: 4,895 img/s training,
# 17,143 inference (DESIGN.md). A smaller GPU, or fp32, is several times slower.
GPU_TRAIN_MS, GPU_EVAL_MS = 1000 / 4895, 1000 / 17143
# (parameters in millions, MiB of tensors saved for backward per 224-px fp32 image), measured on
# the timm models with torch.autograd.graph.saved_tensors_hooks. The activation size relative to
# lite0 also scales the time: on these convnets it tracks compute about as well as FLOPs do
# (efficientnet_b3: 2.2x by activations, 2.5x measured on CPU).
BACKBONE_COSTS = {
    "tf_efficientnet_lite0": (3.37, 79.1), "tf_efficientnet_lite1": (4.14, 102.1),
    "tf_efficientnet_lite2": (4.81, 107.5), "tf_efficientnet_lite3": (6.92, 140.3),
    "tf_efficientnet_lite4": (11.73, 187.1), "efficientnet_b0": (4.01, 88.0), "efficientnet_b3": (10.70, 172.9),
    "mobilenetv3_large_100": (4.20, 54.9), "resnet50": (23.51, 146.8), "convnext_tiny": (27.82, 130.6),
}
REFERENCE_BACKBONE = "tf_efficientnet_lite0"
OPTIMISER_BYTES_PER_PARAM = 16  # fp32 weights, gradients and AdamW's two moments
MAX_USUAL_LR = 0.1  # above this, AdamW on these nets diverges (lr=50 gave NaN losses)


def split_sizes(cfg: TrainConfig, ids: np.ndarray, parts: np.ndarray) -> tuple[int, int]:
    """(training images, validation images) a run of `cfg` uses of a catalogue whose rows are `ids`
    in `parts` ("train"/"val" per row, or neither: the test part; as training.rows.catalogue_parts
    gives them): the same counts as the run's, max_samples' cap included."""
    parts = np.asarray(parts, dtype=object)
    in_split = np.isin(parts, SPLITS)
    split = parts[in_split]
    used = capped_selection(np.asarray(ids)[in_split], split, cfg.max_samples, cfg.seed)
    return int((used & (split == "train")).sum()), int((used & (split == "val")).sum())


def _scale(config: Mapping[str, Any]) -> float:
    """Cost of one image (a config's backbone and image size) relative to lite0 at 224 px:
    pixels x activation size."""
    backbone, size = config["backbone"], config["image_size"]
    activation = BACKBONE_COSTS.get(backbone, BACKBONE_COSTS[REFERENCE_BACKBONE])[1]
    return (size / 224) ** 2 * activation / BACKBONE_COSTS[REFERENCE_BACKBONE][1]


def _on_gpu(cfg: TrainConfig, machine: Machine) -> bool:
    return cfg.accelerator != Accelerator.CPU and bool(machine.gpus)


def measured_rate(cfg: TrainConfig, runs: Sequence[RunRecord], machine: Machine) -> tuple[float, RunRecord] | None:
    """(training images per second, the run it comes from) for `cfg` on this machine: the newest
    finished run of this host on the same kind of device that recorded its rate (training images
    over the fit's wall time, validation included), scaled to cfg's image size and backbone; None
    without one."""
    on_cpu = not _on_gpu(cfg, machine)
    for record in runs:  # newest first
        rate = (record.timings or {}).get("train_images_per_s")
        if (record.status == RunState.FINISHED and rate and record.host == socket.gethostname()
                and (record.device or "").startswith("cpu") == on_cpu
                and bool(record.config.get("freeze_backbone")) == cfg.freeze_backbone):
            return rate * _scale(record.config) / _scale(cfg.to_dict()), record
    return None


def estimate(cfg: TrainConfig, train_images: int, val_images: int, runs: Sequence[RunRecord] = (),
             machine: Machine | None = None) -> dict[str, Any]:
    """A rough time and memory hint for training `cfg` on `train_images` and `val_images` a epoch
    (`split_sizes`), on `machine` (default: this one, `Machine.probe`).

    Time: from the rate a finished run of this machine measured (`measured_rate`, scaled to cfg's
    image size and backbone): seconds per epoch = training images / that rate. Without one, from
    the constants above: (train images x train ms + val images x eval ms) x (image_size / 224)^2
    x activation size relative to lite0 [/ CPU cores over 2, or / GPUs]; a frozen backbone trains
    at the eval cost.
    Memory per device = parameters x 16 bytes + batch x activations per image x (image_size / 224)^2,
    halved for 16-bit precisions; a frozen backbone keeps no activations.
    Returns train_images, val_images, steps_per_epoch, device ("cpu" | "gpu"), seconds_per_epoch,
    seconds_total (all `epochs`; early stopping may end sooner), memory_gib, assumption (text).
    """
    if train_images < 0 or val_images < 0:
        raise ValueError(f"image counts must be >= 0, got {train_images} and {val_images}")
    machine = machine or Machine.probe()
    known = cfg.backbone in BACKBONE_COSTS
    params_m, activation_mib = BACKBONE_COSTS[cfg.backbone if known else REFERENCE_BACKBONE]
    pixels = (cfg.image_size / 224) ** 2
    on_gpu = _on_gpu(cfg, machine)
    measured = measured_rate(cfg, runs, machine)
    if measured is not None:
        rate, record = measured
        seconds_per_epoch = train_images / rate
        assumption = (f"measured: run {record.id} trained at {record.timings['train_images_per_s']:.1f} images/s on "
                      f"this machine ({record.config['backbone']}, {record.config['image_size']} px), scaled to "
                      "this size and backbone")
    else:
        if on_gpu:
            train_ms, eval_ms = GPU_TRAIN_MS, GPU_EVAL_MS
            parallel = cfg.devices if isinstance(cfg.devices, int) else len(machine.gpus)
            assumption = "GPU speed of an H200 in bf16 (DESIGN.md); older GPUs or fp32 are several times slower"
        else:
            train_ms, eval_ms = CPU_TRAIN_MS, CPU_EVAL_MS
            parallel = machine.cpu_threads / CPU_CORES_MEASURED
            assumption = f"no run measured on this machine yet: CPU speed of a quiet {CPU_CORES_MEASURED}-core machine"
            if machine.cpu_threads != CPU_CORES_MEASURED:
                assumption += f", scaled to {machine.cpu_threads} threads (optimistic)"
        if cfg.freeze_backbone:
            train_ms = eval_ms
        if not known:
            assumption += f"; {cfg.backbone} not measured: costed like {REFERENCE_BACKBONE}"
        seconds_per_epoch = (train_images * train_ms + val_images * eval_ms) * _scale(cfg.to_dict()) / 1000 / parallel
    assumption += "; start-up (imports, weights, building the image cache once) not counted"
    activations = 0.0 if cfg.freeze_backbone else cfg.batch_size * activation_mib * pixels * 2**20
    if "16" in resolve_precision(cfg, machine):
        activations /= 2
    return {
        "train_images": train_images, "val_images": val_images,
        "steps_per_epoch": math.ceil(train_images / cfg.batch_size), "device": "gpu" if on_gpu else "cpu",
        "seconds_per_epoch": seconds_per_epoch, "seconds_total": seconds_per_epoch * cfg.epochs,
        "memory_gib": (params_m * 1e6 * OPTIMISER_BYTES_PER_PARAM + activations) / 2**30,
        "assumption": assumption,
    }


def doubts(cfg: TrainConfig, hint: dict[str, Any], machine: Machine | None = None) -> list[str]:
    """Valid but unlikely settings, one sentence each, to warn about before Start: more devices or
    workers than `machine` (default: this one) has, more memory than it has, a learning rate far above
    AdamW's usual range, a batch larger than the training rows."""
    machine, found = machine or Machine.probe(), []
    if hint["device"] == "gpu":
        devices, kind, memory = len(machine.gpus), "GPU(s)", machine.gpus[0].memory_gib
    else:
        devices, kind, memory = os.cpu_count() or 1, "CPU cores", machine.memory_gib
    if isinstance(cfg.devices, int) and cfg.devices > devices:
        found.append(f"devices={cfg.devices}, but this machine has {devices} {kind}.")
    if cfg.num_workers > (os.cpu_count() or 1):
        found.append(f"{cfg.num_workers} loader workers, but this machine has {os.cpu_count()} CPU cores.")
    if hint["memory_gib"] > memory:
        found.append(f"About {hint['memory_gib']:.1f} GiB of memory per device is needed, and this machine has "
                     f"{memory:.1f} GiB: lower the batch size or the image size.")
    if cfg.lr > MAX_USUAL_LR:
        found.append(f"lr={cfg.lr:g} is far above AdamW's usual 1e-4 to 1e-2: training will likely diverge.")
    if cfg.batch_size > hint["train_images"] > 0:
        found.append(f"A batch of {cfg.batch_size} is larger than the {hint['train_images']:,} training images: "
                     "one step an epoch.")
    return found
