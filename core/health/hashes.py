"""Perceptual hashes of photos: the near-duplicate check, beside embedding similarity, that
re-encoding does not fool.

A photo downscaled and saved again at a low JPEG quality keeps its layout of light and dark, so its
DCT perceptual hash (imagehash.phash at 16 x 16: 256 bits) moves by a few bits, while its embedding
can move past the similarity threshold (issue 25: 19 of 30 copies at 0.8 scale and JPEG quality 55
found by embeddings alone). Two photos whose hashes differ in at most HASH_DISTANCE bits are
near-duplicates. tests/benchmarks/bench_near_duplicates.py measures the distances on the real sample.
Flipped or cropped copies change the hash; the embeddings find those.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

HASH_SIZE = 16  # phash's side: 16 x 16 = 256 bits; at 8 x 8 (64 bits) distinct catalogue photos collide
HASH_BITS = HASH_SIZE * HASH_SIZE
# Re-encoded copies of real sample photos moved at most 6 bits (median 2); of 1,000 sample photos, the
# nearest other photo's hash was 20 bits or more away for 99 % (tests/benchmarks/bench_near_duplicates.py).
HASH_DISTANCE = 12


def perceptual_hashes(images: Iterable[Image.Image]) -> np.ndarray:
    """The perceptual hash of each image, packed: uint8 [n, HASH_BITS / 8]."""
    import imagehash  # here: reading a health folder needs no hashing library

    rows = [np.packbits(imagehash.phash(image, hash_size=HASH_SIZE).hash.flatten()) for image in images]
    return np.stack(rows) if rows else np.zeros((0, HASH_BITS // 8), dtype=np.uint8)


def hash_pairs(hashes: np.ndarray, max_distance: int = HASH_DISTANCE) -> np.ndarray:
    """Pairs of rows whose hashes differ in at most `max_distance` bits, int64 [p, 2], each pair once
    (smaller row first), sorted; through faiss's exact binary index (Hamming distance)."""
    import faiss  # here, as core.health.similarity does

    hashes = np.ascontiguousarray(hashes, dtype=np.uint8)
    if hashes.ndim != 2 or hashes.shape[1] != HASH_BITS // 8:
        raise ValueError(f"hashes must be uint8 [n, {HASH_BITS // 8}], got shape {hashes.shape}")
    if not len(hashes):
        return np.zeros((0, 2), dtype=np.int64)
    index = faiss.IndexBinaryFlat(HASH_BITS)
    index.add(hashes)
    limits, _, found = index.range_search(hashes, max_distance + 1)  # distances strictly below the radius
    source = np.repeat(np.arange(len(hashes)), np.diff(limits.astype(np.int64)))
    pairs = np.stack([source, found.astype(np.int64)], axis=1)
    pairs = pairs[pairs[:, 0] < pairs[:, 1]]
    return np.unique(pairs, axis=0).astype(np.int64).reshape(-1, 2)
