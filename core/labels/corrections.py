"""What the label store's decisions do to a catalogue: a snapshot of them, the catalogue with them
applied (for training), and an export to a new dataset folder in the catalogue layout.

A catalogue row's decided labels override its own where they differ; a row marked NOT_PRODUCT is
dropped; an external photo marked REVIEWED becomes a new row, id EXTERNAL_ID_BASE + item.

An export is written into a hidden staging folder next to its target and renamed into place at the
end. A killed export leaves its staging folder behind: the next export into the same parent folder
removes those no live export holds (each holds a lock on a marker inside its own) and that have
not been written to for STALE_STAGING_S.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from core.access.roles import Actor, Permission, require_folder
from core.data import HEADS
from core.data.catalogue import IMAGES_DIR, Catalogue, write_styles
from core.images.reading import ImageRejected, read_image_checked, resolve_within
from core.labels.checks import check_heads
from core.labels.store import LabelStore
from core.labels.tables import STATUS, Item, ItemKind, ReviewStatus
from core.untrusted import spreadsheet_csv

CORRECTIONS_FILE = "corrections.csv"  # written next to styles.csv by export_dataset
EXPORT_JPEG_QUALITY = 95
# Inside a staging folder while its export runs; locked (flock) by the exporting process.
STAGING_MARKER = ".fashion-tagger-export"
# A staging folder untouched this long, and unlocked, is debris: exports write photos continuously.
STALE_STAGING_S = 3600


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What export_dataset wrote."""

    out: Path
    rows: int  # products in out/styles.csv
    corrected_rows: int  # catalogue rows with at least one label changed by review
    dropped_rows: int  # catalogue rows left out as not a product
    external_rows: int  # reviewed external images appended
    seconds: float
    # id -> why its photo was not written (a folder, an empty file, a broken link, an unreadable
    # upload); its row is still in styles.csv, so loading the export counts it as a row without image.
    skipped_images: dict[int, str] = dataclasses.field(default_factory=dict)
    cleared_staging: list[str] = dataclasses.field(default_factory=list)  # stale staging folders removed

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "out": str(self.out),
                "skipped_images": {str(product_id): why for product_id, why in self.skipped_images.items()}}

    def notes(self) -> list[str]:
        """What a person should know beyond the counts, one plain-text line each."""
        lines = [f"photo of {product_id} not written: {why}" for product_id, why in self.skipped_images.items()]
        if self.cleared_staging:
            lines.append(f"removed {len(self.cleared_staging)} staging folder(s) left by interrupted exports: "
                         f"{', '.join(self.cleared_staging)}")
        return lines


def corrections_snapshot(store: LabelStore, dataset: str | Path | Catalogue) -> dict[str, Any]:
    """What export applies to `dataset`, JSON-ready (corrections_of its LabelStore.dataset_state)."""
    return corrections_of(store.dataset_state(dataset))


def corrections_of(state: list[tuple[Item, dict[str, str | None]]]) -> dict[str, Any]:
    """What export applies to a dataset whose LabelStore.dataset_state is `state`, JSON-ready:
    {"overrides": {str(product id): {head: value}} (catalogue heads whose current value differs from
    the baseline), "dropped": [product ids marked NOT_PRODUCT], "extra": [{"id", "path", "name",
    <head>: value, ...} per REVIEWED external image]}."""
    overrides: dict[str, dict[str, str | None]] = {}
    dropped: list[int] = []
    extra: list[dict[str, Any]] = []
    for found, values in state:
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
    actor: Actor,
    progress: Callable[[int, int], None] | None = None,
) -> ExportReport:
    """Write the reviewed dataset to `out` in the catalogue layout, readable by load_catalogue:
    styles.csv (the catalogue's rows with current labels, NOT_PRODUCT rows dropped, REVIEWED external
    images appended with id EXTERNAL_ID_BASE + item), images/<id>.jpg for every row (catalogue photos
    hard-linked, or copied; external photos re-encoded as RGB JPEG), and corrections.csv (log_frame,
    a file for people: its cells made safe for a spreadsheet, core.untrusted). Both come from one
    snapshot of the store (LabelStore.dataset_snapshot), so they agree while reviewers write. styles.csv is a
    dataset the app reads again, written as it is: its labels were checked where they were typed.

    `actor` must be allowed to export (Permission.EXPORT: an admin) into `out`, a folder under
    their roots (core.access.roles.AccessDenied, FolderRefused otherwise; nothing written).

    Written into a staging folder next to `out`, renamed into place at the end (stale ones that
    killed exports left there are removed first: clear_stale_staging). `out` must be new or empty,
    and outside the catalogue folder. A photo that cannot be written is skipped, its row kept, and
    named in the report. progress(done, total) while writing images.
    """
    started = time.perf_counter()
    out, root = require_folder(actor, Permission.EXPORT, out), Path(catalogue.root).resolve()
    if out == root or root in out.parents:
        raise ValueError(f"cannot export into the catalogue folder {root} ({out}): choose a folder outside it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder: choose a new or empty one")
    state, log = store.dataset_snapshot(catalogue)  # one read: styles.csv and corrections.csv agree
    snapshot = corrections_of(state)
    corrected = apply_corrections(catalogue, snapshot)
    out.parent.mkdir(parents=True, exist_ok=True)
    cleared = clear_stale_staging(out.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-export-", dir=out.parent))
    try:
        with open(staging / STAGING_MARKER, "w") as marker:
            fcntl.flock(marker, fcntl.LOCK_EX)  # held until the export ends: a live export's folder is never cleared
            write_styles(corrected.frame, staging)
            skipped = _write_images(corrected, staging / IMAGES_DIR, actor.roots, progress)
            spreadsheet_csv(log, staging / CORRECTIONS_FILE, index=False, lineterminator="\n")
            (staging / STAGING_MARKER).unlink()
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
        skipped_images=skipped,
        cleared_staging=cleared,
    )


def clear_stale_staging(parent: Path) -> list[str]:
    """Remove the staging folders in `parent` that killed exports left: those with a STAGING_MARKER
    no process holds a lock on, untouched for STALE_STAGING_S; returns their names, sorted."""
    now, cleared = time.time(), []
    for folder in sorted(parent.glob(f".*/{STAGING_MARKER}")):
        folder = folder.parent
        try:
            touched = max(path.stat().st_mtime for path in (folder, folder / IMAGES_DIR) if path.exists())
            if now - touched < STALE_STAGING_S:
                continue
            with open(folder / STAGING_MARKER) as marker:
                fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a live export holds it
                shutil.rmtree(folder)
        except OSError:  # held by a live export, or gone meanwhile: not ours to remove now
            continue
        cleared.append(folder.name)
    return cleared


def _write_images(catalogue: Catalogue, folder: Path, roots: Sequence[Path] | None,
                  progress: Callable[[int, int], None] | None) -> dict[int, str]:
    """Write images/<id>.jpg for every row; returns id -> why a photo was skipped. Only a bad
    source is skipped: an error writing the export (a full disk) ends it. A photo outside `roots`
    once its links are followed (the exporting person's folders; core.images.reading.resolve_within)
    is a bad source: a copy in the export would show it to whoever may open the export."""
    folder.mkdir()
    ids = catalogue.frame["id"].tolist()
    step = max(1, len(ids) // 100)  # about 100 progress calls, however large the catalogue
    skipped = {}
    for done, product_id in enumerate(ids, start=1):
        source, target = catalogue.image_path(product_id), folder / f"{product_id}.jpg"
        try:
            if product_id in catalogue.extra_images:  # any accepted format: the layout wants JPEG
                image = read_image_checked(source, name=source.name, roots=roots)
            else:
                source = resolve_within(source, roots, source.name)
                _check_photo(source)
        except ImageRejected as error:
            skipped[product_id] = str(error)
        except OSError as error:  # a symbolic link loop or a broken one, a folder, an empty file
            skipped[product_id] = f"{source.name}: {error.strerror or error}"
        else:
            if product_id in catalogue.extra_images:
                image.save(target, format="JPEG", quality=EXPORT_JPEG_QUALITY)
            else:
                try:
                    os.link(source, target)
                except OSError:  # another file system, or links not supported
                    shutil.copyfile(source, target)
        if progress is not None and (done % step == 0 or done == len(ids)):
            progress(done, len(ids))
    return skipped


def _check_photo(source: Path) -> None:
    """OSError naming the problem unless `source` is a readable, non-empty regular file (links followed)."""
    found = os.stat(source)  # ELOOP for a symbolic link loop, ENOENT for a broken one
    if not stat.S_ISREG(found.st_mode):
        raise OSError(0, "a folder, not a photo" if stat.S_ISDIR(found.st_mode) else "not a regular file")
    if found.st_size == 0:
        raise OSError(0, "the file is empty (0 bytes)")
    if not os.access(source, os.R_OK):
        raise OSError(0, "cannot be read (permission denied)")
