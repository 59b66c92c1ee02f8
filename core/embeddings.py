"""Per-photo embeddings: a backbone's pooled features, through the model's own eval transform and
normalisation (core.transforms), cached per dataset and model in the workspace.

An `EmbeddingModel` is a timm backbone created with num_classes=0 (it returns pooled features,
(batch, dim)) and its data config: the offline pretrained backbone (`pretrained_model`), or a
run's trained backbone (training.checkpoints.embedding_model hands one over; core never imports
training). Photos are read from the image cache (core.imagecache) at the model's input size.

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
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from core.backbones import OFFLINE_WEIGHTS, create_backbone
from core.data.catalogue import Catalogue
from core.datamodule import CatalogueImages
from core.imagecache import as_cached, build_image_cache, cache_folder
from core.prediction import CPU_FORWARD_BATCH
from core.transforms import Normalise, data_config, eval_transform

PRETRAINED_BACKBONE = "tf_efficientnet_lite0"  # offline ImageNet weights: no run and no network needed
PRETRAINED_IMAGE_SIZE = 224
FORMAT_VERSION = 1
SAVE_EVERY_S = 300  # a long embedding run saves what it has this often: an interruption loses at most this much
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
            raise ValueError(f"an embedding model key may hold letters, digits, '.', '_' and '-' only, got {self.key!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class EmbeddingModel:
    """A backbone returning pooled features, (batch, 3, H, W) -> (batch, dim), and its timm data
    config at the input size used (`core.transforms.data_config`)."""

    identity: ModelIdentity
    backbone: nn.Module
    data_cfg: dict

    @property
    def image_size(self) -> int:
        return int(self.data_cfg["input_size"][1])


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
    """The identity of `pretrained_model(backbone, image_size)`: its weights change only with the
    offline weights package's version."""
    if backbone not in OFFLINE_WEIGHTS:
        raise ValueError(f"no offline weights for {backbone!r}; choose one of {', '.join(OFFLINE_WEIGHTS)}")
    package = OFFLINE_WEIGHTS[backbone].distribution
    return ModelIdentity(f"pretrained-{backbone}-{image_size}px", f"{package} {importlib.metadata.version(package)}",
                         f"{backbone} with ImageNet weights (no run), {image_size} px")


def pretrained_model(backbone: str = PRETRAINED_BACKBONE, image_size: int = PRETRAINED_IMAGE_SIZE) -> EmbeddingModel:
    """The backbone with its offline ImageNet weights (core.backbones), no classifier, in eval mode."""
    identity = pretrained_identity(backbone, image_size)
    net, _ = create_backbone(backbone, "offline", num_classes=0)
    return EmbeddingModel(identity, net.eval(), data_config(net, image_size))


def embeddings_file(workspace: Path, dataset_root: Path, model_key: str) -> Path:
    """Where a dataset's embeddings by one model are cached (the module docstring)."""
    root = Path(dataset_root).expanduser().resolve()
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", root.name) or "dataset"
    return Path(workspace) / "embeddings" / f"{name}-{digest}" / f"{model_key}.npz"


def _source_stats(catalogue: Catalogue, ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """id -> (size, mtime_ns) of its photo; ids whose photo cannot be stat'ed are left out."""
    stats = {}
    for product_id in ids:
        try:
            stat = catalogue.image_path(product_id).stat()
        except OSError:
            continue
        stats[product_id] = (stat.st_size, stat.st_mtime_ns)
    return stats


def _read_cache(path: Path, stamp: str) -> dict[int, tuple[tuple[int, int], np.ndarray]]:
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


def _write_cache(path: Path, stamp: str, entries: dict[int, tuple[tuple[int, int], np.ndarray]]) -> None:
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
    entries = _read_cache(embeddings_file(workspace, dataset_root, identity.key), identity.stamp)
    ids = np.fromiter(entries, dtype=np.int64, count=len(entries))
    features = np.stack([entries[i][1] for i in ids.tolist()]).astype(np.float32) if len(ids) else np.zeros((0, 0), np.float32)
    return Embeddings(ids, normalise(features), identity.key)


def normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32; an all-zero row stays zero)."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1)


@torch.inference_mode()
def _forward(backbone: nn.Module, normalise_images: Normalise, batch: torch.Tensor, device: torch.device) -> np.ndarray:
    """Features (float32 [b, dim]) of a uint8 batch [b, 3, H, W], normalised on `device`."""
    images = normalise_images(batch.to(device, non_blocking=True), torch.channels_last)
    return backbone(images).float().cpu().numpy()


def embed_images(model: EmbeddingModel, images: Sequence[Image.Image], device: str | torch.device = "cpu") -> np.ndarray:
    """L2-normalised features (float32 [n, dim]) of RGB PIL images, preprocessed as catalogue photos
    are (through the image cache's copy, then the eval transform)."""
    device = torch.device(device)
    backbone = model.backbone.eval().to(device, memory_format=torch.channels_last)
    transform, normalise_images = eval_transform(model.data_cfg), Normalise.from_config(model.data_cfg)
    step = CPU_FORWARD_BATCH if device.type == "cpu" else 64
    tensors = [transform(as_cached(image, model.image_size)) for image in images]
    chunks = [_forward(backbone, normalise_images, torch.stack(tensors[start:start + step]), device)
              for start in range(0, len(tensors), step)]
    return normalise(np.concatenate(chunks)) if chunks else np.zeros((0, 0), dtype=np.float32)


def catalogue_embeddings(
    catalogue: Catalogue,
    model: EmbeddingModel,
    workspace: Path,
    ids: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    num_workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Embeddings:
    """The embeddings of catalogue `ids` (default: every row), in that order, from the cache file
    where fresh and computed (then cached) where not.

    Photos that cannot be read are left out (the image cache warns about each), so the result can
    hold fewer ids than asked. `progress(done, total)` counts the photos embedded now (total: those
    not cached), after their image cache is built; what is done is saved every SAVE_EVERY_S seconds,
    so an interrupted run goes on from there next time. batch_size: photos per forward pass on a GPU (on
    the CPU, CPU_FORWARD_BATCH: faster there); num_workers: DataLoader processes decoding photos.
    """
    device = torch.device(device)
    wanted = list(dict.fromkeys(int(i) for i in (catalogue.frame["id"].tolist() if ids is None else ids)))
    path = embeddings_file(workspace, catalogue.root, model.identity.key)
    entries = _read_cache(path, model.identity.stamp)
    stats = _source_stats(catalogue, wanted)
    stale = [i for i in wanted if i in stats and (i not in entries or entries[i][0] != stats[i])]
    if stale:
        folder = cache_folder(workspace, catalogue.root, model.image_size)
        report = build_image_cache(catalogue, stale, model.image_size, folder)
        readable = np.array([i for i in stale if i not in report.failed], dtype=np.int64)
        saved, done = time.monotonic(), 0
        if progress is not None:
            progress(0, len(readable))
        for batch_ids, features in _embed_cached(model, folder, readable, device, batch_size, num_workers):
            for product_id, row in zip(batch_ids.tolist(), features.astype(np.float16)):
                entries[product_id] = (stats[product_id], row)
            done += len(batch_ids)
            if progress is not None:
                progress(done, len(readable))
            if time.monotonic() - saved > SAVE_EVERY_S and done < len(readable):
                _write_cache(path, model.identity.stamp, entries)
                saved = time.monotonic()
        _write_cache(path, model.identity.stamp, entries)
    kept = [i for i in wanted if i in stats and i in entries and entries[i][0] == stats[i]]
    features = np.stack([entries[i][1] for i in kept]).astype(np.float32) if kept else np.zeros((0, 0), np.float32)
    return Embeddings(np.array(kept, dtype=np.int64), normalise(features), model.identity.key)


def _embed_cached(model: EmbeddingModel, folder: Path, ids: np.ndarray, device: torch.device, batch_size: int,
                  num_workers: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids int64 [b], normalised features float32 [b, dim]) of cached photos `ids`, batch by batch, in order."""
    backbone = model.backbone.eval().to(device, memory_format=torch.channels_last)
    step = CPU_FORWARD_BATCH if device.type == "cpu" else batch_size
    # No labels: the dataset's label columns are empty ([n, 0]).
    dataset = CatalogueImages(folder, ids, np.zeros((len(ids), 0), dtype=np.int64), eval_transform(model.data_cfg))
    loader = DataLoader(dataset, batch_size=step, num_workers=num_workers, pin_memory=device.type == "cuda")
    normalise_images = Normalise.from_config(model.data_cfg)
    for batch in loader:
        yield batch["id"].numpy(), normalise(_forward(backbone, normalise_images, batch["image"], device))
