"""The image cache, two ways: per-id resized JPEGs (core.images.cache) against LitData's chunked format.

Both store the same bytes (draft() decode, longer side cached_side(160), JPEG q90, built by
2 workers); both are read through a torch DataLoader with 2 workers, batch 64, decoding and
applying the eval transform to 160 px.

Build table: img/s from nothing; seconds to confirm a built cache is fresh (per-file: a stat per
id against the manifest); seconds to bring it up to date after one source changed (LitData has
no per-item freshness: it optimizes everything again, append mode can only add items); MB.
Read table, img/s: "all", a shuffled epoch over every id (LitData: StreamingDataset(shuffle=True)
through its StreamingDataLoader); "all by id", the same through a map-style view that looks items
up by position, as a run's split needs; "half", a seeded half of the ids (a split or a
max_samples cap). "no cache" decodes the source photos (draft()) on every read, for reference.

Run: python tests/benchmarks/bench_pipeline.py [n_sample_ids] [demo_dir]
(litdata is an optional, benchmark-only dependency here.)
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
from PIL import Image
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from core.data.catalogue import load_catalogue  # noqa: E402
from core.images.cache import JPEG_QUALITY, MANIFEST, build_image_cache, cached_side  # noqa: E402
from core.images.reading import open_rgb  # noqa: E402
from core.images.transforms import data_config, eval_transform  # noqa: E402
from core.model.datamodule import CatalogueImages  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "fashion-sample"
IMAGE_SIZE, WORKERS, BATCH, ROUNDS = 160, 2, 64, 3


def litdata_item(job: tuple[int, str, int]) -> dict:
    """LitData's `fn`: the same resized JPEG bytes the per-file cache writes."""
    product_id, source, side = job
    image = open_rgb(source, max_side=side)
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return {"id": product_id, "jpeg": buffer.getvalue()}


class DecodeItem:
    """A LitData item -> {"image", "id"}, decoded and transformed like CatalogueImages."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, item: dict) -> dict:
        image = Image.open(io.BytesIO(item["jpeg"])).convert("RGB")
        return {"image": self.transform(image), "id": item["id"]}


class LitImages(Dataset):
    """Map-style view of a StreamingDataset at `positions` (any subset of ids, any order)."""

    def __init__(self, folder: Path, positions: np.ndarray, transform) -> None:
        self.folder, self.positions, self.decode, self.streaming = str(folder), positions, DecodeItem(transform), None

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> dict:
        if self.streaming is None:  # opened in the worker process
            from litdata import StreamingDataset

            self.streaming = StreamingDataset(self.folder)
        return self.decode(self.streaming[int(self.positions[index])])


class SourceImages(Dataset):
    """No cache: decode each source photo with draft() on every read."""

    def __init__(self, catalogue, ids: np.ndarray, transform) -> None:
        self.catalogue, self.ids, self.transform = catalogue, ids, transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        product_id = int(self.ids[index])
        image = open_rgb(self.catalogue.image_path(product_id), max_side=cached_side(IMAGE_SIZE))
        return {"image": self.transform(image), "id": product_id}


def loader(dataset: Dataset) -> DataLoader:
    return DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=WORKERS, persistent_workers=True)


def read_rates(loaders: dict[str, tuple[DataLoader, int]]) -> dict[str, float]:
    """img/s per loader: the best of ROUNDS epochs, the loaders taking turns so that a slow spell
    on this shared machine hits them alike; persistent workers, so worker start-up is left out."""
    best = dict.fromkeys(loaders, 0.0)
    for _ in range(ROUNDS):
        for name, (batches, expected) in loaders.items():
            start = time.perf_counter()
            count = sum(len(batch["id"]) for batch in batches)
            assert count == expected, (name, count, expected)
            best[name] = max(best[name], count / (time.perf_counter() - start))
    return best


def build_per_file(catalogue, ids: np.ndarray, folder: Path) -> dict:
    report = build_image_cache(catalogue, ids, IMAGE_SIZE, folder, workers=WORKERS)
    assert report.built == len(ids) and not report.failed, report
    recheck = build_image_cache(catalogue, ids, IMAGE_SIZE, folder, workers=WORKERS)
    assert recheck.reused == len(ids), recheck
    # One changed source, simulated without touching the shared data: its manifest entry no longer
    # matches the file's (size, mtime_ns), exactly what editing the file does.
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["sources"][str(ids[0])][0] = -1
    (folder / MANIFEST).write_text(json.dumps(manifest))
    update = build_image_cache(catalogue, ids, IMAGE_SIZE, folder, workers=WORKERS)
    assert update.built == 1 and update.reused == len(ids) - 1, update
    return {
        "build img/s": len(ids) / report.seconds,
        "recheck s": recheck.seconds,
        "1 changed s": update.seconds,
        "MB": sum(path.stat().st_size for path in folder.glob("*.jpg")) / 1e6,
    }


def build_litdata(catalogue, ids: np.ndarray, folder: Path) -> tuple[dict, dict[int, int]]:
    """LitData has no per-item freshness: a changed source means optimizing again (append mode can
    only add items), so "1 changed" is the full build time. Returns (row, id -> item position)."""
    from litdata import StreamingDataset, optimize

    side = cached_side(IMAGE_SIZE)
    jobs = [(int(product_id), str(catalogue.image_path(int(product_id))), side) for product_id in ids]
    start = time.perf_counter()
    optimize(fn=litdata_item, inputs=jobs, output_dir=str(folder), num_workers=WORKERS,
             chunk_bytes="64MB", verbose=False)
    # Items land in worker order, not input order: one pass over the (undecoded) items maps id -> position.
    # (optimize(key_fn=...) would write this map, but needs polars.)
    position = {item["id"]: index for index, item in enumerate(StreamingDataset(str(folder)))}
    seconds = time.perf_counter() - start
    row = {
        "build img/s": len(ids) / seconds,
        "recheck s": float("nan"),
        "1 changed s": seconds,
        "MB": sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6,
    }
    return row, position


def table(title: str, rows: dict[str, dict], columns: tuple[str, ...], ratio_of: tuple[str, str]) -> None:
    print(f"\n{title}")
    print(f"{'':<24}" + "".join(f"{column:>18}" for column in columns))
    for label, row in rows.items():
        print(f"{label:<24}" + "".join(f"{row.get(column, float('nan')):>18,.2f}" for column in columns))
    top, bottom = (rows[name] for name in ratio_of)
    print(f"{' / '.join(ratio_of):<24}" + "".join(f"{top[c] / bottom[c]:>18.3g}" for c in columns))


def compare(name: str, catalogue, ids: np.ndarray, transform) -> None:
    from litdata import StreamingDataLoader, StreamingDataset

    half = np.random.default_rng(0).permutation(ids)[: len(ids) // 2]
    labels = np.zeros((len(ids), 1), dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        per_file_dir, litdata_dir = Path(tmp) / "per-file", Path(tmp) / "litdata"
        builds = {"per-file": build_per_file(catalogue, ids, per_file_dir)}
        builds["litdata"], position = build_litdata(catalogue, ids, litdata_dir)
        table(f"{name}: build, {len(ids):,} images, {WORKERS} workers", builds,
              ("build img/s", "recheck s", "1 changed s", "MB"), ("per-file", "litdata"))

        streaming = StreamingDataset(str(litdata_dir), shuffle=True, transform=DecodeItem(transform))
        by_position = np.array([position[product_id] for product_id in ids])
        half_position = np.array([position[product_id] for product_id in half])
        rates = read_rates({
            "per-file all": (loader(CatalogueImages(per_file_dir, ids, labels, transform)), len(ids)),
            "per-file half": (loader(CatalogueImages(per_file_dir, half, labels[: len(half)], transform)), len(half)),
            "litdata all": (StreamingDataLoader(streaming, batch_size=BATCH, num_workers=WORKERS,
                                                persistent_workers=True), len(ids)),
            "litdata all by id": (loader(LitImages(litdata_dir, by_position, transform)), len(ids)),
            "litdata half by id": (loader(LitImages(litdata_dir, half_position, transform)), len(half)),
            "no cache all": (loader(SourceImages(catalogue, ids, transform)), len(ids)),
        })
    reads = {
        "per-file": {"all": rates["per-file all"], "all by id": rates["per-file all"], "half": rates["per-file half"]},
        "litdata": {"all": rates["litdata all"], "all by id": rates["litdata all by id"],
                    "half": rates["litdata half by id"]},
        "no cache (draft)": {"all": rates["no cache all"]},
    }
    table(f"{name}: read img/s, DataLoader {WORKERS} workers, decode + eval transform to {IMAGE_SIZE} px, "
          f"best of {ROUNDS} epochs", reads, ("all", "all by id", "half"), ("per-file", "litdata"))


def main(n_sample: int = 2000, demo_dir: str = "/tmp/demo1500") -> None:
    try:
        import litdata  # noqa: F401
    except ImportError:
        sys.exit("this benchmark compares against LitData: pip install litdata==0.2.76")
    transform = eval_transform(data_config(timm.create_model("tf_efficientnet_lite0", num_classes=0), IMAGE_SIZE))
    if SAMPLE.is_dir():
        sample = load_catalogue(SAMPLE)
        ids = sample.frame["id"].to_numpy()
        compare("fashion-sample", sample, np.random.default_rng(0).permutation(ids)[:n_sample], transform)
    else:
        print(f"(no real sample at {SAMPLE})")
    if not Path(demo_dir).is_dir():
        from core.data.demo import generate_demo

        generate_demo(Path(demo_dir), n=1500)
    demo = load_catalogue(demo_dir)
    compare("demo", demo, demo.frame["id"].to_numpy(), transform)


if __name__ == "__main__":
    main(*(int(arg) if i == 0 else arg for i, arg in enumerate(sys.argv[1:])))
