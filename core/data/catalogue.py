"""Load a catalogue: `styles.csv` as Kaggle ships it, plus `images/<id>.jpg` next to it.

Cleaning, in order (every step is counted in the CleaningReport):
  1. blank lines are skipped; a line with extra unquoted commas (the real Kaggle file has
     ~22, all inside the product name) is kept, its extra fields joined back into
     productDisplayName;
  2. a repeated id keeps its first row;
  3. a row whose image file is missing is dropped.
Values are stripped of surrounding whitespace; an empty value is missing (NA). Columns
other than STYLES_COLUMNS are left out of the frame.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from core.data import REQUIRED_COLUMNS, STYLES_COLUMNS, CatalogueError

STYLES_FILE = "styles.csv"
IMAGES_DIR = "images"
# Folder names inside Kaggle's downloads: the full dataset and the "small" one.
KAGGLE_FOLDERS = ("fashion-dataset", "myntradataset")
NAME_COLUMN = "productDisplayName"


@dataclass(frozen=True)
class CleaningReport:
    """What loading did to styles.csv: rows_kept = lines_read - duplicate_ids - rows_without_image."""

    styles_csv: Path
    lines_read: int  # data rows read (header and blank lines not counted)
    lines_repaired: int  # rows whose extra unquoted commas were joined back into the name
    duplicate_ids: int  # rows dropped because their id appeared earlier (first kept)
    rows_without_image: int  # rows (after the duplicates) dropped because images/<id>.jpg is absent
    rows_kept: int

    def as_dict(self) -> dict:
        """JSON-ready: the path as a string, the counts as ints."""
        return {**asdict(self), "styles_csv": str(self.styles_csv)}


@dataclass(frozen=True, eq=False)  # eq=False: comparing frames field by field is ambiguous
class Catalogue:
    """A cleaned catalogue.

    frame: one row per kept product, RangeIndex, rows in file order; columns STYLES_COLUMNS:
    id (int64), the HEADS and productDisplayName (string, NA when missing), year (Int64, NA
    when missing or not an integer).
    extra_images: photos kept outside images_dir, by id (the reviewed external images that
    `core.corrections.apply_corrections` appends); empty for a catalogue read from disk.
    """

    root: Path  # the folder holding styles.csv
    images_dir: Path  # root / "images"
    frame: pd.DataFrame
    report: CleaningReport
    extra_images: Mapping[int, Path] = field(default_factory=dict)

    def image_path(self, product_id: int) -> Path:
        extra = self.extra_images.get(product_id)
        return extra if extra is not None else self.images_dir / f"{product_id}.jpg"


def resolve_dataset_dir(path: str | Path) -> Path:
    """The folder holding styles.csv and images/: `path` itself, or its Kaggle folder
    (fashion-dataset/ or myntradataset/), directly or one level deeper (kagglehub extracts
    into a versioned folder); resolved (`~`, `..` and symlinks), as `dataset_key` names it."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise CatalogueError(f"{path} does not exist")
    if not path.is_dir():
        raise CatalogueError(f"{path} is not a folder")
    subfolders = sorted(child for child in path.iterdir() if child.is_dir())
    candidates = [path, *(path / name for name in KAGGLE_FOLDERS)]
    candidates += [child / name for child in subfolders for name in KAGGLE_FOLDERS]
    root = next((folder for folder in candidates if (folder / STYLES_FILE).is_file()), None)
    if root is None:
        looked = ", ".join(f"{name}/" for name in KAGGLE_FOLDERS)
        raise CatalogueError(f"no {STYLES_FILE} in {path} (also looked in {looked} directly and one level deeper)")
    if not (root / IMAGES_DIR).is_dir():
        raise CatalogueError(f"no {IMAGES_DIR}/ folder next to {root / STYLES_FILE}")
    return root


def dataset_key(folder: str | Path) -> str:
    """How a dataset folder is named wherever datasets are compared or stored (the label store,
    a run's config, an evaluation's report): the resolved path, so `workspace/demo`,
    `./workspace/demo/` and the absolute path are one dataset."""
    if not isinstance(folder, (str, Path)) or not str(folder):
        raise ValueError(f"a dataset folder must be a path, got {folder!r}")
    return str(Path(folder).expanduser().resolve())


def same_dataset(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same dataset folder (`dataset_key`)."""
    return dataset_key(a) == dataset_key(b)


def catalogue_stamp(root: Path) -> tuple[int, int, int]:
    """Changes when the dataset folder's styles.csv or images folder does (a photo added, removed
    or renamed): what a cached read of the catalogue, or anything computed from it, is keyed on."""
    csv = (Path(root) / STYLES_FILE).stat()
    return csv.st_mtime_ns, csv.st_size, (Path(root) / IMAGES_DIR).stat().st_mtime_ns


def _read_text(csv_path: Path) -> str:
    try:
        text = csv_path.read_bytes().decode("utf-8-sig")  # -sig: drop a BOM if there is one
    except UnicodeDecodeError as err:
        raise CatalogueError(f"{csv_path} is not CSV text: not UTF-8 ({err})") from None
    if "\0" in text:
        raise CatalogueError(f"{csv_path} is not CSV text: it holds NUL bytes (a binary file?)")
    return text


def _check_header(csv_path: Path, header: list[str]) -> None:
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise CatalogueError(
            f"{csv_path} is missing required column(s) {', '.join(missing)}; columns found: {', '.join(header)}"
        )
    repeated = sorted({column for column in header if header.count(column) > 1})
    if repeated:
        raise CatalogueError(f"{csv_path} has column(s) {', '.join(repeated)} more than once")


def _integer_ids(csv_path: Path, values: tuple[str, ...], line_numbers: list[int]) -> list[int]:
    ids = []
    for line_number, value in zip(line_numbers, values):
        try:
            ids.append(int(value))
        except ValueError:
            raise CatalogueError(f"{csv_path} line {line_number}: id {value!r} is not an integer") from None
    return ids


def read_styles(csv_path: Path) -> tuple[pd.DataFrame, int]:
    """Every data row of styles.csv (before dropping duplicates or rows without image).

    Returns (frame with the columns of Catalogue.frame in file order, lines_repaired).
    """
    reader = csv.reader(io.StringIO(_read_text(csv_path)))
    header = next((fields for fields in reader if fields), None)
    if header is None:
        raise CatalogueError(f"{csv_path} is empty: no header line")
    header = [column.strip() for column in header]
    _check_header(csv_path, header)
    name_at = header.index(NAME_COLUMN) if NAME_COLUMN in header else None

    rows, line_numbers, lines_repaired = [], [], 0
    for fields in reader:
        if not fields:
            continue  # a blank line
        extra = len(fields) - len(header)
        if extra < 0 or (extra > 0 and name_at is None):
            raise CatalogueError(
                f"{csv_path} line {reader.line_num}: {len(fields)} fields, but the header has {len(header)}"
            )
        if extra > 0:
            fields[name_at:name_at + extra + 1] = [",".join(fields[name_at:name_at + extra + 1])]
            lines_repaired += 1
        rows.append(fields)
        line_numbers.append(reader.line_num)
    if not rows:
        raise CatalogueError(f"{csv_path} has a header but no rows")

    values = dict(zip(header, zip(*rows)))
    absent = ("",) * len(rows)  # an optional column the file lacks: all missing
    frame = pd.DataFrame({
        column: pd.array([value.strip() or None for value in values.get(column, absent)], dtype="string")
        for column in STYLES_COLUMNS
        if column != "id"
    })
    frame.insert(0, "id", pd.array(_integer_ids(csv_path, values["id"], line_numbers), dtype="int64"))
    year = pd.to_numeric(frame["year"], errors="coerce")
    frame["year"] = year.where((year % 1 == 0) & year.between(1, 9999)).astype("Int64")  # "n/a", 2011.5: NA
    return frame, lines_repaired


def image_names(images_dir: Path) -> set[str]:
    """File names in images_dir: one directory listing, no per-file stat."""
    with os.scandir(images_dir) as entries:
        return {entry.name for entry in entries}


def load_catalogue(path: str | Path) -> Catalogue:
    """Resolve the dataset folder (see resolve_dataset_dir), read and clean its catalogue."""
    root = resolve_dataset_dir(path)
    csv_path, images_dir = root / STYLES_FILE, root / IMAGES_DIR
    rows, lines_repaired = read_styles(csv_path)
    first = rows[~rows["id"].duplicated()]
    names = image_names(images_dir)
    # The file name image_path gives; a plain set lookup is ~8x faster than pandas' str + isin.
    has_image = [f"{product_id}.jpg" in names for product_id in first["id"].tolist()]
    kept = first[has_image].reset_index(drop=True)
    if kept.empty:
        raise CatalogueError(
            f"none of the {len(first):,} products in {csv_path} has its photo in {images_dir} "
            f"(expected files named <id>.jpg, e.g. {first['id'].iloc[0]}.jpg; the folder holds {len(names):,} files)"
        )
    report = CleaningReport(
        styles_csv=csv_path,
        lines_read=len(rows),
        lines_repaired=lines_repaired,
        duplicate_ids=len(rows) - len(first),
        rows_without_image=len(first) - len(kept),
        rows_kept=len(kept),
    )
    return Catalogue(root=root, images_dir=images_dir, frame=kept, report=report)
