"""Load a catalogue: `styles.csv` as Kaggle ships it, plus `images/<id>.jpg` next to it.

Kaggle's file has no multi-line fields, so a line is a row: a quote never joins lines.
Cleaning, in order (every step is counted in the CleaningReport):
  1. blank lines are skipped; a line whose quotes do not close on it (a stray `"`, such as
     an inch mark opening a field) is read with its quotes as plain characters; a line with
     extra unquoted commas (the real Kaggle file has ~22, all inside the product name) is
     kept, its extra fields joined back into productDisplayName;
  2. a repeated id keeps its first row;
  3. a row whose photo is missing is dropped: the photo is images/<id>.jpg, the extension in
     any case (.jpg, .JPG, .jpeg); files that look like a missing product's photo but are not
     named so (leading zeros, another extension) are counted, with a few examples.
Values a spreadsheet would run as a formula (starting with = + - @, core.untrusted) are kept as
they are, counted, with a few examples: they are plain text here, a risk in a spreadsheet.
Values are stripped of surrounding whitespace; an empty value is missing (NA). Columns
other than STYLES_COLUMNS are left out of the frame. A file that cannot be read this way
(CR-only line ends, a line over MAX_LINE_CHARS, an id beyond 64 bits, ...) is refused with
a CatalogueError naming the line and the problem.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from core.data import REQUIRED_COLUMNS, STYLES_COLUMNS, CatalogueError
from core.untrusted import FORMULA_STARTS

STYLES_FILE = "styles.csv"
IMAGES_DIR = "images"
# Folder names inside Kaggle's downloads: the full dataset and the "small" one.
KAGGLE_FOLDERS = ("fashion-dataset", "myntradataset")
NAME_COLUMN = "productDisplayName"
# csv's own field limit: no label or product name comes near it, a longer line is not a catalogue row.
MAX_LINE_CHARS = 131_072
PHOTO_EXTENSIONS = (".jpg", ".jpeg")  # compared lower-cased
NEAR_MISS_EXAMPLES = 3
FORMULA_EXAMPLES = 3
ID_BITS = 64  # ids are int64 in the frame
# What a file name that may be a product's photo starts with: the id, possibly with leading zeros.
ID_IN_NAME = re.compile(r"\s*0*(\d+)", re.ASCII)


@dataclass(frozen=True)
class CleaningReport:
    """What loading did to styles.csv: rows_kept = lines_read - duplicate_ids - rows_without_image."""

    styles_csv: Path
    lines_read: int  # data rows read (header and blank lines not counted)
    lines_repaired: int  # rows whose extra unquoted commas were joined back into the name
    quotes_repaired: int  # rows whose quotes did not close on their line: quotes read as plain characters
    duplicate_ids: int  # rows dropped because their id appeared earlier (first kept)
    rows_without_image: int  # rows (after the duplicates) dropped because images/<id>.jpg is absent
    photo_near_misses: int  # files in images/ that look like the photo of one of those rows, misnamed
    rows_kept: int
    near_miss_examples: tuple[str, ...] = ()  # up to NEAR_MISS_EXAMPLES such file names, sorted
    formula_values: int = 0  # label and name values of the kept rows that a spreadsheet would run as formulas
    formula_examples: tuple[str, ...] = ()  # up to FORMULA_EXAMPLES of them, as "<id> <column>: <value>"

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
    `core.labels.corrections.apply_corrections` appends); empty for a catalogue read from disk.
    photo_names: the file names in images_dir of the photos not named exactly <id>.jpg (e.g.
    <id>.JPG), by id.
    """

    root: Path  # the folder holding styles.csv
    images_dir: Path  # root / "images"
    frame: pd.DataFrame
    report: CleaningReport
    extra_images: Mapping[int, Path] = field(default_factory=dict)
    photo_names: Mapping[int, str] = field(default_factory=dict)

    def added_rows(self):
        """Which rows are reviewed new photos (`extra_images`), bool numpy array [n] over frame."""
        return self.frame["id"].isin(list(self.extra_images)).to_numpy()

    def image_path(self, product_id: int) -> Path:
        extra = self.extra_images.get(product_id)
        if extra is not None:
            return extra
        return self.images_dir / self.photo_names.get(product_id, f"{product_id}.jpg")


def resolve_dataset_dir(path: str | Path) -> Path:
    """The folder holding styles.csv and images/: `path` itself, or its Kaggle folder
    (fashion-dataset/ or myntradataset/), directly or one level deeper (kagglehub extracts
    into a versioned folder); resolved (`~`, `..` and symlinks), as `DatasetKey` names it."""
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


class DatasetKey(str):
    """A dataset's identity wherever datasets are compared or stored (the label store, a run's
    config, an evaluation's report): its folder's resolved path, so `workspace/demo`,
    `./workspace/demo/` and the absolute path are one dataset. A str, so it is stored as one."""

    __slots__ = ()

    @classmethod
    def of(cls, dataset: str | Path | Catalogue) -> DatasetKey:
        """The key of a dataset folder, or of a Catalogue's root; ValueError for anything else."""
        folder = dataset.root if isinstance(dataset, Catalogue) else dataset
        if not isinstance(folder, (str, Path)) or not str(folder):
            raise ValueError(f"a dataset folder must be a path, got {folder!r}")
        return cls(Path(folder).expanduser().resolve())

    def __repr__(self) -> str:
        return f"DatasetKey({str(self)!r})"


def same_dataset(a: str | Path | Catalogue, b: str | Path | Catalogue) -> bool:
    """Whether two datasets are one (`DatasetKey`)."""
    return DatasetKey.of(a) == DatasetKey.of(b)


def catalogue_stamp(root: Path) -> tuple[int, int, int]:
    """Changes when the dataset folder's styles.csv or images folder does (a photo added, removed
    or renamed): what a cached read of the catalogue, or anything computed from it, is keyed on."""
    csv = (Path(root) / STYLES_FILE).stat()
    return csv.st_mtime_ns, csv.st_size, (Path(root) / IMAGES_DIR).stat().st_mtime_ns


def _read_lines(csv_path: Path) -> list[str]:
    """The file's lines, without their line ends (LF or CRLF)."""
    try:
        text = csv_path.read_bytes().decode("utf-8-sig")  # -sig: drop a BOM if there is one
    except UnicodeDecodeError as err:
        raise CatalogueError(f"{csv_path} is not CSV text: not UTF-8 ({err})") from None
    if "\0" in text:
        raise CatalogueError(f"{csv_path} is not CSV text: it holds NUL bytes (a binary file?)")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        lone_cr = text.find("\r")
        if lone_cr >= 0:
            raise CatalogueError(
                f"{csv_path} line {text.count(chr(10), 0, lone_cr) + 1}: a carriage return without a line feed "
                "(CR-only line ends, as old Mac files have); save the file with LF or CRLF line ends"
            )
    return text.split("\n")


def _split_line(csv_path: Path, line_number: int, line: str) -> tuple[list[str], bool]:
    """The fields of one line, and whether its quotes had to be read as plain characters: a quote
    that does not close on its line (or text after a closing quote) never reaches into the next line."""
    if len(line) > MAX_LINE_CHARS:
        raise CatalogueError(
            f"{csv_path} line {line_number}: {len(line):,} characters, over the limit of {MAX_LINE_CHARS:,} "
            "for one line (no label or product name is that long: is this a catalogue?)"
        )
    if '"' not in line:
        return line.split(","), False
    try:
        return next(csv.reader((line,), strict=True)), False
    except csv.Error:  # "unexpected end of data", "',' expected after '\"'"
        return line.split(","), True


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
    ids, low, high = [], -(2 ** (ID_BITS - 1)), 2 ** (ID_BITS - 1) - 1
    for line_number, value in zip(line_numbers, values):
        try:
            product_id = int(value)
        except ValueError:
            raise CatalogueError(f"{csv_path} line {line_number}: id {value!r} is not an integer") from None
        if not low <= product_id <= high:
            raise CatalogueError(
                f"{csv_path} line {line_number}: id {value.strip()[:40]!r} is out of range "
                f"(ids are {ID_BITS}-bit integers, at most {high:,})"
            )
        ids.append(product_id)
    return ids


@dataclass(frozen=True)
class StylesRows:
    """Every data row of styles.csv, before dropping duplicates or rows without image."""

    frame: pd.DataFrame  # the columns of Catalogue.frame, in file order
    lines_repaired: int  # extra unquoted commas joined back into the name
    quotes_repaired: int  # quotes read as plain characters


def read_styles(csv_path: Path) -> StylesRows:
    """Read styles.csv line by line (a line is a row); see the module docstring for the repairs."""
    lines = _read_lines(csv_path)
    numbered = ((number, line) for number, line in enumerate(lines, start=1) if line)
    first = next(numbered, None)
    if first is None:
        raise CatalogueError(f"{csv_path} is empty: no header line")
    header = [column.strip() for column in _split_line(csv_path, *first)[0]]
    _check_header(csv_path, header)
    name_at = header.index(NAME_COLUMN) if NAME_COLUMN in header else None

    rows, line_numbers, lines_repaired, quotes_repaired = [], [], 0, 0
    for line_number, line in numbered:
        fields, quotes_as_text = _split_line(csv_path, line_number, line)
        quotes_repaired += quotes_as_text
        extra = len(fields) - len(header)
        if extra < 0 or (extra > 0 and name_at is None):
            raise CatalogueError(
                f"{csv_path} line {line_number}: {len(fields)} fields, but the header has {len(header)}"
            )
        if extra > 0:
            fields[name_at:name_at + extra + 1] = [",".join(fields[name_at:name_at + extra + 1])]
            lines_repaired += 1
        rows.append(fields)
        line_numbers.append(line_number)
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
    return StylesRows(frame, lines_repaired, quotes_repaired)


def image_names(images_dir: Path) -> set[str]:
    """Names of the files in images_dir, folders left out: one directory listing, no per-file stat
    (symbolic links are not followed: a bad one is reported when the photo is read)."""
    with os.scandir(images_dir) as entries:
        return {entry.name for entry in entries if not entry.is_dir(follow_symlinks=False)}


@dataclass(frozen=True)
class PhotoMatch:
    """Which products have their photo in images/, and the files that nearly are one."""

    found: list[bool]  # per product asked about
    photo_names: dict[int, str]  # the found photos not named exactly <id>.jpg
    near_misses: list[str]  # file names that look like the photo of a product without one, sorted


def match_photos(product_ids: list[int], names: set[str]) -> PhotoMatch:
    """Each product's photo among `names`: <id>.jpg, or <id> with .jpg/.jpeg in any case."""
    # A plain set lookup is ~8x faster than pandas' str + isin; the other spellings are looked up
    # only when some product has no exact <id>.jpg.
    found = [f"{product_id}.jpg" in names for product_id in product_ids]
    if all(found):
        return PhotoMatch(found, {}, [])
    spelled = {}  # id -> name, for <canonical id><.jpg or .jpeg in any case>
    for name in names:
        stem, dot, extension = name.rpartition(".")
        if dot and f".{extension.lower()}" in PHOTO_EXTENSIONS and stem.isascii() and stem.isdigit() \
                and str(int(stem)) == stem:
            spelled.setdefault(int(stem), name)
    photo_names = {}
    for at, product_id in enumerate(product_ids):
        if not found[at] and product_id in spelled:
            found[at], photo_names[product_id] = True, spelled[product_id]
    missing = {product_id for product_id, has in zip(product_ids, found) if not has}
    used = {f"{product_id}.jpg" for product_id in product_ids} | set(photo_names.values())
    near_misses = sorted(
        name for name in names - used
        if (match := ID_IN_NAME.match(name)) and int(match.group(1)) in missing
    )
    return PhotoMatch(found, photo_names, near_misses)


def formula_cells(frame: pd.DataFrame) -> list[str]:
    """"<id> <column>: <value>" for each text value of `frame` (a Catalogue.frame) that starts
    like a spreadsheet formula, in row then column order."""
    found = []
    for column in (column for column in STYLES_COLUMNS if column not in ("id", "year")):
        values = frame[column]
        risky = values.str.startswith(FORMULA_STARTS).fillna(False).to_numpy(dtype=bool)
        found += [(at, column, value) for at, value in zip(risky.nonzero()[0], values[risky])]
    order = {column: index for index, column in enumerate(STYLES_COLUMNS)}
    return [f"{frame['id'].iat[at]} {column}: {value}" for at, column, value in
            sorted(found, key=lambda entry: (entry[0], order[entry[1]]))]


def load_catalogue(path: str | Path) -> Catalogue:
    """Resolve the dataset folder (see resolve_dataset_dir), read and clean its catalogue."""
    root = resolve_dataset_dir(path)
    csv_path, images_dir = root / STYLES_FILE, root / IMAGES_DIR
    styles = read_styles(csv_path)
    rows = styles.frame
    first = rows[~rows["id"].duplicated()]
    names = image_names(images_dir)
    photos = match_photos(first["id"].tolist(), names)
    kept = first[photos.found].reset_index(drop=True)
    examples = tuple(photos.near_misses[:NEAR_MISS_EXAMPLES])
    if kept.empty:
        seen = f"; seen instead: {', '.join(examples)}" if examples else ""
        raise CatalogueError(
            f"none of the {len(first):,} products in {csv_path} has its photo in {images_dir} "
            f"(expected files named <id>.jpg, e.g. {first['id'].iloc[0]}.jpg; the folder holds {len(names):,} files"
            f"{seen})"
        )
    risky = formula_cells(kept)
    report = CleaningReport(
        styles_csv=csv_path,
        lines_read=len(rows),
        lines_repaired=styles.lines_repaired,
        quotes_repaired=styles.quotes_repaired,
        duplicate_ids=len(rows) - len(first),
        rows_without_image=len(first) - len(kept),
        photo_near_misses=len(photos.near_misses),
        rows_kept=len(kept),
        near_miss_examples=examples,
        formula_values=len(risky),
        formula_examples=tuple(risky[:FORMULA_EXAMPLES]),
    )
    return Catalogue(root=root, images_dir=images_dir, frame=kept, report=report, photo_names=photos.photo_names)


def write_styles(frame: pd.DataFrame, root: str | Path) -> Path:
    """Write `root`/styles.csv as `load_catalogue` reads it: STYLES_COLUMNS in Kaggle's order, one row
    per product, missing values empty, "\n" line ends. The one writer of the file (the demo, an export).
    Its cells are written as they are (a catalogue is data, not a file for people; core.untrusted)."""
    path = Path(root) / STYLES_FILE
    frame[list(STYLES_COLUMNS)].to_csv(path, index=False, lineterminator="\n")
    return path
