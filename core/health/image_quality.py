"""Image-quality issues of catalogue photos: cleanvision's checks (through its Imagelab API) and
exact duplicates by content.

Only the seven cleanvision issue types of ISSUE_TYPES run (its own duplicate checks are left to
core.health.similarity and `exact_duplicates`), in two passes by what they need, so that no source photo is
ever decoded in full (a 1800x2400 catalogue JPEG costs ~90 ms to decode on one core):
- PIXEL_ISSUES (blurry, dark, light, low_information) are pixel statistics: computed on the photo's
  image-cache copy (core.images.cache, a few hundred pixels a side). cleanvision's own blur check
  shrinks every photo to 64 px first, brightness percentiles and the histogram's entropy barely
  move with the size; tests/benchmarks/bench_health.py measures the agreement with the sources.
  Their thresholds are per photo, so the photos go through in chunks (progress between them).
- SHAPE_ISSUES (odd_aspect_ratio, odd_size, grayscale) need only the source's size and colour mode,
  read from its header. odd_size compares each photo with all the others, so they go in one pass.

The blur check is adapted to photos on white (measured on the real sample, tests/benchmarks/
bench_health.py): cleanvision scores blur by the spread of a 64 px edge map, and Pillow's edge
filter keeps the border pixels as they are, so a white border dominates that spread and a sharp
photo scores like one blurred beyond recognition; and its histogram-spread term excuses every
photo with a uniform background. So the blur check sees the photo inverted (a black border) with
that term off (BLURRY_PARAMS); the other checks see it as it is, with cleanvision's defaults.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from core.data.catalogue import Catalogue
from core.images.cache import build_image_cache, cache_folder, open_cached

PIXEL_ISSUES = ("blurry", "dark", "light", "low_information")
SHAPE_ISSUES = ("odd_aspect_ratio", "odd_size", "grayscale")
ISSUE_TYPES = (*PIXEL_ISSUES, *SHAPE_ISSUES)
BLURRY_PARAMS = {"color_threshold": 1.0}  # std scores never exceed 1: the histogram-spread term is off
PIXEL_CHUNK = 1000  # photos per cleanvision call in the pixel pass (a progress step)
_HASH_BLOCK = 1 << 20


class _Photos:
    """Photos as cleanvision's torchvision-dataset wrapper takes them: item i -> (PIL image,).

    load(i) gives the image; cleanvision then runs in this process (n_jobs=1), which spares it
    pickling the whole dataset for every photo it hands to a worker."""

    def __init__(self, count: int, load: Callable[[int], Image.Image]) -> None:
        self.count, self.load = count, load

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[Image.Image]:
        return (self.load(index),)


def _header_only(path: Path) -> Image.Image:
    """The image at `path` opened for its header (size and mode) and closed, never decoded:
    enough for the shape checks; touching its pixels would raise."""
    with Image.open(path) as image:
        pass
    return image


def _find_issues(photos: _Photos, issue_types: dict[str, dict]) -> pd.DataFrame:
    from cleanvision import Imagelab  # imported here: it takes seconds, and only this pass needs it

    # cleanvision draws tqdm progress bars on stderr even when verbose=False.
    with contextlib.redirect_stderr(io.StringIO()):
        lab = Imagelab(torchvision_dataset=photos, verbose=False)
        lab.find_issues(issue_types, n_jobs=1, verbose=False)
    return lab.issues.loc[range(len(photos))]


def image_issues(
    catalogue: Catalogue,
    ids: Sequence[int],
    workspace: Path,
    image_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """cleanvision's verdict per photo: a frame with `id` and, per ISSUE_TYPES type, `<type>`
    (bool: the photo has the issue) and `<type>_score` (0 to 1, lower is worse), one row per id
    whose photo could be read, in `ids` order.

    The pixel pass reads the image cache at `image_size` in `workspace` (built here when needed).
    `progress(done, total)` after each chunk of the pixel pass.
    """
    ids = list(dict.fromkeys(int(i) for i in ids))
    folder = cache_folder(workspace, catalogue.root, image_size)
    failed = build_image_cache(catalogue, ids, image_size, folder).failed if ids else {}
    readable = [i for i in ids if i not in failed]
    if not readable:
        return pd.DataFrame({"id": np.zeros(0, np.int64), **{name: np.zeros(0, bool) for name in ISSUE_TYPES},
                             **{f"{name}_score": np.zeros(0) for name in ISSUE_TYPES}})
    columns = {"id": np.array(readable, dtype=np.int64)}
    pixel_parts = []
    for start in range(0, len(readable), PIXEL_CHUNK):
        chunk = readable[start:start + PIXEL_CHUNK]
        as_is = _find_issues(_Photos(len(chunk), lambda i: open_cached(folder, chunk[i])),
                             {name: {} for name in PIXEL_ISSUES if name != "blurry"})
        inverted = _find_issues(_Photos(len(chunk), lambda i: ImageOps.invert(open_cached(folder, chunk[i]))),
                                {"blurry": BLURRY_PARAMS})
        pixel_parts.append(as_is.join(inverted))
        if progress is not None:
            progress(start + len(chunk), len(readable))
    pixels = pd.concat(pixel_parts, ignore_index=True)
    sources = [catalogue.image_path(i) for i in readable]
    shapes = _find_issues(_Photos(len(sources), lambda i: _header_only(sources[i])),
                          {name: {} for name in SHAPE_ISSUES})
    for name, found in [*((name, pixels) for name in PIXEL_ISSUES), *((name, shapes) for name in SHAPE_ISSUES)]:
        columns[name] = found[f"is_{name}_issue"].to_numpy(dtype=bool)
        columns[f"{name}_score"] = found[f"{name}_score"].to_numpy(dtype=float)
    return pd.DataFrame(columns)


def issue_ids(issues: pd.DataFrame) -> dict[str, list[int]]:
    """Per ISSUE_TYPES type, the ids with that issue, worst (lowest score) first."""
    return {name: issues.loc[issues[name]].sort_values(f"{name}_score", kind="stable")["id"].tolist()
            for name in ISSUE_TYPES}


def exact_duplicates(catalogue: Catalogue, ids: Sequence[int]) -> list[list[int]]:
    """Groups of ids whose photo files hold the same bytes, each sorted, largest group first (ties by
    smallest id). Only files whose size another file shares are read and hashed."""
    by_size: dict[int, list[int]] = defaultdict(list)
    for product_id in dict.fromkeys(int(i) for i in ids):
        try:
            by_size[catalogue.image_path(product_id).stat().st_size].append(product_id)
        except OSError:
            continue
    by_content: dict[str, list[int]] = defaultdict(list)
    for same_size in by_size.values():
        if len(same_size) > 1:
            for product_id in same_size:
                by_content[_content_hash(catalogue.image_path(product_id))].append(product_id)
    groups = [sorted(group) for group in by_content.values() if len(group) > 1]
    return sorted(groups, key=lambda group: (-len(group), group[0]))


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()
