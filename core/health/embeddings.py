"""Per-photo embeddings, known without torch: which model they come from (`ModelIdentity`), the
vectors (`Embeddings`), and their cache file in the workspace. core.health.embedder computes them.

The cache file `<workspace>/embeddings/<dataset folder name>-<hash of its path>/<model key>.npz`
holds, per product id, the source photo's (size, mtime_ns) when it was embedded and its
L2-normalised features (float16: half the disk and memory, cosine similarities within ~1e-3),
plus the model's stamp. A request re-embeds only the ids whose photo changed or that are new; a
changed stamp (another checkpoint) re-embeds everything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.model.options import OFFLINE_WEIGHTS

PRETRAINED_BACKBONE = "tf_efficientnet_lite0"  # offline ImageNet weights: no run and no network needed
PRETRAINED_IMAGE_SIZE = 224
FORMAT_VERSION = 1
_FILE_KEYS = ("format_version", "stamp", "ids", "sources", "features")


@dataclasses.dataclass(frozen=True)
class ModelIdentity:
    """Which model embeddings come from, known without loading it.

    key: names the model's files (letters, digits, `.`, `_`, `-`); stamp: changes whenever its
    weights do (a package version, a checkpoint's size and mtime): files with another stamp are
    recomputed; description: what it is, for a person.
    """

    key: str
    stamp: str
    description: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.key):
            raise ValueError("an embedding model key may hold letters, digits, '.', '_' and '-' only, "
                             f"got {self.key!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class Embeddings:
    """ids: int64 [n], catalogue ids; features: float32 [n, dim], L2-normalised, row i of ids[i];
    model: the EmbeddingModel's key."""

    ids: np.ndarray
    features: np.ndarray
    model: str

    def __len__(self) -> int:
        return len(self.ids)

    def rows_of(self, ids: Sequence[int]) -> np.ndarray:
        """Row indices of `ids` (int64 [m]); KeyError naming ids without an embedding."""
        position = {int(product_id): row for row, product_id in enumerate(self.ids.tolist())}
        missing = [int(product_id) for product_id in ids if int(product_id) not in position]
        if missing:
            raise KeyError(f"no embedding for id(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        return np.array([position[int(product_id)] for product_id in ids], dtype=np.int64)


def pretrained_identity(backbone: str = PRETRAINED_BACKBONE, image_size: int = PRETRAINED_IMAGE_SIZE) -> ModelIdentity:
    """The identity of `core.health.embedder.pretrained_model(backbone, image_size)`: its weights change only with the
    offline weights package's version."""
    if backbone not in OFFLINE_WEIGHTS:
        raise ValueError(f"no offline weights for {backbone!r}; choose one of {', '.join(OFFLINE_WEIGHTS)}")
    package = OFFLINE_WEIGHTS[backbone].distribution
    return ModelIdentity(f"pretrained-{backbone}-{image_size}px", f"{package} {importlib.metadata.version(package)}",
                         f"{backbone} with ImageNet weights (no run), {image_size} px")


def embeddings_file(workspace: Path, dataset_root: Path, model_key: str) -> Path:
    """Where a dataset's embeddings by one model are cached (the module docstring)."""
    root = Path(dataset_root).expanduser().resolve()
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", root.name) or "dataset"
    return Path(workspace) / "embeddings" / f"{name}-{digest}" / f"{model_key}.npz"


def read_cache(path: Path, stamp: str) -> dict[int, tuple[tuple[int, int], np.ndarray]]:
    """id -> ((size, mtime_ns), float16 features) from a cache file of this format and stamp; {} otherwise."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if set(_FILE_KEYS) - set(data.files) or int(data["format_version"]) != FORMAT_VERSION \
                    or str(data["stamp"]) != stamp:
                return {}
            ids, sources, features = data["ids"], data["sources"], data["features"]
    except (OSError, ValueError):
        return {}
    return {int(i): ((int(size), int(mtime)), row) for i, (size, mtime), row in zip(ids, sources, features)}


def write_cache(path: Path, stamp: str, entries: dict[int, tuple[tuple[int, int], np.ndarray]]) -> None:
    """Replace the cache file atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.fromiter(entries, dtype=np.int64, count=len(entries))
    sources = np.array([entries[i][0] for i in ids.tolist()], dtype=np.int64).reshape(len(ids), 2)
    features = np.stack([entries[i][1] for i in ids.tolist()]) if len(ids) else np.zeros((0, 0), np.float16)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp.npz")
    np.savez(temporary, format_version=FORMAT_VERSION, stamp=stamp, ids=ids, sources=sources,
             features=features.astype(np.float16))
    os.replace(temporary, path)


def cached_embeddings(workspace: Path, dataset_root: Path, identity: ModelIdentity) -> Embeddings:
    """Every embedding in the model's cache file for the dataset, as it is (nothing checked against
    the photos or computed): what a search for an uploaded photo runs over. Empty when there is none."""
    entries = read_cache(embeddings_file(workspace, dataset_root, identity.key), identity.stamp)
    ids = np.fromiter(entries, dtype=np.int64, count=len(entries))
    features = (np.stack([entries[i][1] for i in ids.tolist()]).astype(np.float32) if len(ids)
                else np.zeros((0, 0), np.float32))
    return Embeddings(ids, normalise(features), identity.key)


def normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32; an all-zero row stays zero)."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1)


