"""One training step on the CPU in each memory format: NCHW (contiguous) against NHWC (channels_last).

    python tests/benchmarks/bench_memory_format.py [--size 160] [--batch 32] [--steps 5] [--threads N]
        [--backbones tf_efficientnet_lite0 tf_efficientnet_lite2]

A step is what `TaggerModule.training_step` costs the CPU: the backbone (offline ImageNet weights)
forward on random images, a sum as the loss, backward and an AdamW step. The two formats alternate
step by step, so a change in the machine's speed hits both alike; the first step of each is a warm-up
and not counted. Prints the median ms per image of each and NCHW / NHWC: what `channels_last="auto"`
gains on the CPU (training.config.resolve_channels_last).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from core.model.backbones import create_backbone, offline_backbones  # noqa: E402

FORMATS = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}


def step_seconds(model: torch.nn.Module, optimiser: torch.optim.Optimizer, images: torch.Tensor) -> float:
    started = time.perf_counter()
    model(images).sum().backward()
    optimiser.step()
    optimiser.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="counted steps per format (after one warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's own)")
    parser.add_argument("--backbones", nargs="+", default=offline_backbones())
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{torch.backends.cpu.get_cpu_capability()}; {args.size} px, batch {args.batch}, {args.steps} steps each")
    print(f"{'backbone':<24} {'NCHW ms/img':>12} {'NHWC ms/img':>12} {'NCHW / NHWC':>12}")
    for name in args.backbones:
        model, _ = create_backbone(name, "offline")
        model.train()
        optimiser = torch.optim.AdamW(model.parameters())
        images = torch.randn(args.batch, 3, args.size, args.size)
        times: dict[str, list[float]] = {label: [] for label in FORMATS}
        for step in range(args.steps + 1):
            for label, memory_format in FORMATS.items():
                model.to(memory_format=memory_format)
                seconds = step_seconds(model, optimiser, images.contiguous(memory_format=memory_format))
                if step:
                    times[label].append(seconds)
        nchw, nhwc = (1000 * statistics.median(times[label]) / args.batch for label in FORMATS)
        print(f"{name:<24} {nchw:>12.1f} {nhwc:>12.1f} {nchw / nhwc:>11.2f}x")


if __name__ == "__main__":
    main()
