"""A rough time and memory hint for a training config, before it starts (the Train form)."""

from __future__ import annotations

import math
from typing import Any

import torch

from training.config import TrainConfig, resolve_precision
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


def estimate(cfg: TrainConfig, rows: int) -> dict[str, Any]:
    """A rough time and memory hint for training `cfg` on a catalogue of `rows` rows.

    time per epoch = (train images x train ms + val images x eval ms) x (image_size / 224)^2
                     x activation size relative to lite0 [/ CPU cores over 2, or / GPUs]
    A frozen backbone trains at the eval cost (no backward through it) and keeps no activations.
    memory per device = parameters x 16 bytes + batch x activations per image x (image_size / 224)^2,
                        halved for 16-bit precisions.
    Returns train_images, val_images, steps_per_epoch, device ("cpu" | "gpu"), seconds_per_epoch,
    seconds_total (all `epochs`; early stopping may end sooner), memory_gib, assumption (text).
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    used = rows if cfg.max_samples is None else min(rows, cfg.max_samples)
    val_images = round(used * cfg.val_fraction)
    train_images = used - val_images
    known = cfg.backbone in BACKBONE_COSTS
    params_m, activation_mib = BACKBONE_COSTS[cfg.backbone if known else REFERENCE_BACKBONE]
    pixels = (cfg.image_size / 224) ** 2
    scale = pixels * activation_mib / BACKBONE_COSTS[REFERENCE_BACKBONE][1]
    on_gpu = cfg.accelerator != "cpu" and torch.cuda.is_available()
    if on_gpu:
        train_ms, eval_ms = GPU_TRAIN_MS, GPU_EVAL_MS
        parallel = cfg.devices if isinstance(cfg.devices, int) else torch.cuda.device_count()
        assumption = "GPU speed of an H200 in bf16 (DESIGN.md); older GPUs or fp32 are several times slower"
    else:
        train_ms, eval_ms = CPU_TRAIN_MS, CPU_EVAL_MS
        parallel = torch.get_num_threads() / CPU_CORES_MEASURED
        assumption = f"CPU speed measured on {CPU_CORES_MEASURED} cores"
        if torch.get_num_threads() != CPU_CORES_MEASURED:
            assumption += f", scaled to {torch.get_num_threads()} threads (optimistic)"
    if cfg.freeze_backbone:
        train_ms = eval_ms
    if not known:
        assumption += f"; {cfg.backbone} not measured: costed like {REFERENCE_BACKBONE}"
    assumption += "; start-up (imports, weights, building the image cache once) not counted"
    seconds_per_epoch = (train_images * train_ms + val_images * eval_ms) * scale / 1000 / parallel
    activations = 0.0 if cfg.freeze_backbone else cfg.batch_size * activation_mib * pixels * 2**20
    if "16" in resolve_precision(cfg):
        activations /= 2
    return {
        "train_images": train_images, "val_images": val_images,
        "steps_per_epoch": math.ceil(train_images / cfg.batch_size), "device": "gpu" if on_gpu else "cpu",
        "seconds_per_epoch": seconds_per_epoch, "seconds_total": seconds_per_epoch * cfg.epochs,
        "memory_gib": (params_m * 1e6 * OPTIMISER_BYTES_PER_PARAM + activations) / 2**30,
        "assumption": assumption,
    }
