"""core.data.catalogue: styles.csv as Kaggle ships it, image lookup, folder layouts, errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from core.data import HEADS, STYLES_COLUMNS, CatalogueError
from core.data.catalogue import load_catalogue, resolve_dataset_dir

HEADER = ",".join(STYLES_COLUMNS)
SHIRT = "15970,Men,Apparel,Topwear,Shirts,Navy Blue,Fall,2011,Casual,Turtle Check Men Navy Blue Shirt"
JEANS = "39386,Men,Apparel,Bottomwear,Jeans,Blue,Summer,2012,Casual,Peter England Men Party Blue Jeans"
WATCH = "59263,Women,Accessories,Watches,Watches,Silver,Winter,2016,Casual,Titan Women Silver Watch"


def write_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (3, 4), (200, 30, 30)).save(path)


def write_dataset(root: Path, styles: str | bytes, image_ids: tuple[int, ...] = (15970, 39386, 59263)) -> Path:
    """styles.csv (text written as is, no newline translation) and a tiny JPEG per image id."""
    root.mkdir(parents=True, exist_ok=True)
    data = styles.encode() if isinstance(styles, str) else styles
    (root / "styles.csv").write_bytes(data)
    (root / "images").mkdir(exist_ok=True)
    for product_id in image_ids:
        write_image(root / "images" / f"{product_id}.jpg")
    return root


def lines(*rows: str) -> str:
    return "".join(f"{row}\n" for row in rows)


def load_error(tmp_path: Path, styles: str | bytes) -> str:
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(write_dataset(tmp_path / "data", styles))
    return str(caught.value)


# --- reading styles.csv ---------------------------------------------------------------


def test_plain_catalogue_values_dtypes_and_report(tmp_path):
    root = write_dataset(tmp_path / "data", lines(HEADER, SHIRT, JEANS, WATCH), image_ids=(15970, 59263))
    catalogue = load_catalogue(root)
    frame = catalogue.frame
    assert list(frame.columns) == list(STYLES_COLUMNS)
    assert frame.index.equals(pd.RangeIndex(2))
    assert frame["id"].dtype == "int64" and frame["year"].dtype == "Int64"
    assert all(isinstance(frame[column].dtype, pd.StringDtype) for column in (*HEADS, "productDisplayName"))
    assert frame.iloc[0].to_dict() == {
        "id": 15970, "gender": "Men", "masterCategory": "Apparel", "subCategory": "Topwear",
        "articleType": "Shirts", "baseColour": "Navy Blue", "season": "Fall", "year": 2011,
        "usage": "Casual", "productDisplayName": "Turtle Check Men Navy Blue Shirt",
    }
    assert frame["id"].tolist() == [15970, 59263]
    assert catalogue.root == root and catalogue.images_dir == root / "images"
    assert catalogue.image_path(59263) == root / "images" / "59263.jpg"
    assert catalogue.report.as_dict() == {
        "styles_csv": str(root / "styles.csv"), "lines_read": 3, "lines_repaired": 0,
        "duplicate_ids": 0, "rows_without_image": 1, "rows_kept": 2,
    }


def test_extra_unquoted_commas_are_joined_back_into_the_name(tmp_path):
    broken = "39386,Men,Apparel,Bottomwear,Jeans,Blue,Summer,2012,Casual,Peter England Men, Party,Blue Jeans"
    catalogue = load_catalogue(write_dataset(tmp_path / "data", lines(HEADER, SHIRT, broken, WATCH)))
    jeans = catalogue.frame.set_index("id").loc[39386]
    assert jeans["productDisplayName"] == "Peter England Men, Party,Blue Jeans"
    assert (jeans["usage"], jeans["year"]) == ("Casual", 2012)
    assert catalogue.report.lines_repaired == 1
    assert catalogue.report.rows_kept == 3


def test_extra_commas_go_to_the_name_column_wherever_it_stands(tmp_path):
    header = "id,productDisplayName,gender,masterCategory,subCategory,articleType,baseColour,season,usage"
    row = "7,Roadster Men, Blue, Jeans,Men,Apparel,Bottomwear,Jeans,Blue,Summer,Casual"
    catalogue = load_catalogue(write_dataset(tmp_path / "data", lines(header, row), image_ids=(7,)))
    product = catalogue.frame.iloc[0]
    assert product["productDisplayName"] == "Roadster Men, Blue, Jeans"
    assert [product[head] for head in HEADS] == ["Men", "Apparel", "Bottomwear", "Jeans", "Blue", "Summer", "Casual"]
    assert catalogue.report.lines_repaired == 1


def test_extra_fields_without_a_name_column_fail_with_the_line(tmp_path):
    header = "id,gender,masterCategory,subCategory,articleType,baseColour,season,usage"
    message = load_error(tmp_path, lines(header, "1,Men,Apparel,Topwear,Shirts,Blue,Fall,Casual", "2,Men,A,B,C,D,E,F,G"))
    assert "line 3" in message and "9 fields" in message and "header has 8" in message


def test_bom_crlf_and_blank_lines(tmp_path):
    text = "\ufeff" + "\r\n".join([HEADER, SHIRT, "", JEANS, WATCH, "", "", ""])
    catalogue = load_catalogue(write_dataset(tmp_path / "data", text.encode("utf-8")))
    assert catalogue.frame["id"].tolist() == [15970, 39386, 59263]
    assert catalogue.frame["productDisplayName"].iloc[-1] == "Titan Women Silver Watch"  # no stray "\r"
    assert catalogue.report.lines_read == 3


def test_quoted_fields_keep_their_commas_and_quotes(tmp_path):
    row = '5,Men,Apparel,Topwear,Tshirts,"Navy, Blue",Fall,2011,Casual,"Levi\'s Men ""Classic"", Slim Tshirt"'
    catalogue = load_catalogue(write_dataset(tmp_path / "data", lines(HEADER, row), image_ids=(5,)))
    product = catalogue.frame.iloc[0]
    assert product["baseColour"] == "Navy, Blue"
    assert product["productDisplayName"] == 'Levi\'s Men "Classic", Slim Tshirt'
    assert catalogue.report.lines_repaired == 0


def test_missing_values_are_na_and_values_are_stripped(tmp_path):
    row = "5, Men ,Apparel,Topwear,Tshirts,,Fall,n/a,,"
    half_year = "6,Men,Apparel,Topwear,Tshirts,Red,Fall,2011.5,Casual,x"
    catalogue = load_catalogue(write_dataset(tmp_path / "data", lines(HEADER, row, half_year), image_ids=(5, 6)))
    first, second = catalogue.frame.iloc[0], catalogue.frame.iloc[1]
    assert first["gender"] == "Men"
    assert pd.isna(first["baseColour"]) and pd.isna(first["usage"]) and pd.isna(first["productDisplayName"])
    assert first["year"] is pd.NA and second["year"] is pd.NA  # not numeric / not an integer


def test_optional_columns_absent_and_unknown_columns_left_out(tmp_path):
    header = "id,gender,masterCategory,subCategory,articleType,baseColour,season,usage,price"
    row = "5,Men,Apparel,Topwear,Shirts,Blue,Fall,Casual,999"
    catalogue = load_catalogue(write_dataset(tmp_path / "data", lines(header, row), image_ids=(5,)))
    assert list(catalogue.frame.columns) == list(STYLES_COLUMNS)
    assert catalogue.frame["year"].dtype == "Int64" and catalogue.frame["year"].isna().all()
    assert catalogue.frame["productDisplayName"].isna().all()
    assert catalogue.frame["articleType"].tolist() == ["Shirts"]


def test_duplicate_ids_keep_the_first_and_are_counted(tmp_path):
    again = SHIRT.replace("Navy Blue", "Red")
    catalogue = load_catalogue(write_dataset(tmp_path / "data", lines(HEADER, SHIRT, JEANS, again, again)))
    assert catalogue.frame["id"].tolist() == [15970, 39386]
    assert catalogue.frame["baseColour"].tolist() == ["Navy Blue", "Blue"]
    report = catalogue.report
    assert (report.lines_read, report.duplicate_ids, report.rows_without_image, report.rows_kept) == (4, 2, 0, 2)


def test_rows_without_image_are_dropped_and_counted(tmp_path):
    root = write_dataset(tmp_path / "data", lines(HEADER, SHIRT, JEANS, WATCH), image_ids=(39386,))
    (root / "images" / "015970.jpg").write_bytes(b"")  # not the file image_path(15970) names
    (root / "images" / "59263.png").write_bytes(b"")
    catalogue = load_catalogue(root)
    assert catalogue.frame["id"].tolist() == [39386]
    assert (catalogue.report.rows_without_image, catalogue.report.rows_kept) == (2, 1)


# --- errors ---------------------------------------------------------------------------


def test_missing_required_columns_are_named_with_the_columns_found(tmp_path):
    message = load_error(tmp_path, lines("id,gender,colour,season,usage", "1,Men,Blue,Fall,Casual"))
    assert "missing required column(s) masterCategory, subCategory, articleType, baseColour" in message
    assert "columns found: id, gender, colour, season, usage" in message


def test_non_integer_id_names_the_line_and_value(tmp_path):
    message = load_error(tmp_path, lines(HEADER, SHIRT, "", "12a4,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,x"))
    assert "line 4" in message and "'12a4'" in message and "not an integer" in message


def test_line_with_fewer_fields_names_the_line(tmp_path):
    message = load_error(tmp_path, lines(HEADER, SHIRT, "5,Men,Apparel,Topwear"))
    assert "line 3: 4 fields, but the header has 10" in message


@pytest.mark.parametrize(("styles", "expected"), [
    (b"", "is empty: no header line"),
    (b"\n\r\n\n", "is empty: no header line"),
    (lines(HEADER, "", ""), "has a header but no rows"),
])
def test_empty_file(tmp_path, styles, expected):
    assert expected in load_error(tmp_path, styles)


def test_a_jpeg_renamed_styles_csv_is_not_csv_text(tmp_path):
    root = write_dataset(tmp_path / "data", b"")
    write_image(root / "styles.csv.jpg")
    (root / "styles.csv.jpg").replace(root / "styles.csv")
    with pytest.raises(CatalogueError, match="styles.csv is not CSV text: not UTF-8"):
        load_catalogue(root)


def test_nul_bytes_are_not_csv_text(tmp_path):
    assert "is not CSV text: it holds NUL bytes" in load_error(tmp_path, HEADER.encode() + b"\n1\x00\x00\n")


# --- folder layouts -------------------------------------------------------------------


@pytest.mark.parametrize("inner", ["", "fashion-dataset", "myntradataset", "1/myntradataset", "versions/fashion-dataset"])
def test_dataset_folder_layouts(tmp_path, inner):
    root = write_dataset(tmp_path / "download" / inner, lines(HEADER, SHIRT))
    assert resolve_dataset_dir(tmp_path / "download") == root
    assert load_catalogue(tmp_path / "download").root == root


def test_full_dataset_is_preferred_over_small_at_the_same_level(tmp_path):
    full = write_dataset(tmp_path / "fashion-dataset", lines(HEADER, SHIRT))
    write_dataset(tmp_path / "myntradataset", lines(HEADER, JEANS))
    assert resolve_dataset_dir(tmp_path) == full


def test_layout_errors(tmp_path):
    with pytest.raises(CatalogueError, match=f"{tmp_path / 'nowhere'} does not exist"):
        resolve_dataset_dir(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CatalogueError, match="file.txt is not a folder"):
        resolve_dataset_dir(tmp_path / "file.txt")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(CatalogueError) as caught:
        resolve_dataset_dir(tmp_path / "empty")
    assert f"no styles.csv in {tmp_path / 'empty'} (also looked in fashion-dataset/, myntradataset/" in str(caught.value)
    (tmp_path / "no-images").mkdir()
    (tmp_path / "no-images" / "styles.csv").write_text(lines(HEADER, SHIRT))
    with pytest.raises(CatalogueError, match=f"no images/ folder next to {tmp_path / 'no-images' / 'styles.csv'}"):
        resolve_dataset_dir(tmp_path / "no-images")


# --- the real sample ------------------------------------------------------------------


def test_real_sample(real_sample):
    catalogue = load_catalogue(real_sample)
    assert catalogue.report.as_dict() == {
        "styles_csv": str(real_sample / "styles.csv"), "lines_read": 44_446, "lines_repaired": 0,
        "duplicate_ids": 0, "rows_without_image": 32_564, "rows_kept": 11_882,
    }
    assert catalogue.frame["id"].is_unique
    frame = catalogue.frame.set_index("id")
    assert frame.loc[15970].tolist() == [
        "Men", "Apparel", "Topwear", "Shirts", "Navy Blue", "Fall", 2011, "Casual", "Turtle Check Men Navy Blue Shirt",
    ]
    assert frame.loc[59263, "productDisplayName"] == "Titan Women Silver Watch"
    assert 39386 not in frame.index  # in styles.csv, no image
    assert catalogue.frame[list(HEADS)].isna().sum().tolist() == [0, 0, 0, 0, 3, 1, 31]
    assert catalogue.frame["id"].map(lambda product_id: catalogue.image_path(product_id).is_file()).all()


def test_a_catalogue_where_no_product_has_its_photo_is_refused(tmp_path):
    root = write_dataset(tmp_path / "data", lines(HEADER, SHIRT, JEANS), image_ids=(1, 2))
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(root)
    message = str(caught.value)
    assert "none of the 2 products" in message and "15970.jpg" in message and "holds 2 files" in message
