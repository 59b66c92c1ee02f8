"""What near-duplicate leakage does to validation accuracy: two short runs on the real sample (or any
catalogue), one on the default stratified split and one on the group-aware split, all else equal.

    python tests/benchmarks/bench_leakage.py [--data DIR] [--home WS] [--threshold 0.93] [--set key=value ...]

Run "stratified": validation accuracy per head over all its validation photos, over those with a
near-duplicate in its training rows ("leaked": what a leak inflates) and over the others ("clean").
Run "grouped" (split=grouped): validation accuracy per head; by construction none of its validation
photos has a near-duplicate in training, which is checked. Near-duplicate groups come from the
pretrained backbone's embeddings at --threshold, cached in the workspace (computed first when absent:
`python -m training health DIR` in the same workspace does it once for both).

Settings: SETTINGS (a short fine-tune), then --set (e.g. --set max_samples=400 epochs=1 image_size=64
for a quick check). The two runs go to the workspace's run registry like any other.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core import workspace  # noqa: E402
from core.data.catalogue import load_catalogue  # noqa: E402
from core.evaluation.files import load_evaluation  # noqa: E402
from core.health.files import leaked_ids, near_duplicate_groups  # noqa: E402
from core.health.similarity import DEFAULT_THRESHOLD  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.run_folder import RunFolder  # noqa: E402
from training.train import train  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "fashion-sample"
SETTINGS = ["epochs=3", "image_size=128", "num_workers=2"]


def accuracy(predictions: pd.DataFrame, head: str) -> float:
    scored = predictions[predictions[head].notna()]
    return float((scored[head] == scored[f"{head}_pred"]).mean()) if len(scored) else float("nan")


def trained(cfg: TrainConfig) -> tuple[pd.DataFrame, pd.Series]:
    """Train `cfg`: its validation predictions, and the rows it used by id ("train": trained on,
    "val": its evaluated validation photos)."""
    started = time.perf_counter()
    record = train(cfg)
    if record.status != "finished":
        raise SystemExit(f"run {record.id} {record.status}: {record.error}")
    print(f"  run {record.id} ({cfg.split} split): {time.perf_counter() - started:.0f} s", flush=True)
    split = RunFolder(record.folder).read_split()
    training = split.index[split == "train"].to_numpy()
    predictions = load_evaluation(RunFolder(record.folder).evaluation()).predictions
    sides = pd.concat([pd.Series("train", index=training), pd.Series("val", index=predictions["id"].to_numpy())])
    return predictions, sides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SAMPLE)
    parser.add_argument("--home", help="workspace (default: FASHION_TAGGER_HOME or ./workspace)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.home:
        os.environ[workspace.HOME_ENV] = args.home
    base = TrainConfig().with_overrides([*SETTINGS, f"data={args.data}", f"group_similarity={args.threshold}",
                                         *args.set])
    catalogue = load_catalogue(args.data)

    started = time.perf_counter()
    groups = near_duplicate_groups(catalogue, workspace.workspace_dir(), args.threshold)
    print(f"{catalogue.root}: {len(catalogue.frame):,} photos; {len(groups):,} near-duplicate groups "
          f"({sum(map(len, groups)):,} photos) at {args.threshold} ({time.perf_counter() - started:.0f} s)")
    print("settings: " + " ".join(f"{key}={value}" for key, value in base.to_dict().items()
                                  if key in ("max_samples", "image_size", "epochs", "batch_size", "backbone", "lr")))

    stratified, stratified_sides = trained(base.with_overrides(["split=stratified"]))
    grouped, grouped_sides = trained(base.with_overrides(["split=grouped"]))
    is_leaked = stratified["id"].isin(leaked_ids(groups, stratified_sides)).to_numpy()
    grouped_leaks = leaked_ids(groups, grouped_sides)
    assert not grouped_leaks, f"the grouped split leaked {len(grouped_leaks)} validation photos"

    print(f"\nstratified split: {len(stratified):,} validation photos, "
          f"{is_leaked.sum():,} of them with a near-duplicate "
          f"in training ({is_leaked.mean():.1%}); grouped split: {len(grouped):,} validation photos, none leaked")
    print(f"{'head':16s} {'stratified':>10s} {'leaked':>7s} {'clean':>7s} {'leaked-clean':>12s} {'grouped':>8s} "
          f"{'stratified-grouped':>18s}")
    for head in base.heads:
        every, dirty, clean = (accuracy(frame, head)
                               for frame in (stratified, stratified[is_leaked], stratified[~is_leaked]))
        other = accuracy(grouped, head)
        print(f"{head:16s} {every:10.3f} {dirty:7.3f} {clean:7.3f} {dirty - clean:+12.3f} {other:8.3f} "
              f"{every - other:+18.3f}")
    mean = {name: np.nanmean([accuracy(frame, head) for head in base.heads]) for name, frame in
            (("stratified", stratified), ("leaked", stratified[is_leaked]), ("clean", stratified[~is_leaked]),
             ("grouped", grouped))}
    print(f"{'mean':16s} {mean['stratified']:10.3f} {mean['leaked']:7.3f} {mean['clean']:7.3f} "
          f"{mean['leaked'] - mean['clean']:+12.3f} {mean['grouped']:8.3f} "
          f"{mean['stratified'] - mean['grouped']:+18.3f}")


if __name__ == "__main__":
    main()
