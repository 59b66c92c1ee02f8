"""`default` vs `seed` recipe on the same data, split, backbone and epoch budget, side by side.

    python tests/benchmarks/bench_recipes.py [DATASET_DIR] [--epochs 2] [--image-size 160]
        [--max-samples N] [--set key=value ...]
    python tests/benchmarks/bench_recipes.py [DATASET_DIR] --compare SEED_RUN DEFAULT_RUN   # no training

Both runs use the offline tf_efficientnet_lite0 weights (the seed's B3 needs the hub), the
same seed (so the same split) and the same number of epochs. Prints per-head accuracy and
macro-F1 of each recipe, the difference, and the mean macro-F1 over heads.

Each run's own report scores a different label space (the seed ignores classes under 500 rows,
the default keeps them or merges them into Other), so the script also scores both runs' saved
validation predictions on common ground: (1) the seed's space, the rows whose true label is one
of the seed's classes, macro-F1 over those classes; (2) every labelled row, macro-F1 over every
true class (a class a run cannot predict scores 0 for it).
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

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402

from core.data.catalogue import load_catalogue  # noqa: E402
from core.data.schema import LabelSchema  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.registry import RunRegistry  # noqa: E402
from training.run_folder import RunFolder  # noqa: E402
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


def common_ground(data: str, seed_folder: Path, default_folder: Path) -> None:
    """Print both runs' accuracy and macro-F1 on the seed's label space and on every labelled row."""
    truth = load_catalogue(data).frame.set_index("id")
    seed_space = LabelSchema.load(RunFolder(seed_folder).schema).classes
    predicted = {name: pd.read_parquet(RunFolder(folder).evaluation() / "predictions.parquet").set_index("id")
                 for name, folder in (("seed", seed_folder), ("default", default_folder))}
    ids = predicted["seed"].index.intersection(predicted["default"].index)
    print(f"\ncommon ground: the same {len(ids):,} validation rows")
    print(f"{'head':15s} | seed's space: {'rows':>5s} {'acc s/d':>13s} {'macro-F1 s/d':>13s} | "
          f"every labelled row: {'rows':>5s} {'acc s/d':>13s} {'macro-F1 s/d':>13s}")
    means = {"seed space": [], "all rows": []}
    for head, classes in seed_space.items():
        true = truth.loc[ids, head]
        cells = []
        for space, rows, labels in (("seed space", true.isin(classes).to_numpy(), list(classes)),
                                    ("all rows", true.notna().to_numpy(), sorted(true.dropna().unique()))):
            t = true[rows].astype(str).to_numpy()
            scores = [(accuracy_score(t, p), f1_score(t, p, labels=labels, average="macro", zero_division=0))
                      for p in (predicted[name].loc[ids, f"{head}_pred"][rows].astype(str).to_numpy()
                                for name in ("seed", "default"))]
            means[space].append([f1 for _, f1 in scores])
            cells.append(f"{int(rows.sum()):5d} {scores[0][0]:6.3f}/{scores[1][0]:6.3f} "
                         f"{scores[0][1]:6.3f}/{scores[1][1]:6.3f}")
        print(f"{head:15s} | {'':14s}{cells[0]} | {'':20s}{cells[1]}")
    for space, values in means.items():
        seed_mean, default_mean = np.mean(values, axis=0)
        print(f"mean macro-F1, {space}: seed {seed_mean:.3f}, default {default_mean:.3f} "
              f"({default_mean - seed_mean:+.3f}, ratio {default_mean / seed_mean:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", default=str(DEFAULT_DATA))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--set", nargs="*", default=[])
    parser.add_argument("--compare", nargs=2, metavar=("SEED_RUN", "DEFAULT_RUN"),
                        help="score two finished runs on common ground, without training")
    args = parser.parse_args()
    if args.compare:
        registry = RunRegistry()
        common_ground(args.data, *(Path(registry.get(run_id).folder) for run_id in args.compare))
        return
    results = {recipe: run(recipe, args) for recipe in ("seed", "default")}
    seed, default = (results[name][0].metrics["heads"] for name in ("seed", "default"))
    seed_mean, default_mean = (results[name][0].metrics["mean_macro_f1"] for name in ("seed", "default"))
    print(f"\ndata {args.data}; lite0 offline, {args.image_size} px, {args.epochs} epochs, "
          f"max_samples={args.max_samples}; {os.cpu_count()} cores")
    for name, (record, seconds) in results.items():
        print(f"{name:8s} run {record.id}  {seconds / 60:.1f} min  train rows {record.metrics['train_rows']}, "
              f"val rows {record.metrics['val_rows']}, {record.timings['train_images_per_s']:.1f} train img/s")
    print(f"\n{'head':15s} {'seed acc':>8s} {'default acc':>11s} {'seed F1':>8s} {'default F1':>10s} {'ΔF1':>7s}")
    for head in seed:
        print(f"{head:15s} {seed[head]['accuracy']:8.3f} {default[head]['accuracy']:11.3f} "
              f"{seed[head]['macro_f1']:8.3f} {default[head]['macro_f1']:10.3f} "
              f"{default[head]['macro_f1'] - seed[head]['macro_f1']:+7.3f}")
    print(f"{'mean macro-F1':15s} {'':8s} {'':11s} {seed_mean:8.3f} {default_mean:10.3f} "
          f"{default_mean - seed_mean:+7.3f}  (ratio {default_mean / seed_mean:.2f})")
    common_ground(args.data, *(Path(results[name][0].folder) for name in ("seed", "default")))


if __name__ == "__main__":
    main()
