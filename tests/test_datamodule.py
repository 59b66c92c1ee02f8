import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from core.data.catalogue import load_catalogue
from core.data.demo import generate_demo
from core.data.schema import IGNORE_INDEX, LabelSchema
from core.data.split import capped_selection, id_uniform, split_catalogue
from core.images.cache import SkippedImageWarning, open_cached
from core.images.transforms import data_config, eval_transform
from core.model.datamodule import CatalogueDataModule, CatalogueImages

N = 100
SIZE = 64


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return load_catalogue(generate_demo(tmp_path_factory.mktemp("demo") / "data", n=N, seed=5))


@pytest.fixture(scope="module")
def schema(catalogue) -> LabelSchema:
    return LabelSchema.fit(catalogue.frame, rare_policy="ignore", rare_min_count=5)


@pytest.fixture(scope="module")
def split(catalogue) -> pd.Series:
    return split_catalogue(catalogue.frame, val_fraction=0.25, seed=1)


@pytest.fixture(scope="module")
def cfg() -> dict:
    return data_config(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0), SIZE)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("workspace")  # one cache for the module's datamodules


def make(catalogue, schema, split, cfg, workspace, **kwargs) -> CatalogueDataModule:
    module = CatalogueDataModule(catalogue, schema, split, SIZE, cfg, **{
        "batch_size": 16, "num_workers": 0, "cache_root": workspace, **kwargs})
    module.prepare_data()
    module.setup("fit")
    return module


def ids_where(catalogue, split, name: str) -> np.ndarray:
    return catalogue.frame["id"].to_numpy()[(split == name).to_numpy()]


def test_split_is_respected_and_the_cache_reused(catalogue, schema, split, cfg, workspace):
    first = make(catalogue, schema, split, cfg, workspace)
    assert np.array_equal(first.train_ids, ids_where(catalogue, split, "train"))
    assert np.array_equal(first.val_ids, ids_where(catalogue, split, "val"))
    assert len(first.val_ids) == 25 and not set(first.train_ids) & set(first.val_ids)
    assert first.cache_report.built + first.cache_report.reused == N and not first.cache_report.failed

    second = make(catalogue, schema, split, cfg, workspace)
    assert (second.cache_report.built, second.cache_report.reused) == (0, N)
    report = second.cache_report
    second.prepare_data()  # as Trainer.fit does after an explicit setup: the report stays
    second.setup("validate")
    assert second.cache_report is report
    assert second.cache_folder == first.cache_folder and second.cache_folder.is_relative_to(workspace)


def test_batches_have_the_documented_shapes_and_labels(catalogue, schema, split, cfg, workspace):
    module = make(catalogue, schema, split, cfg, workspace)
    batch = next(iter(module.train_dataloader()))
    # uint8 pixels, not yet normalised: the module normalises on its device (core.model.module)
    assert batch["image"].shape == (16, 3, SIZE, SIZE) and batch["image"].dtype == torch.uint8
    assert batch["labels"].shape == (16, 7) and batch["labels"].dtype == torch.int64
    assert batch["id"].shape == (16,) and batch["id"].dtype == torch.int64
    assert set(batch["id"].tolist()) <= set(module.train_ids.tolist())

    for loader in (module.train_dataloader(), module.val_dataloader()):
        for batch in loader:
            assert batch["image"].dtype == torch.uint8 and batch["image"].shape[1:] == (3, SIZE, SIZE)
            rows = catalogue.frame.set_index("id").loc[batch["id"].numpy()].reset_index()
            assert np.array_equal(batch["labels"].numpy(), schema.encode(rows))
    assert (schema.encode(catalogue.frame) == IGNORE_INDEX).any()  # the ignored label is exercised
    assert batch["image"].max().item() == 255  # the white background, as it was decoded


def test_loader_settings(catalogue, schema, split, cfg, workspace):
    module = make(catalogue, schema, split, cfg, workspace, num_workers=2)
    train, val = module.train_dataloader(), module.val_dataloader()
    assert (train.num_workers, train.persistent_workers, train.pin_memory) == (2, True, torch.cuda.is_available())
    assert train.drop_last and len(train) == len(module.train_ids) // 16 == 4
    assert not val.drop_last and len(val) == 2
    ids = torch.cat([batch["id"] for batch in val])  # through 2 worker processes
    assert ids.tolist() == module.val_ids.tolist()

    small = make(catalogue, schema, split, cfg, workspace, batch_size=128)
    assert not small.train_dataloader().drop_last and len(small.train_dataloader()) == 1
    assert small.train_dataloader().persistent_workers is False


def test_val_transform_is_deterministic_and_train_random(catalogue, schema, split, cfg, workspace):
    module = make(catalogue, schema, split, cfg, workspace)
    first, again = (next(iter(module.val_dataloader())) for _ in range(2))
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["id"], again["id"])
    expected = eval_transform(cfg)(open_cached(module.cache_folder, int(first["id"][0])))
    assert torch.equal(first["image"][0], expected)

    torch.manual_seed(0)
    one = module.train_set[0]["image"]
    assert not all(torch.equal(one, module.train_set[0]["image"]) for _ in range(3))


def test_max_samples_caps_deterministically(catalogue, schema, split, cfg, workspace, tmp_path):
    capped = make(catalogue, schema, split, cfg, tmp_path / "own-cache", max_samples=40, seed=0)
    assert (len(capped.train_ids), len(capped.val_ids)) == (30, 10)  # val share 25/100 of 40
    assert capped.cache_report.built == 40  # only the capped rows are cached
    assert set(capped.train_ids) <= set(ids_where(catalogue, split, "train"))
    assert set(capped.val_ids) <= set(ids_where(catalogue, split, "val"))

    same = make(catalogue, schema, split, cfg, workspace, max_samples=40, seed=0)
    assert np.array_equal(same.train_ids, capped.train_ids) and np.array_equal(same.val_ids, capped.val_ids)
    other = make(catalogue, schema, split, cfg, workspace, max_samples=40, seed=1)
    assert not np.array_equal(other.train_ids, capped.train_ids)
    larger = make(catalogue, schema, split, cfg, workspace, max_samples=60, seed=0)
    assert set(capped.train_ids) <= set(larger.train_ids)  # nested
    uncapped = make(catalogue, schema, split, cfg, workspace, max_samples=1000)
    assert len(uncapped.train_ids) + len(uncapped.val_ids) == N


def test_capped_selection_is_row_order_free_and_independent_of_the_split():
    ids = np.arange(1000, 3000, dtype=np.int64)
    split = np.where(np.arange(2000) % 4 == 0, "val", "train")
    keep = capped_selection(ids, split, 400, seed=7)
    assert keep.sum() == 400 and keep[split == "val"].sum() == 100
    order = np.random.default_rng(0).permutation(2000)
    assert np.array_equal(capped_selection(ids[order], split[order], 400, seed=7), keep[order])
    # A split made with the same seed sends the smallest hashes to val; the cap must not just
    # take the next-smallest ones from train (it would, ordered by the same hash).
    hashed_split = split_catalogue(pd.DataFrame({"id": ids, "articleType": "x"}), 0.25, seed=7).to_numpy()
    kept_train = capped_selection(ids, hashed_split, 400, seed=7) & (hashed_split == "train")
    assert kept_train.sum() == 300 and id_uniform(ids[kept_train], 7).max() > 0.9


def test_a_bad_image_is_skipped_and_the_run_goes_on(catalogue, schema, split, cfg, tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "styles.csv").write_bytes((catalogue.root / "styles.csv").read_bytes())
    for path in catalogue.images_dir.iterdir():
        (root / "images" / path.name).write_bytes(path.read_bytes())
    bad_train, bad_val = ids_where(catalogue, split, "train")[0], ids_where(catalogue, split, "val")[0]
    (root / "images" / f"{bad_train}.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "images" / f"{bad_val}.jpg").write_bytes(b"")
    copy = load_catalogue(root)

    with pytest.warns(SkippedImageWarning) as caught:
        module = make(copy, schema, split, cfg, tmp_path / "ws")
    assert len(caught) == 2 and sorted(module.cache_report.failed) == sorted([bad_train, bad_val])
    assert bad_train not in module.train_ids and bad_val not in module.val_ids
    assert len(module.train_ids) + len(module.val_ids) == N - 2
    assert sum(len(batch["id"]) for batch in module.val_dataloader()) == len(module.val_ids)


def test_predict_dataloader(catalogue, schema, split, cfg, workspace):
    module = make(catalogue, schema, split, cfg, workspace, max_samples=20)
    outside = [int(i) for i in ids_where(catalogue, split, "train") if i not in module.train_ids][:5]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = list(module.predict_dataloader(outside + outside[:2]))
    assert torch.cat([batch["id"] for batch in batches]).tolist() == outside  # in order, once each
    assert batches[0]["image"].shape == (5, 3, SIZE, SIZE) and batches[0]["image"].dtype == torch.uint8
    assert torch.cat([batch["id"] for batch in module.predict_dataloader()]).tolist() == module.val_ids.tolist()


def test_dataset_and_module_inputs_are_checked(catalogue, schema, split, cfg, workspace):
    with pytest.raises(ValueError, match=r"ids \[n\] and labels \[n, heads\].*\(3,\) and \(2, 7\)"):
        CatalogueImages(workspace, np.arange(3), np.zeros((2, 7)), eval_transform(cfg))
    base = dict(catalogue=catalogue, schema=schema, split=split, image_size=SIZE, data_cfg=cfg, cache_root=workspace)
    with pytest.raises(ValueError, match="split must have the catalogue frame's index"):
        CatalogueDataModule(**{**base, "split": split.iloc[1:]})
    with pytest.raises(ValueError, match=r"unknown values \['test'\]; valid: train, val"):
        CatalogueDataModule(**{**base, "split": split.replace("val", "test")})
    with pytest.raises(ValueError, match=r"input_size \(3, 64, 64\) does not match image_size=96"):
        CatalogueDataModule(**{**base, "image_size": 96})
    with pytest.raises(ValueError, match="max_samples must be a positive int, got 0"):
        CatalogueDataModule(**base, max_samples=0)
    with pytest.raises(ValueError, match="num_workers must be an int >= 0, got -1"):
        CatalogueDataModule(**base, num_workers=-1)
    with pytest.raises(ValueError, match=r"not in the catalogue"):
        make(catalogue, schema, split, cfg, workspace).predict_dataloader([1, 2])
