"""Load time of the real sample's catalogue (44,446 rows, 11,882 images) against the 2 s target.

Median of RUNS runs, split into parsing styles.csv (line by line, with the extra-comma and
stray-quote repairs) and the image check (one listing of images/ plus the id match); pandas' C
engine reading the same file as plain strings is printed for reference: it is faster but cannot
repair lines, and a stray quote joins lines in it.

    python tests/benchmarks/bench_catalogue.py [DATASET_DIR]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere, as a script

from core.data.catalogue import image_names, load_catalogue, read_styles  # noqa: E402

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "fashion-sample"
TARGET_S = 2.0
RUNS = 5


def median_seconds(work: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLE_DIR
    if not (root / "styles.csv").is_file():
        sys.exit(f"no styles.csv in {root}")
    csv_path, images_dir = root / "styles.csv", root / "images"
    report = load_catalogue(root).report  # also warms the file cache
    print(f"{root}: {report.lines_read:,} rows read, {report.rows_kept:,} kept, median of {RUNS} runs")

    parse = median_seconds(lambda: read_styles(csv_path))
    listing = median_seconds(lambda: image_names(images_dir))
    total = median_seconds(lambda: load_catalogue(root))
    pandas_c = median_seconds(lambda: pd.read_csv(csv_path, dtype=str, keep_default_na=False))
    print(f"{'step':<38}{'seconds':>9}{'/ target':>10}")
    for step, seconds in [
        ("parse styles.csv (line by line)", parse),
        ("image check (total - parse)", total - parse),
        ("  of which: list images/ (scandir)", listing),
        ("load_catalogue total", total),
        ("reference: pandas C engine, no repair", pandas_c),
    ]:
        print(f"{step:<38}{seconds:>9.3f}{seconds / TARGET_S:>10.3f}")
    print(f"target {TARGET_S:.1f} s: load_catalogue is {TARGET_S / total:.1f}x faster than the target")


if __name__ == "__main__":
    main()
