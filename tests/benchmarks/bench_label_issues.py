"""Planted label errors found by cross-validation + cleanlab, on the real sample (or any catalogue).

5% of one head's labels (articleType by default) among the rows the cross-validation uses are
changed, each to another class, in a copy of styles.csv (photos linked, not copied) under
`<workspace>/bench-label-issues/`. Only classes the label schema keeps are used on both ends,
so every flip is a wrong label in the schema's terms. Then `crossval` with K folds, and per
cleanlab score method (core.evaluation.label_issues.SCORE_METHODS):
    top-5% precision  planted flips among the top-ranked k rows (k = the number of flips)
    top-5% recall     planted flips found in those k rows / flips (equal to precision: k = flips)
    flagged           rows find_label_issues flags (is_issue), their precision and recall
Timings: the cross-validation (per fold), and ranking every head's out-of-sample predictions.

Run: python tests/benchmarks/bench_label_issues.py [--data DIR] [--folds 3] [--max-samples N]
     [--head articleType] [--set key=value ...]
Defaults: SETTINGS, every row of the sample (about 30 min on 2 CPU cores; --max-samples 3000 takes
7 min). OMP_NUM_THREADS=1 helps on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core import workspace  # noqa: E402
from core.data.catalogue import load_catalogue  # noqa: E402
from core.data.schema import LabelSchema  # noqa: E402
from core.evaluation.label_issues import SCORE_METHODS, rank_label_issues  # noqa: E402
from training.config import TrainConfig, resolve_rare_min_count  # noqa: E402
from training.crossval import capped_catalogue, crossval  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "fashion-sample"
# Fine-tuned lite0 at 96 px, 3 epochs, plain cross-entropy: on 3,000 sample rows, 0.90 of the top 5%
# were flips (7 min on 2 CPU cores); the test's frozen backbone gave 0.66 (0.67 with imbalance=none).
SETTINGS = ["image_size=96", "lr=0.001", "imbalance=none", "epochs=3", "batch_size=32", "num_workers=0"]
FLIP_SHARE = 0.05


def flipped_copy(source: Path, cfg: TrainConfig, head: str, seed: int) -> tuple[Path, set[int]]:
    """A catalogue of the rows `cfg` uses from `source`, FLIP_SHARE of them with `head` changed; images linked."""
    used = capped_catalogue(load_catalogue(source), cfg)
    schema = LabelSchema.fit(used.frame, rare_policy=cfg.rare_policy,
                             rare_min_count=resolve_rare_min_count(cfg, len(used.frame)), heads=(head,))
    kept = [name for name in schema.classes[head] if name in schema.counts[head]]  # real classes, not "Other"
    styles = used.frame.set_index("id")
    rng = np.random.default_rng(seed)
    flips = rng.choice(styles.index[styles[head].isin(kept)], size=round(FLIP_SHARE * len(styles)), replace=False)
    for product_id in flips:
        styles.loc[product_id, head] = rng.choice([name for name in kept if name != styles.loc[product_id, head]])
    folder = workspace.workspace_dir() / "bench-label-issues" / f"{used.root.name}-{len(styles)}-{head}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    styles.reset_index().to_csv(folder / "styles.csv", index=False)
    if not (folder / "images").exists():
        (folder / "images").symlink_to(used.images_dir.resolve(), target_is_directory=True)
    return folder, set(flips.tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SAMPLE)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--head", default="articleType")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cfg = TrainConfig().with_overrides([*SETTINGS, f"max_samples={args.max_samples}", f"seed={args.seed}", *args.set])

    started = time.perf_counter()
    folder, flips = flipped_copy(args.data, cfg, args.head, args.seed)
    prepare_s = time.perf_counter() - started
    cfg = cfg.with_overrides([f"data={folder}"])
    print(f"{args.data}: {len(flips)} of {args.head} flipped; {args.folds} folds; "
          f"torch threads {torch.get_num_threads()}")
    print("settings: " + " ".join(f"{key}={value}" for key, value in cfg.to_dict().items() if key in
                                  ("max_samples", "image_size", "freeze_backbone", "lr", "imbalance", "epochs",
                                   "batch_size", "backbone")))

    started = time.perf_counter()
    result = crossval(cfg, args.folds, progress=lambda done, folds: print(f"  fold {done}/{folds}", flush=True))
    crossval_s = time.perf_counter() - started
    predictions = pd.read_parquet(Path(result.folder) / "evaluation" / "predictions.parquet")
    classes = LabelSchema.load(Path(result.folder) / "schema.json").classes
    started = time.perf_counter()
    rank_label_issues(predictions, classes)
    rank_s = time.perf_counter() - started

    print(f"\nout-of-sample {args.head} accuracy {result.metrics[args.head]['accuracy']:.3f}, "
          f"macro-F1 {result.metrics[args.head]['macro_f1']:.3f} over {result.rows:,} rows ({result.folder})")
    print(f"{'method':28s} {'top-5% precision':>16s} {'top-5% recall':>13s} {'flagged':>8s} {'precision':>9s} "
          f"{'recall':>7s}")
    for method in SCORE_METHODS:
        ranked = rank_label_issues(predictions, classes, heads=[args.head], method=method)
        hits = ranked["id"][ranked["rank"] <= len(flips)].isin(flips).sum()
        flagged = ranked[ranked["is_issue"]]
        found = flagged["id"].isin(flips).sum()
        print(f"{method:28s} {hits / len(flips):16.3f} {hits / len(flips):13.3f} {len(flagged):8d} "
              f"{found / max(len(flagged), 1):9.3f} {found / len(flips):7.3f}")
    fold_s = [result.timings[f"fold{fold}_s"] for fold in range(args.folds)]
    print(f"\ntimings: prepare {prepare_s:.1f} s; crossval {crossval_s:.1f} s "
          f"(folds {', '.join(f'{s:.1f}' for s in fold_s)} s; {result.rows / crossval_s:.1f} rows/s); "
          f"rank every head {rank_s:.2f} s ({len(predictions) / rank_s:,.0f} rows/s)")
    print(json.dumps({"flips": len(flips), "rows": result.rows, "crossval_s": round(crossval_s, 1),
                      "rank_s": round(rank_s, 3)}))


if __name__ == "__main__":
    main()
