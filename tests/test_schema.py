import json

import numpy as np
import pandas as pd
import pytest

from core.data import HEADS, CatalogueError
from core.data.catalogue import load_catalogue
from core.data.schema import (
    IGNORE_INDEX,
    OTHER_CLASS,
    LabelSchema,
    head_summary,
    imbalance_table,
    rare_classes,
)

X = IGNORE_INDEX
NA = pd.NA


@pytest.fixture
def frame() -> pd.DataFrame:
    """Eight products, all seven heads, a few missing values; columns as load_catalogue gives them."""
    rows = [
        (1, "Men", "Apparel", "Topwear", "Tshirts", "Black", "Summer", "Casual"),
        (2, "Men", "Apparel", "Topwear", "Tshirts", "Black", "Summer", "Casual"),
        (3, "Men", "Apparel", "Topwear", "Shirts", "White", "Summer", "Casual"),
        (4, "Women", "Apparel", "Topwear", "Shirts", "Black", "Fall", "Casual"),
        (5, "Women", "Footwear", "Shoes", "Heels", "Red", "Fall", "Formal"),
        (6, "Women", "Footwear", "Shoes", "Heels", NA, "Fall", NA),
        (7, "Boys", "Apparel", "Bottomwear", "Jeans", "Blue", "Summer", "Casual"),
        (8, "Men", "Accessories", "Watches", "Watches", "Black", "Winter", NA),
    ]
    columns = ["id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage"]
    frame = pd.DataFrame(rows, columns=columns).astype({head: "string" for head in HEADS})
    frame["year"] = pd.array([2012] * 8, dtype="Int64")
    frame["productDisplayName"] = pd.array([f"Product {i}" for i in range(1, 9)], dtype="string")
    return frame


@pytest.fixture(scope="module")
def sample_frame(real_sample) -> pd.DataFrame:
    return load_catalogue(real_sample).frame


def test_head_summary_exact(frame):
    summary = head_summary(frame)
    assert list(summary.index) == list(HEADS)
    expected = {
        "gender": (3, 0, 4, 1, 4.0, "Men"),
        "masterCategory": (3, 0, 5, 1, 5.0, "Apparel"),
        "subCategory": (4, 0, 4, 1, 4.0, "Topwear"),
        "articleType": (5, 0, 2, 1, 2.0, "Heels"),  # three classes of 2: the name breaks the tie
        "baseColour": (4, 1, 4, 1, 4.0, "Black"),
        "season": (3, 0, 4, 1, 4.0, "Summer"),
        "usage": (2, 2, 5, 1, 5.0, "Casual"),
    }
    columns = ["classes", "missing", "largest", "smallest", "imbalance_ratio", "top_class"]
    assert {head: tuple(summary.loc[head, columns]) for head in HEADS} == expected


def test_head_summary_of_a_head_without_values(frame):
    frame["usage"] = pd.array([NA] * 8, dtype="string")
    usage = head_summary(frame).loc["usage"]
    assert (usage["classes"], usage["missing"], usage["largest"], usage["smallest"]) == (0, 8, 0, 0)
    assert np.isnan(usage["imbalance_ratio"]) and pd.isna(usage["top_class"])


def test_imbalance_table_exact(frame):
    table = imbalance_table(frame, rare_min_count=2).set_index("head")
    assert list(table.index) == list(HEADS)
    assert table["classes_under_threshold"].tolist() == [1, 1, 2, 2, 3, 1, 1]
    assert table["rows_affected"].tolist() == [1, 1, 2, 2, 3, 1, 1]
    # Shares are of labelled rows: baseColour has 7, usage 6.
    assert table["rows_affected_share"].tolist() == pytest.approx([1 / 8, 1 / 8, 2 / 8, 2 / 8, 3 / 7, 1 / 8, 1 / 6])
    assert table["imbalance_ratio"].tolist() == [4.0, 5.0, 4.0, 2.0, 4.0, 4.0, 5.0]
    assert imbalance_table(frame, rare_min_count=0)["rows_affected"].tolist() == [0] * 7


def test_rare_classes_exact(frame):
    table = rare_classes(frame, "baseColour", rare_min_count=2)
    assert table["class"].tolist() == ["Black", "Blue", "Red", "White"]
    assert table["count"].tolist() == [4, 1, 1, 1]
    assert table["rare"].tolist() == [False, True, True, True]
    # A class with exactly rare_min_count rows is not rare.
    assert rare_classes(frame, "gender", 3)["rare"].tolist() == [False, False, True]
    assert rare_classes(frame, "gender", 4)["rare"].tolist() == [False, True, True]


ENCODED = {  # columns gender, baseColour, usage at rare_min_count=2
    "ignore": ({"gender": ["Men", "Women"], "baseColour": ["Black"], "usage": ["Casual"]},
               [[0, 0, 0], [0, 0, 0], [0, X, 0], [1, 0, 0], [1, X, X], [1, X, X], [X, X, 0], [0, 0, X]]),
    "other": ({"gender": ["Men", "Women", OTHER_CLASS], "baseColour": ["Black", OTHER_CLASS],
               "usage": ["Casual", OTHER_CLASS]},
              [[0, 0, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 1], [1, X, X], [2, 1, 0], [0, 0, X]]),
    "keep": ({"gender": ["Men", "Women", "Boys"], "baseColour": ["Black", "Blue", "Red", "White"],
              "usage": ["Casual", "Formal"]},
             [[0, 0, 0], [0, 0, 0], [0, 3, 0], [1, 0, 0], [1, 2, 1], [1, X, X], [2, 1, 0], [0, 0, X]]),
}


@pytest.mark.parametrize("policy", ["ignore", "other", "keep"])
def test_policy_classes_and_exact_encoding(frame, policy):
    classes, encoded = ENCODED[policy]
    schema = LabelSchema.fit(frame, policy, rare_min_count=2, heads=("gender", "baseColour", "usage"))
    assert schema.heads == ("gender", "baseColour", "usage")
    assert schema.classes == classes
    assert schema.num_classes() == {head: len(names) for head, names in classes.items()}
    assert schema.counts["baseColour"] == {"Black": 4, "Blue": 1, "Red": 1, "White": 1}
    result = schema.encode(frame)
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result, np.array(encoded))


def test_default_is_the_seed_recipe(frame):
    schema = LabelSchema.fit(frame.loc[frame.index.repeat(300)])  # Men 1200, Women 900, Boys 300 rows
    assert (schema.rare_policy, schema.rare_min_count) == ("ignore", 500)
    assert schema.heads == HEADS
    assert schema.classes["gender"] == ["Men", "Women"]
    with pytest.raises(ValueError, match="'gender'.*largest class has 4 rows"):
        LabelSchema.fit(frame)


def test_other_class_only_when_something_was_merged(frame):
    schema = LabelSchema.fit(frame, "other", rare_min_count=1)
    assert OTHER_CLASS not in schema.classes["gender"]
    assert LabelSchema.fit(frame, "other", rare_min_count=5).classes["gender"] == [OTHER_CLASS]


def test_missing_values_are_ignored_under_every_policy(frame):
    missing = frame[list(HEADS)].isna().to_numpy()
    for policy in ("ignore", "other", "keep"):
        encoded = LabelSchema.fit(frame, policy, rare_min_count=0).encode(frame)
        assert (encoded[missing] == IGNORE_INDEX).all()
        assert (encoded[~missing] >= 0).all()  # threshold 0: nothing is rare


def test_unseen_values(frame):
    new = frame.iloc[:2].copy()
    new["gender"] = pd.array(["Girls", "Men"], dtype="string")
    heads = ("gender",)
    assert LabelSchema.fit(frame, "ignore", 2, heads).encode(new)[:, 0].tolist() == [X, 0]
    assert LabelSchema.fit(frame, "keep", 2, heads).encode(new)[:, 0].tolist() == [X, 0]
    assert LabelSchema.fit(frame, "other", 2, heads).encode(new)[:, 0].tolist() == [2, 0]
    # Under `other` with nothing merged there is no Other class to take them.
    assert LabelSchema.fit(frame, "other", 0, heads).encode(new)[:, 0].tolist() == [X, 0]


def test_encode_then_decode_applies_the_policy(frame):
    schema = LabelSchema.fit(frame, "other", 2)
    encoded = schema.encode(frame)
    assert schema.decode("gender", encoded[:, 0]) == ["Men", "Men", "Men", "Women", "Women", "Women",
                                                      OTHER_CLASS, "Men"]
    usage = schema.decode("usage", encoded[:, HEADS.index("usage")])
    assert [value is None for value in usage] == [False] * 5 + [True, False, True]


@pytest.mark.parametrize("policy", ["ignore", "other", "keep"])
def test_decode_of_encode_gives_each_value_its_class(frame, policy):
    schema = LabelSchema.fit(frame, policy, rare_min_count=2)
    encoded = schema.encode(frame)
    for column, head in enumerate(HEADS):
        for value, decoded in zip(frame[head], schema.decode(head, encoded[:, column])):
            if pd.isna(value):
                assert decoded is None
            elif value in schema.classes[head]:
                assert decoded == value
            else:  # rare
                assert decoded == (OTHER_CLASS if policy == "other" else None)
    keep = LabelSchema.fit(frame, "keep", 0)
    assert keep.decode("baseColour", keep.encode(frame)[:, 4]) == [
        None if pd.isna(value) else value for value in frame["baseColour"]
    ]


def test_decode_rejects_bad_head_and_index(frame):
    schema = LabelSchema.fit(frame, "keep", 0)
    with pytest.raises(ValueError, match="'colour'.*valid: gender, masterCategory"):
        schema.decode("colour", [0])
    with pytest.raises(ValueError, match="index 3 out of range for head 'gender' with 3 classes"):
        schema.decode("gender", [0, 3])


def test_json_round_trip(frame, tmp_path):
    schema = LabelSchema.fit(frame, "other", rare_min_count=2)
    path = tmp_path / "label_schema.json"
    schema.save(path)
    stored = json.loads(path.read_text())
    assert stored["format_version"] == 1
    assert stored["classes"]["gender"] == ["Men", "Women", OTHER_CLASS]
    assert list(stored["counts"]["articleType"].items()) == [
        ("Heels", 2), ("Shirts", 2), ("Tshirts", 2), ("Jeans", 1), ("Watches", 1)
    ]
    loaded = LabelSchema.load(path)
    assert loaded == schema
    assert loaded.heads == schema.heads
    np.testing.assert_array_equal(loaded.encode(frame), schema.encode(frame))
    with pytest.raises(ValueError, match="format_version 2"):
        LabelSchema.from_dict({**stored, "format_version": 2})


def test_errors_name_the_bad_value(frame):
    with pytest.raises(ValueError, match="'rare'.*valid: ignore, other, keep"):
        LabelSchema.fit(frame, rare_policy="rare")
    with pytest.raises(ValueError, match="-1"):
        LabelSchema.fit(frame, rare_min_count=-1)
    with pytest.raises(ValueError, match="2.5"):
        imbalance_table(frame, rare_min_count=2.5)
    with pytest.raises(CatalogueError, match="usage"):
        LabelSchema.fit(frame.drop(columns="usage"))
    with pytest.raises(CatalogueError, match="season"):
        head_summary(frame.drop(columns="season"))
    schema = LabelSchema.fit(frame, "keep", 0)
    with pytest.raises(CatalogueError, match="gender"):
        schema.encode(frame.drop(columns="gender"))


def test_real_sample_summary(sample_frame):
    summary = head_summary(sample_frame)
    assert summary["classes"].tolist() == [5, 6, 39, 113, 46, 4, 7]
    assert summary["missing"].tolist() == [0, 0, 0, 0, 3, 1, 31]
    assert summary.loc["gender", "largest"] == 7004 and summary.loc["gender", "smallest"] == 86
    assert summary["top_class"].tolist() == ["Men", "Apparel", "Topwear", "Tshirts", "Black", "Fall", "Casual"]
    table = imbalance_table(sample_frame, 500).set_index("head")
    assert table["classes_under_threshold"].tolist() == [2, 3, 34, 109, 37, 1, 3]
    assert table["rows_affected"].tolist() == [181, 214, 2829, 7115, 2111, 357, 17]
    assert table.loc["articleType", "rows_affected_share"] == pytest.approx(7115 / 11882)


def test_real_sample_seed_schema(sample_frame, tmp_path):
    schema = LabelSchema.fit(sample_frame)
    assert schema.num_classes() == {
        "gender": 3, "masterCategory": 3, "subCategory": 5, "articleType": 4,
        "baseColour": 9, "season": 3, "usage": 4,
    }
    assert schema.classes["gender"] == ["Men", "Women", "Unisex"]
    assert schema.counts["gender"] == {"Men": 7004, "Women": 4108, "Unisex": 589, "Boys": 95, "Girls": 86}
    # Ignored = rows of rare classes + missing rows, per head.
    ignored = (schema.encode(sample_frame) == IGNORE_INDEX).sum(axis=0)
    assert ignored.tolist() == [181, 214, 2829, 7115, 2111 + 3, 357 + 1, 17 + 31]
    schema.save(tmp_path / "schema.json")
    assert LabelSchema.load(tmp_path / "schema.json") == schema
