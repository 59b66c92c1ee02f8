"""corrections=true: a run trains on the label store's decisions, frozen in a snapshot at its start."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core import workspace
from core.data.catalogue import load_catalogue
from core.data.demo import generate_demo
from core.data.split import split_catalogue
from core.labels.corrections import corrections_snapshot
from core.labels.store import LabelStore
from core.labels.tables import ReviewStatus
from training.config import TrainConfig
from training.evaluate import evaluate_checkpoint
from training.rows import run_catalogue
from training.run_folder import RunFolder
from training.train import train

from conftest import ANA, BEN

TINY = ["epochs=1", "image_size=64", "batch_size=16", "num_workers=0", "rare_policy=keep"]


@pytest.fixture
def reviewed(workspace_home, tmp_path):
    """A demo catalogue with three decisions: one row relabelled, one not a product, one new photo reviewed."""
    demo = generate_demo(tmp_path / "demo", n=80, seed=2)
    catalogue = load_catalogue(demo)
    store = LabelStore(workspace=workspace_home)
    relabelled, dropped, source = (int(i) for i in catalogue.frame["id"].iloc[:3])
    items = store.add_catalogue_items(catalogue, [relabelled, dropped], ANA)
    old_type = items[0].baseline["articleType"]
    new_type = next(value for value in catalogue.frame["articleType"].unique() if value != old_type)
    store.review(items[0].item, {"articleType": new_type}, ANA)
    store.mark(items[1].item, ReviewStatus.NOT_PRODUCT, ANA)
    photo = store.add_image(demo, catalogue.image_path(source).read_bytes(), "new-arrival.jpg", ANA)
    store.review(photo.item,
                 catalogue.frame.set_index("id").loc[source, ["gender", "articleType", "baseColour"]].to_dict(), ANA)
    return demo, catalogue, store, {"relabelled": (relabelled, new_type), "dropped": dropped, "new": photo.product_id}


def test_a_run_with_corrections_trains_on_the_decisions_frozen_at_its_start(reviewed):
    demo, catalogue, store, decisions = reviewed
    cfg = TrainConfig.from_recipe("default").with_overrides([f"data={demo}", "corrections=true", *TINY])
    record = train(cfg)
    folder = Path(record.folder)
    snapshot = json.loads(RunFolder(folder).corrections.read_text())
    assert snapshot == corrections_snapshot(store, demo)
    # 80 rows, one dropped, one new photo added to training.
    assert record.metrics["train_rows"] + record.metrics["val_rows"] == 80
    relabelled, new_type = decisions["relabelled"]

    # A later decision does not change what this run trained on.
    [item] = store.add_catalogue_items(catalogue, [relabelled], BEN)
    store.review(item.item, {"articleType": catalogue.frame["articleType"].iloc[10]}, BEN)
    frame = run_catalogue(cfg, folder).frame.set_index("id")
    assert frame.loc[relabelled, "articleType"] == new_type
    assert decisions["dropped"] not in frame.index and decisions["new"] in frame.index

    split = RunFolder(folder).read_split()
    assert split.index.equals(frame.index)  # every row the run trained and validated on, by id
    assert split[decisions["new"]] == "train"
    # The catalogue's own rows keep the split a run without corrections gets, but the relabelled row's stratum.
    plain = split_catalogue(catalogue.frame, val_fraction=cfg.val_fraction,
                            seed=cfg.seed).set_axis(catalogue.frame["id"])
    kept = [i for i in frame.index if i in plain.index and i != relabelled]
    moved = (split[kept] != plain[kept]).sum()
    assert moved <= 2, f"{moved} rows changed split"

    # Evaluating the run's validation split again sees the same rows with the same corrected labels.
    trained = pd.read_parquet(RunFolder(folder).evaluation() / "predictions.parquet")
    target, _ = evaluate_checkpoint(folder)
    again = pd.read_parquet(target / "predictions.parquet")
    assert sorted(again["id"]) == sorted(trained["id"])
    heads = list(cfg.heads)
    assert again.set_index("id")[heads].sort_index().equals(trained.set_index("id")[heads].sort_index())


def test_without_corrections_the_store_is_ignored(reviewed):
    demo, catalogue, _, decisions = reviewed
    cfg = TrainConfig.from_recipe("default").with_overrides([f"data={demo}", *TINY])
    folder = workspace.workspace_dir() / "runs" / "unstarted"
    frame = run_catalogue(cfg, folder).frame
    assert len(frame) == 80 and decisions["dropped"] in set(frame["id"])
    assert not RunFolder(folder).corrections.exists()
