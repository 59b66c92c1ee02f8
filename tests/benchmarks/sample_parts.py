"""The real sample carved once, by id, into a part to train and tune on and an untouched test part.

    python tests/benchmarks/sample_parts.py [OUT] [--data DIR]

OUT/train and OUT/test are catalogues the app opens: styles.csv with their rows (every row with a
photo; the test part is every dataset's fixed test part, `core.data.split.in_test_part`: the 10 % of
them whose id hashes lowest), and images/ a link to the sample's photos. The same ids land in the
test part every time, whatever machine or order: benchmarks train and choose on OUT/train only, and
report on OUT/test (bench_trust.py, bench_model.py). A run of the whole sample leaves out the same
rows and is scored on them (training.rows); a run of OUT/train finds no test part in it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from core.data.catalogue import IMAGES_DIR, STYLES_FILE, load_catalogue, write_styles  # noqa: E402
from core.data.split import in_test_part  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "fashion-sample"


def carve(out: Path, data: Path = SAMPLE) -> tuple[Path, Path]:
    """Write OUT/train and OUT/test (module docstring) unless they are there; returns both folders."""
    parts = out / "train", out / "test"
    if all((part / STYLES_FILE).is_file() for part in parts):
        return parts
    catalogue = load_catalogue(data)
    frame = catalogue.frame
    test = in_test_part(frame["id"].to_numpy(dtype=np.int64))
    for part, rows in zip(parts, (frame[~test], frame[test])):
        part.mkdir(parents=True, exist_ok=True)
        write_styles(rows, part)
        link = part / IMAGES_DIR
        if not link.exists():
            os.symlink(catalogue.images_dir.resolve(), link)
    print(f"carved {data}: {int((~test).sum()):,} rows to train on, {int(test.sum()):,} untouched test rows -> {out}")
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", default="/tmp/fashion-parts", type=Path)
    parser.add_argument("--data", type=Path, default=SAMPLE)
    args = parser.parse_args()
    carve(args.out, args.data)


if __name__ == "__main__":
    main()
