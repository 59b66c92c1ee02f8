"""`default` vs `seed` recipe on the same data, split, backbone and epoch budget, side by side.

    python tests/benchmarks/bench_recipes.py [DATASET_DIR] [--epochs 2] [--image-size 160]
        [--max-samples N] [--set key=value ...]

Both runs use the offline tf_efficientnet_lite0 weights (the seed's B3 needs the hub), the
same seed (so the same split) and the same number of epochs. Prints per-head accuracy and
macro-F1 of each recipe, the difference, and the mean macro-F1 over heads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from training.config import TrainConfig  # noqa: E402
from training.train import train  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "fashion-sample"


def run(recipe: str, args: argparse.Namespace):
    overrides = [f"data={args.data}", "backbone=tf_efficientnet_lite0", "pretrained=offline",
                 f"epochs={args.epochs}", f"image_size={args.image_size}", "num_workers=2", *args.set]
    if args.max_samples:
        overrides.append(f"max_samples={args.max_samples}")
    started = time.perf_counter()
    record = train(TrainConfig.from_recipe(recipe).with_overrides(overrides))
    return record, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", default=str(DEFAULT_DATA))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--set", nargs="*", default=[])
    args = parser.parse_args()
    results = {recipe: run(recipe, args) for recipe in ("seed", "default")}
    seed, default = (results[name][0].metrics["heads"] for name in ("seed", "default"))
    print(f"\ndata {args.data}; lite0 offline, {args.image_size} px, {args.epochs} epochs, "
          f"max_samples={args.max_samples}; {os.cpu_count()} cores")
    for name, (record, seconds) in results.items():
        print(f"{name:8s} run {record.id}  {seconds / 60:.1f} min  train rows {record.metrics['train_rows']}, "
              f"val rows {record.metrics['val_rows']}, {record.timings['train_images_per_s']:.1f} train img/s")
    print(f"\n{'head':15s} {'seed acc':>8s} {'default acc':>11s} {'seed F1':>8s} {'default F1':>10s} {'ΔF1':>7s}")
    for head in seed:
        if head == "mean_macro_f1":
            continue
        print(f"{head:15s} {seed[head]['accuracy']:8.3f} {default[head]['accuracy']:11.3f} "
              f"{seed[head]['macro_f1']:8.3f} {default[head]['macro_f1']:10.3f} "
              f"{default[head]['macro_f1'] - seed[head]['macro_f1']:+7.3f}")
    print(f"{'mean macro-F1':15s} {'':8s} {'':11s} {seed['mean_macro_f1']:8.3f} {default['mean_macro_f1']:10.3f} "
          f"{default['mean_macro_f1'] - seed['mean_macro_f1']:+7.3f}  (ratio {default['mean_macro_f1'] / seed['mean_macro_f1']:.2f})")


if __name__ == "__main__":
    main()
