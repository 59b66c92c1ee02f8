"""Catalogues with planted data-health problems, for tests/test_health.py and tests/benchmarks/bench_health.py.

`planted_catalogue` copies some rows of a real catalogue into a new folder (photos linked, not
copied) and adds, under new ids with the original's labels, altered copies of some of its photos:
near-duplicates (resized, re-compressed, slightly cropped, flipped) and bad photos (blurred, darkened).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter, ImageOps

from core.data.catalogue import IMAGES_DIR, STYLES_FILE, load_catalogue

FIRST_PLANTED_ID = 900_000  # above every id of Kaggle's catalogue


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _resized(image: Image.Image) -> bytes:
    return _jpeg(image.resize((max(1, image.width * 3 // 4), max(1, image.height * 3 // 4)), Image.Resampling.BICUBIC))


def _recompressed(image: Image.Image) -> bytes:
    return _jpeg(image, quality=40)


def _cropped(image: Image.Image) -> bytes:
    dx, dy = image.width // 25, image.height // 25  # 4 % off each side
    return _jpeg(image.crop((dx, dy, image.width - dx, image.height - dy)))


def _flipped(image: Image.Image) -> bytes:
    return _jpeg(ImageOps.mirror(image))


def _blurred(image: Image.Image) -> bytes:
    return _jpeg(image.filter(ImageFilter.GaussianBlur(radius=max(image.size) / 25)))


def _darkened(image: Image.Image) -> bytes:
    return _jpeg(Image.eval(image, lambda value: value // 8))


def _downscaled(scale: float, quality: int):
    def alter(image: Image.Image) -> bytes:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return _jpeg(image.resize(size, Image.Resampling.BICUBIC), quality=quality)
    return alter


COPIES = {"resized": _resized, "recompressed": _recompressed, "cropped": _cropped, "flipped": _flipped}
# Copies a catalogue holds as the same photo but embeddings miss at the default threshold (issue 25).
REENCODED = {"0.8 scale, quality 55": _downscaled(0.8, 55), "0.9 scale, quality 40": _downscaled(0.9, 40)}
BAD_PHOTOS = {"blurry": _blurred, "dark": _darkened}


@dataclass
class PlantedCatalogue:
    """folder: the new catalogue; originals: planted id -> the id it was made from; kind: planted
    id -> what was done to it (a COPIES or BAD_PHOTOS key)."""

    folder: Path
    originals: dict[int, int] = field(default_factory=dict)
    kind: dict[int, str] = field(default_factory=dict)

    def planted(self, *kinds: str) -> list[int]:
        return [product_id for product_id, made in self.kind.items() if made in kinds]


def planted_catalogue(source: Path, out: Path, rows: int, copies: int, bad: int = 0, seed: int = 0,
                      kinds: dict | None = None, ids: list[int] | None = None) -> PlantedCatalogue:
    """A catalogue in `out` holding `rows` rows of `source` (a random sample of `ids`, default every
    row; all of them when `rows` is larger), plus `copies` near-duplicate photos of as many distinct
    sampled rows (the `kinds` alterations in turn, default COPIES) and `bad` blurred or darkened
    photos (in turn) of other rows."""
    catalogue = load_catalogue(source)
    rng = np.random.default_rng(seed)
    frame = catalogue.frame if ids is None else catalogue.frame[catalogue.frame["id"].isin(ids)]
    kept = frame.iloc[np.sort(rng.permutation(len(frame))[:rows])]
    images = out / IMAGES_DIR
    images.mkdir(parents=True)
    for product_id in kept["id"].tolist():
        os.symlink(catalogue.image_path(product_id), images / f"{product_id}.jpg")
    chosen = rng.permutation(kept["id"].to_numpy())[:copies + bad].tolist()
    kinds = COPIES if kinds is None else kinds
    alterations = [list(kinds.items())[i % len(kinds)] for i in range(copies)]
    alterations += [list(BAD_PHOTOS.items())[i % len(BAD_PHOTOS)] for i in range(bad)]
    result, new_rows = PlantedCatalogue(out), []
    for offset, (original, (kind, alter)) in enumerate(zip(chosen, alterations)):
        planted = FIRST_PLANTED_ID + offset
        with Image.open(catalogue.image_path(original)) as photo:
            (images / f"{planted}.jpg").write_bytes(alter(photo.convert("RGB")))
        new_rows.append(kept[kept["id"] == original].assign(id=planted))
        result.originals[planted], result.kind[planted] = original, kind
    pd.concat([kept, *new_rows]).to_csv(out / STYLES_FILE, index=False)  # missing values as empty fields
    return result


def with_unreadable_photos(out: Path, n: int = 16, seed: int = 0) -> tuple[Path, dict[int, str]]:
    """A generated demo of `n` photos in `out` (few enough that its map needs no UMAP), two of
    them made unreadable: one not an image at all, one JPEG cut short. Returns (folder, id -> what
    was done)."""
    from core.data.demo import generate_demo

    folder = generate_demo(out, n=50, seed=seed)  # its least
    styles = pd.read_csv(folder / STYLES_FILE, dtype=str, keep_default_na=False)
    styles.iloc[:n].to_csv(folder / STYLES_FILE, index=False)
    catalogue = load_catalogue(folder)
    garbage, cut = catalogue.frame["id"].iloc[[2, 5]].tolist()
    catalogue.image_path(garbage).write_bytes(b"this is not a photo")
    data = catalogue.image_path(cut).read_bytes()
    catalogue.image_path(cut).write_bytes(data[: len(data) // 2])
    return folder, {garbage: "garbage", cut: "cut"}
