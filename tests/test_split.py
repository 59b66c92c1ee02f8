from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.data import CatalogueError
from core.data.catalogue import load_catalogue
from core.data.split import (
    SPLITS,
    TEST,
    TEST_SHARE,
    id_uniform,
    in_test_part,
    split_catalogue,
    split_catalogue_grouped,
    split_distribution,
)

STRATA = {"A": 500, "B": 300, "C": 150, "D": 40, "E": 9, None: 20}
VAL_ROWS = {"A": 100, "B": 60, "C": 30, "D": 8, "E": 2, None: 4}  # round(0.2 * n) in each stratum


def make_frame(strata: dict, first_id: int = 10_000) -> pd.DataFrame:
    """One row per product, `articleType` repeated as `strata` says; ids spaced like Kaggle's."""
    types = [name for name, rows in strata.items() for _ in range(rows)]
    ids = first_id + 7 * np.arange(len(types), dtype=np.int64)
    return pd.DataFrame({"id": ids, "articleType": pd.array(types, dtype="string")})


@pytest.fixture
def frame() -> pd.DataFrame:
    return make_frame(STRATA)


def val_rows_per_stratum(frame: pd.DataFrame, split: pd.Series) -> dict:
    is_val = (split == "val").groupby(frame["articleType"], dropna=False).sum()
    return {None if pd.isna(name) else name: int(rows) for name, rows in is_val.items()}


def test_values_and_index(frame):
    frame.index = frame.index * 3 + 5
    split = split_catalogue(frame)
    assert split.index.equals(frame.index)
    assert set(split) == set(SPLITS)


def test_exact_val_rows_per_stratum_missing_is_a_stratum(frame):
    split = split_catalogue(frame, val_fraction=0.2, seed=0)
    assert val_rows_per_stratum(frame, split) == VAL_ROWS
    other_seed = split_catalogue(frame, val_fraction=0.2, seed=1)
    assert val_rows_per_stratum(frame, other_seed) == VAL_ROWS


def test_same_seed_same_split_other_seed_other_split(frame):
    split = split_catalogue(frame, seed=3)
    assert split.equals(split_catalogue(frame, seed=3))
    other = split_catalogue(frame, seed=4)
    both_val = ((split == "val") & (other == "val")).sum()
    # Independent draws share about 0.2 * 0.2 of the rows in val; far fewer than the 204 val rows.
    assert both_val < 100


def test_row_order_does_not_matter(frame):
    shuffled = frame.sample(frac=1, random_state=7)
    by_id = pd.Series(split_catalogue(frame).to_numpy(), index=frame["id"])
    shuffled_by_id = pd.Series(split_catalogue(shuffled).to_numpy(), index=shuffled["id"])
    assert shuffled_by_id.reindex(by_id.index).equals(by_id)


def test_adding_rows_moves_few_ids():
    small = make_frame({"A": 400, "B": 200})
    grown = pd.concat([small, make_frame({"A": 40, "B": 20}, first_id=50_000)], ignore_index=True)
    grown_by_id = pd.Series(split_catalogue(grown).to_numpy(), index=grown["id"])
    moved = (split_catalogue(small).to_numpy() != grown_by_id.reindex(small["id"]).to_numpy()).sum()
    assert moved <= 0.05 * len(small)


def test_tiny_strata_follow_the_hash_threshold():
    singletons = make_frame({f"type {i}": 1 for i in range(2000)})
    split = split_catalogue(singletons, val_fraction=0.2)
    assert 0.17 < (split == "val").mean() < 0.23
    # A one-row stratum's decision depends on its id alone, not on the other strata.
    alone = singletons.iloc[[5]]
    assert split_catalogue(alone).iloc[0] == split.iloc[5]


def test_real_sample_split(real_sample):
    frame = load_catalogue(real_sample).frame
    assert len(frame) == 11_882
    split = split_catalogue(frame)
    assert abs((split == "val").mean() - 0.2) <= 0.01
    share = (split == "val").groupby(frame["articleType"]).agg(["size", "mean"])
    large = share[share["size"] >= 50]
    # Exact per-stratum rounding: each large class is within half a row of 20 %.
    assert ((large["mean"] - 0.2).abs() <= 0.5 / large["size"] + 1e-12).all()
    distribution = split_distribution(frame, split, "gender")
    assert distribution.index.tolist() == ["Men", "Women", "Unisex", "Boys", "Girls"]
    assert (distribution["train"] + distribution["val"]).tolist() == [7004, 4108, 589, 95, 86]
    assert (distribution["val_share"] - distribution["train_share"]).abs().max() < 0.02


def test_split_distribution_exact():
    frame = pd.DataFrame({"id": range(6), "gender": pd.array(["Men", "Men", "Women", "Women", "Women", None],
                                                              dtype="string")})
    split = pd.Series(["train", "val", "train", "train", "val", "val"])
    distribution = split_distribution(frame, split, "gender")
    assert distribution.index.tolist() == ["Women", "Men"]
    assert distribution.columns.tolist() == ["train", "val", "train_share", "val_share"]
    assert distribution["train"].tolist() == [2, 1]
    assert distribution["val"].tolist() == [1, 1]  # the missing gender is left out
    assert distribution["train_share"].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert distribution["val_share"].tolist() == pytest.approx([0.5, 0.5])
    only_train = split_distribution(frame, pd.Series(["train"] * 6), "gender")
    assert only_train["val"].tolist() == [0, 0] and only_train["val_share"].isna().all()
    # Rows of the test part, or of neither part, are in no column.
    parts = pd.Series(["train", TEST, "train", None, "val", "val"])
    counted = split_distribution(frame, parts, "gender")
    assert counted["train"].tolist() == [1, 1] and counted["val"].tolist() == [1, 0]


def test_errors_name_the_bad_value(frame):
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match=f"val_fraction.*{bad}"):
            split_catalogue(frame, val_fraction=bad)
    with pytest.raises(CatalogueError, match="usage"):
        split_catalogue(frame, stratify_on="usage")
    with pytest.raises(CatalogueError, match="no column\\(s\\) id;"):
        split_catalogue(frame.drop(columns="id"))
    split = split_catalogue(frame)
    with pytest.raises(ValueError, match="index"):
        split_distribution(frame, split.iloc[1:], "articleType")
    with pytest.raises(ValueError, match="'holdout'.*valid: train, val, test"):
        split_distribution(frame, split.replace("val", "holdout"), "articleType")


def test_grouped_split_keeps_each_group_on_the_side_of_its_smallest_id(frame):
    plain = pd.Series(split_catalogue(frame).to_numpy(), index=frame["id"])
    val, train = plain.index[plain == "val"], plain.index[plain == "train"]
    # Groups across the split, led (smallest id) by a val row and by a train row, and ids the frame lacks.
    groups = [[val[3], train[10], train[11]], [train[0], val[5]], [train[20], 999_999]]
    grouped = pd.Series(split_catalogue_grouped(frame, groups).to_numpy(), index=frame["id"])
    for group in groups:
        members = [i for i in group if i in grouped.index]
        assert grouped[members].nunique() == 1
        assert grouped[members[0]] == plain[min(members)]
    # Only members on another side than their group's smallest id moved.
    present = [[i for i in group if i in plain.index] for group in groups]
    expected = {i for members in present for i in members if plain[i] != plain[min(members)]}
    assert set(grouped.index[grouped != plain]) == expected and len(expected) >= 3
    shuffled = frame.sample(frac=1, random_state=3)
    again = pd.Series(split_catalogue_grouped(shuffled, groups[::-1]).to_numpy(), index=shuffled["id"])
    assert again.reindex(grouped.index).equals(grouped)  # the same ids on the same side, whatever the order
    with pytest.raises(ValueError, match="groups overlap on id"):
        split_catalogue_grouped(frame, [[val[0], val[1]], [val[1], train[0]]])


def test_the_test_part_is_a_fixed_tenth_of_any_catalogue_by_id_alone():
    """The same ids whatever the order or the rows around them, about TEST_SHARE of the rows, and apart
    from any run's seed: a pure function of the id."""
    ids = np.arange(1, 200_001, dtype=np.int64) * 3
    part = in_test_part(ids)
    assert part.dtype == bool and abs(part.mean() - TEST_SHARE) < 0.003
    shuffled = np.random.default_rng(0).permutation(len(ids))
    assert (in_test_part(ids[shuffled]) == part[shuffled]).all()
    assert (in_test_part(ids[:1000]) == part[:1000]).all()  # a smaller catalogue: the same ids in it
    # Not any split seed's hash: the test part is not the val rows of seed 0, nor of another seed.
    for seed in (0, 1, 20261129 + 1):
        assert abs((part & (id_uniform(ids, seed) < TEST_SHARE)).mean() - TEST_SHARE ** 2) < 0.003


def test_the_benchmarks_carve_the_same_test_part(real_sample, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))
    from sample_parts import carve

    train_dir, test_dir = carve(tmp_path / "parts", real_sample)
    frame = load_catalogue(real_sample).frame
    carved = pd.read_csv(test_dir / "styles.csv", usecols=["id"])["id"]
    assert sorted(carved) == sorted(frame["id"][in_test_part(frame["id"].to_numpy())])
    assert len(carved) == 1_181  # the part RESULTS.md's numbers are on
