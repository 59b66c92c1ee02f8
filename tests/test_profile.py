"""core.data.profile: the small frames the Explore page charts, on hand-made and real catalogues."""

import pandas as pd
import pytest

from core.data.catalogue import load_catalogue
from core.data.profile import (
    MISSING_LABEL,
    OTHERS_LABEL,
    column_profile,
    filter_rows,
    labels_text,
    page_count,
    page_of,
    rare_policy_preview,
    top_n_counts,
    year_counts,
)


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "id": [1, 2, 3, 4, 5, 6],
        "gender": ["Men", "Men", "Women", "Men", None, "Women"],
        "masterCategory": ["Apparel"] * 6,
        "subCategory": ["Topwear"] * 6,
        "articleType": ["Tshirts", "Tshirts", "Tshirts", "Shirts", "Shirts", "Caps"],
        "baseColour": ["Red", "Blue", None, "Red", "Red", "Red"],
        "season": ["Fall"] * 6,
        "usage": ["Casual"] * 6,
        "year": pd.array([2011, 2013, None, 2013, 2011, 2011], dtype="Int64"),
    })


def test_column_profile_counts_missing_and_unique(frame):
    profile = column_profile(frame)
    assert profile.loc["gender"].to_dict() == {"missing": 1, "missing_share": pytest.approx(1 / 6), "unique": 2}
    assert profile.loc["year", "missing"] == 1 and profile.loc["year", "unique"] == 2
    assert profile.loc["id", "missing"] == 0 and profile.loc["id", "unique"] == 6


def test_top_n_groups_the_rest_as_others_and_counts_missing(frame):
    top = top_n_counts(frame, "articleType", 1)
    assert top[["value", "count"]].values.tolist() == [["Tshirts", 3], [OTHERS_LABEL, 3]]
    assert top["share"].tolist() == [0.5, 0.5]
    full = top_n_counts(frame, "gender", 10)
    assert dict(zip(full["value"], full["count"])) == {"Men": 3, "Women": 2, MISSING_LABEL: 1}
    with pytest.raises(ValueError, match="n must be at least 1, got 0"):
        top_n_counts(frame, "gender", 0)


def test_year_counts_fill_the_gaps(frame):
    assert year_counts(frame).values.tolist() == [[2011, 3], [2012, 0], [2013, 2]]
    assert year_counts(frame.assign(year=pd.array([None] * 6, dtype="Int64"))).empty


def test_filter_rows_on_values_and_missing(frame):
    assert filter_rows(frame, {"articleType": ["Tshirts"], "baseColour": ["Red"]})["id"].tolist() == [1]
    assert filter_rows(frame, {"gender": [MISSING_LABEL]})["id"].tolist() == [5]
    assert len(filter_rows(frame, {"gender": []})) == 6
    with pytest.raises(KeyError, match="unknown column 'colour'"):
        filter_rows(frame, {"colour": ["Red"]})


def test_pages(frame):
    assert page_count(0, 24) == 1 and page_count(48, 24) == 2 and page_count(49, 24) == 3
    assert page_of(frame, 2, 4)["id"].tolist() == [5, 6]
    with pytest.raises(ValueError, match="page 3 is outside 1..2"):
        page_of(frame, 3, 4)


def test_labels_text_leaves_out_missing(frame):
    assert labels_text(frame.iloc[4]) == "Apparel · Topwear · Shirts · Red · Fall · Casual"


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("ignore", {"Caps": "None (ignored)", "Shirts": "Shirts", "Tshirts": "Tshirts"}),
        ("other", {"Caps": "Other", "Shirts": "Shirts", "Tshirts": "Tshirts"}),
        ("keep", {"Caps": "Caps", "Shirts": "Shirts", "Tshirts": "Tshirts"}),
    ],
)
def test_rare_policy_preview(frame, policy, expected):
    preview = rare_policy_preview(frame, "articleType", policy, 2)
    assert dict(zip(preview["class"], preview["becomes"])) == expected
    assert preview["class"].iloc[0] == "Caps"  # rarest first
    with pytest.raises(ValueError, match="unknown rare policy 'drop'"):
        rare_policy_preview(frame, "articleType", "drop", 2)


def test_real_sample_profile(real_sample):
    frame = load_catalogue(real_sample).frame
    top = top_n_counts(frame, "articleType", 20)
    assert top["count"].sum() == 11_882 and top["value"].iloc[0] == "Tshirts"
    assert column_profile(frame).loc["usage", "missing"] == 31
    assert year_counts(frame)["count"].sum() == frame["year"].notna().sum()
