"""Training data: the catalogue's cached photos, their encoded labels, and Lightning's DataModule over a split.

Batches are dicts {"image": uint8 [B, 3, H, W] (RGB, 0-255: cropped and resized, not yet
normalised), "labels": int64 [B, n_heads] (schema.encode: IGNORE_INDEX where ignored, columns in
schema.heads order), "id": int64 [B]}, the format TaggerModule takes. The workers only decode and
crop; TaggerModule normalises on the device after the transfer (core.images.transforms.Normalise), so a
batch is a quarter of float's bytes to collate, pin and copy.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from core.data.catalogue import Catalogue
from core.data.schema import LabelSchema
from core.data.split import SPLITS, capped_selection
from core.images.cache import CacheReport, build_image_cache, cache_folder, open_cached
from core.images.transforms import Transform, eval_transform, train_transform

# Mixed into the seed for the max_samples order, so that order is independent of a split made
# with the same seed (the split sends each stratum's smallest hashes to val).


class CatalogueImages(Dataset):
    """Cached photos with their labels: item i -> {"image": transform(photo) uint8 [3, H, W],
    "labels": int64 [n_heads], "id": int64 []}; the default collate stacks them into a batch."""

    def __init__(self, folder: Path, ids: np.ndarray, labels: np.ndarray, transform: Transform) -> None:
        ids, labels = np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64)
        if ids.ndim != 1 or labels.ndim != 2 or len(labels) != len(ids):
            raise ValueError(f"need ids [n] and labels [n, heads], got shapes {ids.shape} and {labels.shape}")
        self.folder, self.ids, self.labels, self.transform = Path(folder), ids, labels, transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        product_id = int(self.ids[index])
        return {
            "image": self.transform(open_cached(self.folder, product_id)),
            "labels": torch.from_numpy(self.labels[index]),
            "id": torch.tensor(product_id),
        }


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class CatalogueDataModule(L.LightningDataModule):
    """Train/val loaders over a catalogue's split, from the image cache.

    split: "train"/"val" per catalogue row (index = catalogue.frame.index; `split_catalogue`).
    image_size: the model's input side; data_cfg: the backbone's timm data config at that size
        (`core.images.transforms.data_config(model, image_size)`), whose size and interpolation both
        transforms take (its mean and std are the module's business).
    cache_root: the folder under which the cache lives (the workspace): `cache_folder(cache_root,
        catalogue.root, image_size)`.
    max_samples: cap on the rows used, train and val together (see `capped_selection`); only
        those are cached. Photos that fail to decode are then left out, so a split can end up a
        few rows short; `cache_report.failed` says which and why.
    train_scale: RandomResizedCrop's area range for training.
    progress: `progress(done, total)` while the cache is built.

    After `setup` (which builds the cache through `prepare_data` unless that already ran):
    `cache_report`, `train_ids`, `val_ids` (int64, catalogue order), `train_set`, `val_set`.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        schema: LabelSchema,
        split: pd.Series,
        image_size: int,
        data_cfg: dict,
        batch_size: int = 64,
        num_workers: int = 2,
        *,
        cache_root: Path,
        max_samples: int | None = None,
        seed: int = 0,
        train_scale: tuple[float, float] = (0.7, 1.0),
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        super().__init__()
        frame = catalogue.frame
        if not split.index.equals(frame.index):
            raise ValueError("split must have the catalogue frame's index (as returned by split_catalogue(frame))")
        unknown = sorted(set(split.unique()) - set(SPLITS))
        if unknown:
            raise ValueError(f"split holds unknown values {unknown}; valid: {', '.join(SPLITS)}")
        _positive_int("image_size", image_size)
        if tuple(data_cfg["input_size"][1:]) != (image_size, image_size):
            raise ValueError(
                f"data_cfg input_size {tuple(data_cfg['input_size'])} does not match image_size={image_size}; "
                "make it with core.images.transforms.data_config(model, image_size)"
            )
        _positive_int("batch_size", batch_size)
        if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if max_samples is not None:
            _positive_int("max_samples", max_samples)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"seed must be an integer, got {seed!r}")

        self.catalogue, self.schema = catalogue, schema
        self.batch_size, self.num_workers, self.progress = batch_size, num_workers, progress
        self.image_size = image_size
        self.eval_transform = eval_transform(data_cfg)
        self.train_transform = train_transform(data_cfg, train_scale)
        self.cache_folder = cache_folder(cache_root, catalogue.root, image_size)
        ids = frame["id"].to_numpy(dtype=np.int64)
        selected = capped_selection(ids, split.to_numpy(), max_samples, seed)
        self._split_ids = {name: ids[selected & (split == name).to_numpy()] for name in SPLITS}
        self._row_of = pd.Series(np.arange(len(ids)), index=ids)  # catalogue ids are unique
        self.cache_report: CacheReport | None = None
        self.train_ids = self.val_ids = None
        self.train_set = self.val_set = None

    def _build_cache(self, ids: np.ndarray) -> CacheReport:
        return build_image_cache(self.catalogue, ids, self.image_size, self.cache_folder, progress=self.progress)

    def _dataset(self, ids: np.ndarray, transform: Transform) -> CatalogueImages:
        labels = self.schema.encode(self.catalogue.frame.iloc[self._row_of.loc[ids].to_numpy()])
        return CatalogueImages(self.cache_folder, ids, labels, transform)

    def prepare_data(self) -> None:
        """Build the cache for the selected ids, once per DataModule (a later fit reuses the report)."""
        if self.cache_report is None:
            self.cache_report = self._build_cache(np.concatenate(list(self._split_ids.values())))

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # Lightning calls prepare_data on one process only
        if self.train_set is not None:
            return
        failed = list(self.cache_report.failed)
        kept = {name: ids[~np.isin(ids, failed)] for name, ids in self._split_ids.items()}
        self.train_ids, self.val_ids = kept["train"], kept["val"]
        self.train_set = self._dataset(self.train_ids, self.train_transform)
        self.val_set = self._dataset(self.val_ids, self.eval_transform)

    def _loader(self, dataset: CatalogueImages, shuffle: bool = False, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled; the last partial batch is dropped when there is at least one full batch
        (a batch of one breaks batch norm), so a small set still gives one batch."""
        return self._loader(self.train_set, shuffle=True, drop_last=len(self.train_set) >= self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def predict_dataloader(self, ids: Sequence[int] | None = None) -> DataLoader:
        """Catalogue `ids` (default: the val ids) in order, eval transform. Their photos are cached
        first; any that fail to decode are left out with a warning (batches carry their ids)."""
        if ids is None:
            return self._loader(self.val_set)
        ids = pd.unique(np.asarray(ids, dtype=np.int64))
        failed = list(self._build_cache(ids).failed)
        return self._loader(self._dataset(ids[~np.isin(ids, failed)], self.eval_transform))
