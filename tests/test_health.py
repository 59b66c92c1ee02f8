"""Data health: embeddings and their cache, similarity search, near-duplicate groups and leakage,
outliers, image-quality issues, the group-aware split of a run, and `python -m training health`.

Planted problems come from tests/health_support.py: altered copies of photos under new ids
(found as near-duplicates) and blurred or darkened photos (found by the image-quality checks), on
the real sample when it is present and on the generated demo otherwise.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core import workspace
from core.data.catalogue import load_catalogue
from core.data.demo import generate_demo
from core.health.embedder import catalogue_embeddings, embed_images, pretrained_model
from core.health.embeddings import ModelIdentity, embeddings_file, normalise
from core.health.files import (
    DuplicateMethod,
    Health,
    compute_health,
    group_table,
    health_summary,
    label_disagreements,
    leaked_ids,
    leaking_groups,
    load_health,
    map_frame,
)
from core.health.hashes import hash_pairs, perceptual_hashes
from core.health.image_quality import ISSUE_TYPES, exact_duplicates, image_issues, issue_ids
from core.health.similarity import (
    DEFAULT_THRESHOLD,
    IndexKind,
    SimilarityIndex,
    groups_of_pairs,
    nearest_neighbours,
    outlier_rows,
    outlier_scores,
    similar_pairs,
)
from core.images.cache import as_cached, build_image_cache, cache_folder, open_cached
from core.images.reading import open_rgb
from training.__main__ import main as training_cli
from training.config import TrainConfig
from training.health import default_split, folder_of
from training.rows import decide_split

from conftest import point_at_workspace
from health_support import COPIES, REENCODED, planted_catalogue, with_unreadable_photos
from test_transforms import reference_float


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("demo") / "data", n=60, seed=4)


@pytest.fixture(scope="module")
def small_model():
    """The pretrained backbone at 64 px: enough where the image size does not matter, and fast."""
    return pretrained_model(image_size=64)


# --- similarity search, groups, outliers


def unit_rows(*rows) -> np.ndarray:
    return normalise(np.array(rows, dtype=np.float32))


def test_neighbours_exclude_the_photo_itself_even_when_exact_copies_tie_with_it():
    features = unit_rows([1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0.9, 0.1])
    found = nearest_neighbours(SimilarityIndex(features), features, k=2)
    for row in range(len(features)):
        assert row not in found.rows[row].tolist()
    assert set(found.rows[0]) == {1, 2} and found.rows[3][0] == 4
    assert found.similarities[0].tolist() == pytest.approx([1.0, 1.0])


def test_pairs_above_the_threshold_chain_into_groups():
    # a~b 0.95, b~c 0.95, a~c 0.81, d alone: at 0.93 one chained group {a, b, c}; at 0.96 none.
    angle = np.arccos(0.95)
    features = unit_rows([1, 0, 0], [np.cos(angle), np.sin(angle), 0], [np.cos(2 * angle), np.sin(2 * angle), 0],
                         [0, 0, 1])
    found = nearest_neighbours(SimilarityIndex(features), features, k=3)
    assert similar_pairs(found, 0.93).tolist() == [[0, 1], [1, 2]]
    assert [group.tolist() for group in groups_of_pairs(4, similar_pairs(found, 0.93))] == [[0, 1, 2]]
    assert groups_of_pairs(4, similar_pairs(found, 0.96)) == []
    with pytest.raises(ValueError, match="cosine similarity"):
        similar_pairs(found, 1.5)


def test_the_approximate_index_finds_nearly_what_the_exact_one_finds():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 32))
    features = normalise(centres[rng.integers(0, 50, 3000)] + 0.3 * rng.normal(size=(3000, 32)))
    exact = SimilarityIndex(features, IndexKind.EXACT)
    approximate = SimilarityIndex(features, IndexKind.APPROXIMATE)
    assert approximate.kind == IndexKind.APPROXIMATE and SimilarityIndex(features).kind == IndexKind.EXACT
    _, truth = exact.search(features[:300], 10)
    _, found = approximate.search(features[:300], 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)])
    assert recall > 0.95
    with pytest.raises(ValueError, match="L2-normalised"):
        SimilarityIndex(features * 2)


def test_a_photo_unlike_every_other_is_the_outlier():
    rng = np.random.default_rng(1)
    cluster = normalise(np.array([1.0] + [0.0] * 15) + 0.1 * rng.normal(size=(200, 16)))
    far = normalise(np.array([[0.0] * 15 + [1.0]]))
    features = np.concatenate([cluster, far])
    scores = outlier_scores(nearest_neighbours(SimilarityIndex(features), features))
    assert outlier_rows(scores).tolist()[0] == 200
    assert scores[200] > scores[:200].max()


def test_leakage_is_a_group_on_both_sides_and_its_validation_members():
    split = pd.Series(["train", "val", "val", "train", "val"], index=[1, 2, 3, 4, 5])
    groups = [[1, 2, 3], [4], [3, 5], [6, 1]]  # 6 is in no split
    assert leaking_groups(groups, split) == [[1, 2, 3]]
    assert leaked_ids(groups, split) == [2, 3]
    frame = pd.DataFrame({"id": [1, 2, 3, 5], "gender": ["Men", "Men", "Women", "Men"],
                          "usage": ["Casual", "Casual", "Casual", None]})
    assert (label_disagreements([[1, 2, 3], [2, 5]], frame, ["gender", "usage"])
            == [{"ids": [1, 2, 3], "heads": ["gender"]}])
    table = group_table([[1, 2, 3], [2, 5]], split, frame, ["gender", "usage"], {(1, 2, 3): "embedding + hash"})
    assert table.to_dict("records") == [
        {"group": 1, "photos": 3, "found_by": "embedding + hash", "train": 1, "val": 2, "disagree_on": "gender"},
        {"group": 2, "photos": 2, "found_by": "", "train": 0, "val": 2, "disagree_on": ""},
    ]


# --- embeddings


def test_embeddings_are_cached_and_only_changed_photos_are_embedded_again(demo, small_model, tmp_path):
    catalogue = load_catalogue(demo)
    embedded = []
    first = catalogue_embeddings(catalogue, small_model, tmp_path, progress=lambda done, total: embedded.append(total))
    assert first.ids.tolist() == catalogue.frame["id"].tolist()
    assert first.features.shape == (60, small_model.backbone.num_features)
    assert np.allclose(np.linalg.norm(first.features, axis=1), 1, atol=1e-3)
    assert embedded[-1] == 60

    embedded.clear()
    again = catalogue_embeddings(catalogue, small_model, tmp_path, progress=lambda done, total: embedded.append(total))
    assert embedded == [] and np.array_equal(again.features, first.features)

    changed = catalogue.frame["id"].iloc[7]
    path = catalogue.image_path(changed)
    path.write_bytes(catalogue.image_path(catalogue.frame["id"].iloc[8]).read_bytes())
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    third = catalogue_embeddings(catalogue, small_model, tmp_path, progress=lambda done, total: embedded.append(total))
    assert embedded[-1] == 1
    assert third.features[7] == pytest.approx(third.features[8], abs=1e-3)  # the same photo now
    assert third.features[9] == pytest.approx(first.features[9])

    other = ModelIdentity(small_model.identity.key, "another checkpoint", "the same key, new weights")
    embedded.clear()
    catalogue_embeddings(catalogue, type(small_model)(other, small_model.backbone, small_model.data_cfg), tmp_path,
                         progress=lambda done, total: embedded.append(total))
    assert embedded[-1] == 60  # a new stamp: everything again
    assert embeddings_file(tmp_path, demo, other.key).is_file()


def test_embeddings_are_the_backbones_features_of_the_float_pipeline(demo, small_model, tmp_path):
    """Catalogue photos (uint8 batches from the image cache) and an upload (embed_images), each
    normalised on the device, against the float pipeline computed here on the same cached photos."""
    catalogue = load_catalogue(demo)
    wanted = catalogue.frame["id"].tolist()[:5]
    cached = catalogue_embeddings(catalogue, small_model, tmp_path, ids=wanted)
    folder = cache_folder(tmp_path, catalogue.root, small_model.image_size)
    batch = torch.stack([reference_float(small_model.data_cfg, open_cached(folder, i)) for i in wanted])
    with torch.no_grad():
        expected = normalise(small_model.backbone.eval()(batch).numpy())
    np.testing.assert_allclose(cached.features, expected, atol=2e-3)  # kept as float16
    photo = open_rgb(catalogue.image_path(wanted[0]))
    with torch.no_grad():  # an upload is resized as the cache resizes, not JPEG-encoded
        resized = as_cached(photo, small_model.image_size)
        upload_expected = small_model.backbone(reference_float(small_model.data_cfg, resized)[None])
    np.testing.assert_allclose(embed_images(small_model, [photo]), normalise(upload_expected.numpy()), atol=1e-5)


# --- planted problems


def copy_pairs_found(features: np.ndarray, ids: list[int], originals: dict[int, int],
                     threshold: float) -> tuple[float, float]:
    """(recall, precision) of planted copies as near-duplicates at `threshold`: recall, the share of
    copies grouped with their original; precision, the share of pairs found with a copy that join it
    to its original or to a near-duplicate of its original."""
    row = {product_id: index for index, product_id in enumerate(ids)}
    found = nearest_neighbours(SimilarityIndex(features), features)
    groups = groups_of_pairs(len(ids), similar_pairs(found, threshold))
    group_of = {int(member): number for number, group in enumerate(groups) for member in group}
    copies = [row[copy] for copy in originals]
    recall = np.mean([group_of.get(row[copy], -1) == group_of.get(row[original], -2)
                      for copy, original in originals.items()])
    pairs = [(a, b) for a, b in similar_pairs(found, threshold).tolist() if a in copies or b in copies]
    right = 0
    for a, b in pairs:
        copy, other = (a, b) if a in copies else (b, a)
        original = row[originals[ids[copy]]]
        right += other == original or float(features[other] @ features[original]) >= threshold
    return recall, right / max(len(pairs), 1)


@pytest.mark.slow
def test_planted_copies_of_real_photos_are_found_as_near_duplicates(real_sample, tmp_path):
    planted = planted_catalogue(real_sample, tmp_path / "data", rows=160, copies=16, seed=3)
    assert {planted.kind[i] for i in planted.planted(*COPIES)} == set(COPIES)
    catalogue = load_catalogue(planted.folder)
    embeddings = catalogue_embeddings(catalogue, pretrained_model(), tmp_path / "ws")
    recall, precision = copy_pairs_found(embeddings.features, embeddings.ids.tolist(),
                                         planted.originals, DEFAULT_THRESHOLD)
    assert recall >= 0.9 and precision >= 0.9, (recall, precision)


@pytest.mark.slow
def test_perceptual_hashes_find_reencoded_copies_of_real_photos_and_pair_no_distinct_ones(real_sample, tmp_path):
    """Downscaled and saved again at JPEG quality 55 or 40: the copies embeddings miss (issue 25)."""
    planted = planted_catalogue(real_sample, tmp_path / "data", rows=300, copies=20, seed=11, kinds=REENCODED)
    catalogue = load_catalogue(planted.folder)
    ids = catalogue.frame["id"].tolist()
    folder = cache_folder(tmp_path / "ws", catalogue.root, 224)
    build_image_cache(catalogue, ids, 224, folder)  # what compute_health hashes: the model's cached copies
    found = {(ids[a], ids[b]) for a, b in hash_pairs(perceptual_hashes(open_cached(folder, i) for i in ids)).tolist()}
    missed = [copy for copy, original in planted.originals.items() if tuple(sorted((copy, original))) not in found]
    assert not missed, [planted.kind[copy] for copy in missed]
    identical = {tuple(group) for group in exact_duplicates(catalogue, ids)}
    strays = [pair for pair in found if not set(pair) & set(planted.originals) and pair not in identical]
    assert not strays, strays


@pytest.mark.parametrize("source", ["demo", "real"])
def test_planted_blurry_and_dark_photos_are_found(source, demo, request, tmp_path):
    folder = request.getfixturevalue("real_sample") if source == "real" else demo
    planted = planted_catalogue(folder, tmp_path / "data", rows=60, copies=0, bad=6, seed=2)
    catalogue = load_catalogue(planted.folder)
    issues = image_issues(catalogue, catalogue.frame["id"].tolist(), tmp_path / "ws", 96)
    assert issues["id"].tolist() == catalogue.frame["id"].tolist()
    found = issue_ids(issues)
    assert set(found) == set(ISSUE_TYPES)
    assert set(planted.planted("blurry")) <= set(found["blurry"])
    assert set(planted.planted("dark")) <= set(found["dark"])
    assert not set(planted.planted("dark")) & set(found["light"])


def test_exact_duplicates_are_photos_with_the_same_bytes(demo, tmp_path):
    planted = planted_catalogue(demo, tmp_path / "data", rows=20, copies=0, seed=1)
    catalogue = load_catalogue(planted.folder)
    first, second = catalogue.frame["id"].iloc[[3, 11]].tolist()
    target = catalogue.image_path(second)
    target.unlink()  # a symlink to the demo: replace it, not the demo's photo
    target.write_bytes(catalogue.image_path(first).read_bytes())
    assert exact_duplicates(catalogue, catalogue.frame["id"].tolist()) == [sorted([first, second])]


# --- the whole computation, the command line, the group-aware split


@pytest.fixture(scope="module")
def planted_demo(demo, tmp_path_factory):
    """The demo with four altered copies of its photos, in a workspace of its own, and its health as
    `python -m training health DIR --json` computed it: (planted catalogue, printed lines)."""
    root = tmp_path_factory.mktemp("planted")
    planted = planted_catalogue(demo, root / "data", rows=60, copies=4, seed=5)
    with pytest.MonkeyPatch.context() as patch:
        point_at_workspace(patch, root / "ws")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert training_cli(["health", str(planted.folder), "--json", "--device", "cpu"]) == 0
        yield planted, printed.getvalue().strip().splitlines()


def health_of(planted) -> Health:
    return load_health(folder_of(load_catalogue(planted.folder), None).path)


# The tests of planted_demo are all slow: whichever runs first waits for its health (~15 s).
@pytest.mark.slow
def test_cli_json_summary(planted_demo):
    planted, lines = planted_demo
    summary = json.loads(lines[-1])
    catalogue = load_catalogue(planted.folder)
    ids = set(catalogue.frame["id"].tolist())
    assert ({"near_duplicates", "leakage", "outliers", "image_issues", "exact_duplicates", "label_disagreements"}
            <= set(summary))
    for key in ("near_duplicates", "leakage", "exact_duplicates"):
        assert all(isinstance(group, list) and len(group) >= 2 and set(group) <= ids for group in summary[key])
    assert set(summary["outliers"]) <= ids
    assert set(summary["image_issues"]) == set(ISSUE_TYPES)
    assert all(set(found) <= ids for found in summary["image_issues"].values())
    split = default_split(catalogue)
    assert summary["leakage"] == [group for group in summary["near_duplicates"]
                                  if set(split[group]) == {"train", "val"}]
    together = [any({copy, original} <= set(group) for group in summary["near_duplicates"])
                for copy, original in planted.originals.items()]
    assert sum(together) >= 3, together
    assert len(summary["near_duplicates_found_by"]) == len(summary["near_duplicates"])
    assert all(set(by.split(" + ")) <= set(DuplicateMethod) for by in summary["near_duplicates_found_by"])
    assert any(line.startswith("  leakage") for line in lines)

    health = health_of(planted)
    assert health.info["photos"] == len(ids) and health.projection.shape == (len(ids), 2)
    assert health_summary(health, catalogue, split, DEFAULT_THRESHOLD) == {**summary, "label_disagreements": []}
    points = map_frame(health, split, pd.Series(dtype=str), order=("train", "val"))
    assert list(points["colour"].cat.categories) == ["train", "val"]
    assert points["colour"].value_counts().to_dict() == split.value_counts().to_dict()


@pytest.mark.slow
def test_photos_that_cannot_be_read_are_listed_with_the_reason(tmp_path, monkeypatch):
    folder, broken = with_unreadable_photos(tmp_path / "data")
    point_at_workspace(monkeypatch, tmp_path / "ws")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert training_cli(["health", str(folder), "--json", "--device", "cpu"]) == 0
    lines = printed.getvalue().strip().splitlines()
    summary = json.loads(lines[-1])
    assert sorted(map(int, summary["unreadable"])) == sorted(broken)
    for product_id in broken:
        assert f"{product_id}.jpg" in summary["unreadable"][str(product_id)]
        assert any(line.startswith(f"    {product_id}: ") and f"{product_id}.jpg" in line for line in lines)
    assert "  unreadable photos    2 (left out of everything below)" in lines
    health = load_health(folder_of(load_catalogue(folder), None).path)
    assert health.unreadable == {int(key): why for key, why in summary["unreadable"].items()}
    assert health.info["photos"] == 14 and not set(broken) & set(health.ids.tolist())


@pytest.mark.slow
def test_a_second_computation_reads_what_the_first_wrote(planted_demo):
    planted, _ = planted_demo
    before = health_of(planted)
    again = compute_health(load_catalogue(planted.folder), pretrained_model(), Path(os.environ[workspace.HOME_ENV]))
    assert again.info["computed"] == before.info["computed"]


@pytest.mark.slow
def test_the_grouped_split_keeps_near_duplicates_on_one_side(planted_demo):
    planted, _ = planted_demo
    catalogue = load_catalogue(planted.folder)
    ids = catalogue.frame["id"].to_numpy()
    cfg = TrainConfig.from_recipe("default", {"data": str(planted.folder), "split": "grouped"})
    grouped = decide_split(cfg, catalogue)
    stratified = decide_split(TrainConfig.from_recipe("default", {"data": str(planted.folder)}), catalogue)
    assert grouped.index.equals(pd.Index(ids)) and stratified.index.equals(pd.Index(ids))  # no cap: every row
    groups = health_of(planted).near_duplicates(cfg.group_similarity)
    assert groups and all(grouped[group].nunique() == 1 for group in groups)
    assert any(stratified[group].nunique() == 2 for group in groups)  # the default split cuts one in two
    in_groups = {i for group in groups for i in group}
    alone = [i for i in ids if i not in in_groups]
    assert grouped[alone].equals(stratified[alone])
    assert decide_split(cfg, catalogue).equals(grouped)


def test_progress_lines_say_the_time_a_step_has_left_at_its_pace(capsys):
    """What `python -m training health` logs, and the Data health page shows while it computes."""
    from training.__main__ import ProgressLines

    now = [100.0]
    progress = ProgressLines(every=10.0, clock=lambda: now[0])
    for seconds, step, done in ((0, "embeddings", 0), (30, "embeddings", 300), (35, "embeddings", 350),
                                (200, "embeddings", 1800), (200, "image quality", 0), (206, "image quality", 900)):
        now[0] = 100.0 + seconds
        progress(step, done, 1800)
    assert capsys.readouterr().err.splitlines() == [
        "embeddings: 0 of 1,800",
        "embeddings: 300 of 1,800 · about 2 min left",  # 30 s for 300: 150 s for the other 1,500
        "embeddings: 1,800 of 1,800",
        "image quality: 0 of 1,800",  # 900 of 1,800 came 6 s later, within 10 s of this line: not shown
    ]
