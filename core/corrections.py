"""What the label store's decisions do to a catalogue: a snapshot of them, the catalogue with them
applied (for training), and an export to a new dataset folder in the catalogue layout.

A catalogue row's decided labels override its own where they differ; a row marked NOT_PRODUCT is
dropped; an external photo marked REVIEWED becomes a new row, id EXTERNAL_ID_BASE + item.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from core.data import HEADS, STYLES_COLUMNS
from core.data.catalogue import IMAGES_DIR, STYLES_FILE, Catalogue
from core.images import open_rgb
from core.labelstore import STATUS, ItemKind, LabelStore, ReviewStatus, check_heads

CORRECTIONS_FILE = "corrections.csv"  # written next to styles.csv by export_dataset
EXPORT_JPEG_QUALITY = 95


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What export_dataset wrote."""

    out: Path
    rows: int  # products in out/styles.csv
    corrected_rows: int  # catalogue rows with at least one label changed by review
    dropped_rows: int  # catalogue rows left out as not a product
    external_rows: int  # reviewed external images appended
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "out": str(self.out)}


def corrections_snapshot(store: LabelStore, dataset: str | Path | Catalogue) -> dict[str, Any]:
    """What export applies to `dataset`, JSON-ready: {"overrides": {str(product id): {head: value}}
    (catalogue heads whose current value differs from the baseline), "dropped": [product ids marked
    NOT_PRODUCT], "extra": [{"id", "path", "name", <head>: value, ...} per REVIEWED external image]}."""
    overrides: dict[str, dict[str, str | None]] = {}
    dropped: list[int] = []
    extra: list[dict[str, Any]] = []
    for found, values in store.dataset_state(dataset):
        if found.kind == ItemKind.EXTERNAL:
            if values[STATUS] == ReviewStatus.REVIEWED:
                extra.append({"id": found.product_id, "path": str(found.path), "name": found.name,
                              **{head: values[head] for head in HEADS}})
        elif values[STATUS] == ReviewStatus.NOT_PRODUCT:
            dropped.append(found.product_id)
        else:
            changed = {head: values[head] for head in HEADS if values[head] != found.baseline[head]}
            if changed:
                overrides[str(found.product_id)] = changed
    return {"overrides": overrides, "dropped": sorted(dropped), "extra": extra}


def apply_corrections(catalogue: Catalogue, snapshot: Mapping[str, Any]) -> Catalogue:
    """A new Catalogue: `snapshot`'s overrides applied, its dropped rows removed, its extra rows
    appended (productDisplayName: the name's stem, no year), their photos in extra_images. Ids the
    catalogue no longer holds are ignored; the cleaning report is the original's."""
    frame = catalogue.frame.set_index("id", drop=False)
    for product_id, labels in snapshot.get("overrides", {}).items():
        product_id = int(product_id)
        if product_id in frame.index:
            for head, value in check_heads(labels, "overrides").items():
                frame.at[product_id, head] = pd.NA if value is None else value
    frame = frame[~frame["id"].isin([int(product_id) for product_id in snapshot.get("dropped", [])])]
    extra = list(snapshot.get("extra", []))
    clashes = sorted(set(frame["id"].tolist()) & {int(row["id"]) for row in extra})
    if clashes:
        raise ValueError(f"external image id(s) {', '.join(map(str, clashes[:10]))} are also catalogue ids")
    added = pd.DataFrame({
        "id": pd.array([int(row["id"]) for row in extra], dtype="int64"),
        **{head: pd.array([row.get(head) for row in extra], dtype=frame[head].dtype) for head in HEADS},
        "year": pd.array([None] * len(extra), dtype=frame["year"].dtype),
        "productDisplayName": pd.array(
            [Path(row["name"]).stem for row in extra], dtype=frame["productDisplayName"].dtype,
        ),
    })
    frame = pd.concat([frame.reset_index(drop=True), added[list(frame.columns)]], ignore_index=True)
    images = {**catalogue.extra_images, **{int(row["id"]): Path(row["path"]) for row in extra}}
    return dataclasses.replace(catalogue, frame=frame, extra_images=images)


def export_dataset(
    catalogue: Catalogue,
    store: LabelStore,
    out: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> ExportReport:
    """Write the reviewed dataset to `out` in the catalogue layout, readable by load_catalogue:
    styles.csv (the catalogue's rows with current labels, NOT_PRODUCT rows dropped, REVIEWED external
    images appended with id EXTERNAL_ID_BASE + item), images/<id>.jpg for every row (catalogue photos
    hard-linked, or copied; external photos re-encoded as RGB JPEG), and corrections.csv (log_frame).

    Written into a temporary folder next to `out`, renamed into place at the end. `out` must be new
    or empty, and outside the catalogue folder. progress(done, total) while writing images.
    """
    started = time.perf_counter()
    out, root = Path(out).expanduser().resolve(), Path(catalogue.root).resolve()
    if out == root or root in out.parents:
        raise ValueError(f"cannot export into the catalogue folder {root} ({out}): choose a folder outside it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder: choose a new or empty one")
    snapshot = corrections_snapshot(store, catalogue)
    corrected = apply_corrections(catalogue, snapshot)
    log = store.log_frame(catalogue)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-export-", dir=out.parent))
    try:
        corrected.frame[list(STYLES_COLUMNS)].to_csv(staging / STYLES_FILE, index=False, lineterminator="\n")
        _write_images(corrected, staging / IMAGES_DIR, progress)
        log.to_csv(staging / CORRECTIONS_FILE, index=False, lineterminator="\n")
        if out.exists():
            out.rmdir()  # empty, checked above: rename needs the name free
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    kept = set(corrected.frame["id"].tolist())
    return ExportReport(
        out=out,
        rows=len(corrected.frame),
        corrected_rows=sum(int(product_id) in kept for product_id in snapshot["overrides"]),
        dropped_rows=int(catalogue.frame["id"].isin(snapshot["dropped"]).sum()),
        external_rows=len(snapshot["extra"]),
        seconds=time.perf_counter() - started,
    )


def _write_images(catalogue: Catalogue, folder: Path, progress: Callable[[int, int], None] | None) -> None:
    folder.mkdir()
    ids = catalogue.frame["id"].tolist()
    step = max(1, len(ids) // 100)  # about 100 progress calls, however large the catalogue
    for done, product_id in enumerate(ids, start=1):
        source, target = catalogue.image_path(product_id), folder / f"{product_id}.jpg"
        if product_id in catalogue.extra_images:  # any accepted format: the layout wants JPEG
            open_rgb(source).save(target, format="JPEG", quality=EXPORT_JPEG_QUALITY)
        else:
            try:
                os.link(source, target)
            except OSError:  # another file system, or links not supported
                shutil.copyfile(source, target)
        if progress is not None and (done % step == 0 or done == len(ids)):
            progress(done, len(ids))
