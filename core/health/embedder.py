"""Per-photo embeddings computed: a backbone's pooled features, through the model's own eval transform
and normalisation (core.images.transforms), kept in the cache file of core.health.embeddings.

An `EmbeddingModel` is a timm backbone created with num_classes=0 (it returns pooled features,
(batch, dim)) and its data config: the offline pretrained backbone (`pretrained_model`), or a
run's trained backbone (training.health.embedding_model hands one over; core never imports
training). Photos are read from the image cache (core.images.cache) at the model's input size.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from core.data.catalogue import Catalogue
from core.health.embeddings import (
    PRETRAINED_BACKBONE,
    PRETRAINED_IMAGE_SIZE,
    Embeddings,
    ModelIdentity,
    embeddings_file,
    normalise,
    pretrained_identity,
    read_cache,
    write_cache,
)
from core.images.cache import as_cached, build_image_cache, cache_folder
from core.images.transforms import Normalise, data_config, eval_transform
from core.model.backbones import create_backbone
from core.model.datamodule import CatalogueImages
from core.model.predictor import CPU_FORWARD_BATCH

# Computes the features of cached photos: (model, cache folder, ids) -> (ids, normalised features) per batch.
CachedEmbedder = Callable[["EmbeddingModel", Path, np.ndarray], Iterator[tuple[np.ndarray, np.ndarray]]]

SAVE_EVERY_S = 300  # a long embedding run saves what it has this often: an interruption loses at most this much


@dataclasses.dataclass(frozen=True, eq=False)
class EmbeddingModel:
    """A backbone returning pooled features, (batch, 3, H, W) -> (batch, dim), and its timm data
    config at the input size used (`core.images.transforms.data_config`)."""

    identity: ModelIdentity
    backbone: nn.Module
    data_cfg: dict

    @property
    def image_size(self) -> int:
        return int(self.data_cfg["input_size"][1])


def pretrained_model(backbone: str = PRETRAINED_BACKBONE, image_size: int = PRETRAINED_IMAGE_SIZE) -> EmbeddingModel:
    """The backbone with its offline ImageNet weights (core.model.backbones), no classifier, in eval mode."""
    identity = pretrained_identity(backbone, image_size)
    net, _ = create_backbone(backbone, "offline", num_classes=0)
    return EmbeddingModel(identity, net.eval(), data_config(net, image_size))


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


@torch.inference_mode()
def _forward(backbone: nn.Module, normalise_images: Normalise, batch: torch.Tensor, device: torch.device) -> np.ndarray:
    """Features (float32 [b, dim]) of a uint8 batch [b, 3, H, W], normalised on `device`."""
    images = normalise_images(batch.to(device, non_blocking=True), torch.channels_last)
    return backbone(images).float().cpu().numpy()


def feature_extractor(model: EmbeddingModel, device: torch.device) -> Callable[[torch.Tensor], np.ndarray]:
    """uint8 batch [b, 3, H, W] (the eval transform's) -> L2-normalised features float32 [b, dim], on `device`:
    what `catalogue_embeddings` computes per batch, here or on a Ray worker (training.scale)."""
    backbone = model.backbone.eval().to(device, memory_format=torch.channels_last)
    normalise_images = Normalise.from_config(model.data_cfg)
    return lambda batch: normalise(_forward(backbone, normalise_images, batch, device))


def embed_images(model: EmbeddingModel, images: Sequence[Image.Image],
                 device: str | torch.device = "cpu") -> np.ndarray:
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
    embed: CachedEmbedder | None = None,
) -> Embeddings:
    """The embeddings of catalogue `ids` (default: every row), in that order, from the cache file
    where fresh and computed (then cached) where not.

    Photos that cannot be read are left out (the image cache warns about each), so the result can
    hold fewer ids than asked. `progress(done, total)` counts the photos embedded now (total: those
    not cached), after their image cache is built; what is done is saved every SAVE_EVERY_S seconds,
    so an interrupted run goes on from there next time. batch_size: photos per forward pass on a GPU (on
    the CPU, CPU_FORWARD_BATCH: faster there); num_workers: DataLoader processes decoding photos.
    embed: computes the features of cached photos elsewhere (training.scale.ray_embedder: on a Ray
    cluster); None: here, on `device`.
    """
    device = torch.device(device)
    wanted = list(dict.fromkeys(int(i) for i in (catalogue.frame["id"].tolist() if ids is None else ids)))
    path = embeddings_file(workspace, catalogue.root, model.identity.key)
    entries = read_cache(path, model.identity.stamp)
    stats = _source_stats(catalogue, wanted)
    stale = [i for i in wanted if i in stats and (i not in entries or entries[i][0] != stats[i])]
    if stale:
        folder = cache_folder(workspace, catalogue.root, model.image_size)
        report = build_image_cache(catalogue, stale, model.image_size, folder)
        readable = np.array([i for i in stale if i not in report.failed], dtype=np.int64)
        saved, done = time.monotonic(), 0
        if progress is not None:
            progress(0, len(readable))
        batches = (embed(model, folder, readable) if embed is not None
                   else _embed_cached(model, folder, readable, device, batch_size, num_workers))
        for batch_ids, features in batches:
            for product_id, row in zip(batch_ids.tolist(), features.astype(np.float16)):
                entries[product_id] = (stats[product_id], row)
            done += len(batch_ids)
            if progress is not None:
                progress(done, len(readable))
            if time.monotonic() - saved > SAVE_EVERY_S and done < len(readable):
                write_cache(path, model.identity.stamp, entries)
                saved = time.monotonic()
        write_cache(path, model.identity.stamp, entries)
    kept = [i for i in wanted if i in stats and i in entries and entries[i][0] == stats[i]]
    features = np.stack([entries[i][1] for i in kept]).astype(np.float32) if kept else np.zeros((0, 0), np.float32)
    return Embeddings(np.array(kept, dtype=np.int64), normalise(features), model.identity.key)


def _embed_cached(model: EmbeddingModel, folder: Path, ids: np.ndarray, device: torch.device, batch_size: int,
                  num_workers: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids int64 [b], normalised features float32 [b, dim]) of cached photos `ids`, batch by batch, in order."""
    extract = feature_extractor(model, device)
    step = CPU_FORWARD_BATCH if device.type == "cpu" else batch_size
    # No labels: the dataset's label columns are empty ([n, 0]).
    dataset = CatalogueImages(folder, ids, np.zeros((len(ids), 0), dtype=np.int64), eval_transform(model.data_cfg))
    loader = DataLoader(dataset, batch_size=step, num_workers=num_workers, pin_memory=device.type == "cuda")
    for batch in loader:
        yield batch["id"].numpy(), extract(batch["image"])
