"""core.data.catalogue: styles.csv as Kaggle ships it, image lookup, folder layouts, errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from core.data import HEADS, STYLES_COLUMNS, CatalogueError
from core.data.catalogue import load_catalogue, read_styles, resolve_dataset_dir

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
        "styles_csv": str(root / "styles.csv"), "lines_read": 3, "lines_repaired": 0, "quotes_repaired": 0,
        "duplicate_ids": 0, "rows_without_image": 1, "photo_near_misses": 0, "rows_kept": 2,
        "near_miss_examples": (), "formula_values": 0, "formula_examples": (),
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
    message = load_error(tmp_path, lines(header, "1,Men,Apparel,Topwear,Shirts,Blue,Fall,Casual",
                                         "2,Men,A,B,C,D,E,F,G"))
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


def test_a_stray_quote_never_joins_lines(tmp_path):
    unterminated = '39386,Men,Apparel,Bottomwear,Jeans,Blue,Summer,2012,Casual,"Peter England Jeans 32'
    junk_after_quote = '59263,Women,Accessories,Watches,Watches,Silver,Winter,2016,Casual,"Titan" 12" Watch'
    inch_mark = '7,Men,Accessories,Bags,Laptop Bag,Black,Fall,2012,Casual,Laptop Bag 15" Sleeve, Black'
    catalogue = load_catalogue(write_dataset(
        tmp_path / "data", lines(HEADER, SHIRT, unterminated, WATCH.replace("59263", "8"), junk_after_quote, inch_mark),
        image_ids=(15970, 39386, 8, 59263, 7),
    ))
    frame = catalogue.frame.set_index("id")
    assert frame.index.tolist() == [15970, 39386, 8, 59263, 7]  # every line is a row
    assert frame.loc[39386, "productDisplayName"] == '"Peter England Jeans 32'  # the quote kept as a character
    assert frame.loc[8, "productDisplayName"] == "Titan Women Silver Watch"
    assert frame.loc[59263, "productDisplayName"] == '"Titan" 12" Watch'
    assert frame.loc[7, "productDisplayName"] == 'Laptop Bag 15" Sleeve, Black'  # a quote inside a field is text
    assert (catalogue.report.quotes_repaired, catalogue.report.lines_repaired) == (2, 1)


def test_stray_quotes_in_the_real_sample_lose_no_product(real_sample, tmp_path):
    """Two planted quotes (an unterminated one, then an inch mark 500 lines on): csv would join the
    lines between them into one row; read line by line, every product stays."""
    lines_ = (real_sample / "styles.csv").read_text().split("\n")
    lines_[1000] = lines_[1000].rsplit(",", 1)[0] + ',"Unterminated name'
    lines_[1500] = lines_[1500].rsplit(",", 1)[0] + ',Laptop Sleeve 12" Black'
    root = tmp_path / "sample"
    root.mkdir()
    (root / "styles.csv").write_text("\n".join(lines_))
    (root / "images").symlink_to(real_sample / "images")
    report = load_catalogue(root).report
    assert (report.lines_read, report.rows_kept, report.quotes_repaired) == (44_446, 11_882, 1)
    frame = read_styles(root / "styles.csv").frame
    assert frame["productDisplayName"].iloc[[999, 1499]].tolist() == ['"Unterminated name', 'Laptop Sleeve 12" Black']


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
    (root / "images" / "4.png").write_bytes(b"")  # not the photo of any product in styles.csv
    (root / "images" / "59263.jpg").mkdir()  # a folder is not a photo
    catalogue = load_catalogue(root)
    assert catalogue.frame["id"].tolist() == [39386]
    report = catalogue.report
    assert (report.rows_without_image, report.rows_kept) == (2, 1)
    assert (report.photo_near_misses, report.near_miss_examples) == (2, ("015970.jpg", "59263.png"))


def test_photos_with_an_upper_case_or_jpeg_extension_are_found(tmp_path):
    root = write_dataset(tmp_path / "data", lines(HEADER, SHIRT, JEANS, WATCH), image_ids=(39386,))
    (root / "images" / "39386.jpg").rename(root / "images" / "15970.JPG")
    write_image(root / "images" / "39386.jpeg")
    write_image(root / "images" / "59263.Jpeg")
    catalogue = load_catalogue(root)
    assert catalogue.frame["id"].tolist() == [15970, 39386, 59263]
    assert [catalogue.image_path(i).name for i in (15970, 39386, 59263)] == ["15970.JPG", "39386.jpeg", "59263.Jpeg"]
    assert all(catalogue.image_path(i).is_file() for i in (15970, 39386, 59263))
    assert (catalogue.report.rows_without_image, catalogue.report.photo_near_misses) == (0, 0)


def test_the_exact_name_wins_over_another_spelling(tmp_path):
    root = write_dataset(tmp_path / "data", lines(HEADER, SHIRT, JEANS), image_ids=(15970,))
    write_image(root / "images" / "15970.JPEG")
    write_image(root / "images" / "39386.jpg.jpg")
    catalogue = load_catalogue(root)
    assert catalogue.image_path(15970).name == "15970.jpg"
    assert catalogue.report.near_miss_examples == ("39386.jpg.jpg",)


# --- errors ---------------------------------------------------------------------------


def test_missing_required_columns_are_named_with_the_columns_found(tmp_path):
    message = load_error(tmp_path, lines("id,gender,colour,season,usage", "1,Men,Blue,Fall,Casual"))
    assert "missing required column(s) masterCategory, subCategory, articleType, baseColour" in message
    assert "columns found: id, gender, colour, season, usage" in message


def test_non_integer_id_names_the_line_and_value(tmp_path):
    message = load_error(tmp_path, lines(HEADER, SHIRT, "", "12a4,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,x"))
    assert "line 4" in message and "'12a4'" in message and "not an integer" in message


def test_cr_only_line_ends_name_the_line(tmp_path):
    message = load_error(tmp_path, "\r".join([HEADER, SHIRT, JEANS]).encode())
    assert "line 1: a carriage return without a line feed (CR-only line ends" in message
    message = load_error(tmp_path, f"{HEADER}\r\n{SHIRT}\r\n{JEANS}\r{WATCH}\r\n".encode())
    assert "line 3: a carriage return without a line feed" in message


def test_a_line_over_the_length_limit_names_the_line(tmp_path):
    message = load_error(tmp_path, lines(HEADER, SHIRT, JEANS.replace("Peter", "x" * 131_072)))
    assert f"line 3: {len(JEANS) - 5 + 131_072:,} characters, over the limit of 131,072 for one line" in message
    quoted = f'{WATCH.rsplit(",", 1)[0]},"{"y" * 200_000}"'
    assert "line 2: 200,0" in load_error(tmp_path, lines(HEADER, quoted))


@pytest.mark.parametrize("product_id", ["9223372036854775808", "-9223372036854775809", "1" * 30])
def test_an_id_beyond_64_bits_names_the_line(tmp_path, product_id):
    message = load_error(tmp_path, lines(HEADER, SHIRT, f"{product_id}{JEANS[5:]}"))
    assert f"line 3: id '{product_id}' is out of range (ids are 64-bit integers, at most 9,223,372,036,854,775,807)" \
        in message


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


@pytest.mark.parametrize("inner", ["", "fashion-dataset", "myntradataset", "1/myntradataset",
                                   "versions/fashion-dataset"])
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
    assert (f"no styles.csv in {tmp_path / 'empty'} (also looked in fashion-dataset/, myntradataset/"
            in str(caught.value))
    (tmp_path / "no-images").mkdir()
    (tmp_path / "no-images" / "styles.csv").write_text(lines(HEADER, SHIRT))
    with pytest.raises(CatalogueError, match=f"no images/ folder next to {tmp_path / 'no-images' / 'styles.csv'}"):
        resolve_dataset_dir(tmp_path / "no-images")


# --- the real sample ------------------------------------------------------------------


def test_real_sample(real_sample):
    catalogue = load_catalogue(real_sample)
    assert catalogue.report.as_dict() == {
        "styles_csv": str((real_sample / "styles.csv").resolve()), "lines_read": 44_446, "lines_repaired": 0,
        "quotes_repaired": 0, "duplicate_ids": 0, "rows_without_image": 32_564, "photo_near_misses": 0,
        "rows_kept": 11_882, "near_miss_examples": (), "formula_values": 0, "formula_examples": (),
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
    assert "seen instead" not in message


def test_refusal_names_the_misnamed_photos_it_saw(tmp_path):
    root = write_dataset(tmp_path / "data", lines(HEADER, SHIRT, JEANS, WATCH), image_ids=())
    for name in ("0015970.jpg", "39386.png", "059263.JPG", "0000.jpg", "notes.txt"):
        (root / "images" / name).write_bytes(b"")
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(root)
    assert "holds 5 files; seen instead: 0015970.jpg, 059263.JPG, 39386.png)" in str(caught.value)
