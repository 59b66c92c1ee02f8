"""The demo catalogue: Kaggle layout, deterministic, labels as in the real catalogue, visible labels."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.data import STYLES_COLUMNS
from core.data.demo import ARTICLES, COLOURS, HEIGHT, MIN_ROWS, WIDTH, article_counts, generate_demo, sample_rows

N = 120


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, list[tuple[int, int]]]:
    """A demo generated once for the module (seed 0) and the progress calls it made."""
    calls = []
    out = generate_demo(tmp_path_factory.mktemp("demo") / "demo", n=N, seed=0,
                        progress=lambda done, total: calls.append((done, total)))
    return out, calls


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return sample_rows(1500, seed=0)


def _styles(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "styles.csv")


def test_layout_is_kaggles(demo_run):
    out, _ = demo_run
    assert (out / "styles.csv").read_text().splitlines()[0] == ",".join(STYLES_COLUMNS)
    styles = _styles(out)
    assert len(styles) == N and styles["id"].is_unique
    assert styles["id"].dtype == np.int64 and styles["id"].between(10_000, 99_999).all()
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{i}.jpg" for i in styles["id"])
    for product_id in styles["id"][:10]:
        with Image.open(out / "images" / f"{product_id}.jpg") as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (WIDTH, HEIGHT))
    assert WIDTH * 4 == HEIGHT * 3


def test_progress_reaches_the_total_in_small_steps(demo_run):
    _, calls = demo_run
    done = [d for d, _ in calls]
    assert {total for _, total in calls} == {N} and done[-1] == N
    assert all(0 < step <= 0.05 * N for step in np.diff([0, *done]))


def test_same_seed_same_bytes_other_seed_differs(demo_run, tmp_path):
    out, _ = demo_run
    again = generate_demo(tmp_path / "again", n=N, seed=0)
    other = generate_demo(tmp_path / "other", n=N, seed=1)
    assert (again / "styles.csv").read_bytes() == (out / "styles.csv").read_bytes()
    for image in sorted((out / "images").iterdir())[:20]:
        assert (again / "images" / image.name).read_bytes() == image.read_bytes()
    assert (other / "styles.csv").read_bytes() != (out / "styles.csv").read_bytes()
    first = lambda folder: sorted((folder / "images").iterdir())[0].read_bytes()  # noqa: E731
    assert first(other) != first(out)
    pd.testing.assert_frame_equal(sample_rows(N, 0), sample_rows(N, 0))


def test_item_colour_is_its_base_colour(demo_run):
    """The mean RGB of the non-background pixels is nearest to the row's baseColour."""
    out, _ = demo_run
    names, palette = list(COLOURS), np.array(list(COLOURS.values()), dtype=float)
    hits = []
    for product_id, colour in _styles(out)[["id", "baseColour"]].itertuples(index=False):
        pixels = np.asarray(Image.open(out / "images" / f"{product_id}.jpg"), dtype=float)
        item = pixels[(pixels < 243).any(axis=-1)]  # background is white up to noise
        assert 0.03 < len(item) / (WIDTH * HEIGHT) < 0.8  # one item, inside the frame
        nearest = np.linalg.norm(palette - item.mean(axis=0), axis=1).argmin()
        hits.append(names[nearest] == colour)
    assert np.mean(hits) >= 0.95


def test_background_is_studio_white(demo_run):
    out, _ = demo_run
    product_id = _styles(out)["id"].iloc[0]
    pixels = np.asarray(Image.open(out / "images" / f"{product_id}.jpg"), dtype=float)
    corners = np.concatenate([pixels[:8, :8], pixels[:8, -8:], pixels[-8:, :8], pixels[-8:, -8:]])
    assert corners.mean() > 250


def test_labels_follow_each_article(rows):
    for name, article in ARTICLES.items():
        of_type = rows[rows["articleType"] == name]
        assert set(of_type["masterCategory"]) == {article.masterCategory}
        assert set(of_type["subCategory"]) == {article.subCategory}
        assert set(of_type["gender"]) <= set(article.genders)
        assert set(of_type["usage"].dropna()) <= set(article.usages)
        assert set(of_type["season"].dropna()) <= set(article.seasons)
    by_type = rows.groupby("articleType")
    assert set(by_type.get_group("Heels")["gender"]) == {"Women"}
    assert set(by_type.get_group("Dresses")["gender"]) == {"Women", "Girls"}
    assert set(by_type.get_group("Sports Shoes")["usage"].dropna()) == {"Sports"}
    assert set(by_type.get_group("Watches")["gender"]) == {"Men", "Women", "Unisex"}
    assert rows["year"].between(2010, 2018).all() and rows["year"].nunique() == 9
    assert 0 < rows["season"].isna().sum() <= 30 and 0 < rows["usage"].isna().sum() <= 30
    assert rows[["id", "gender", "articleType", "baseColour", "productDisplayName"]].notna().all().all()


def test_product_names_are_composed_from_the_labels(rows):
    for row in rows.head(50).itertuples():
        pattern = {"plain": "", "stripes": "Striped ", "checks": "Checked ", "dots": "Printed "}
        expected = f"{row.gender} {row.baseColour} {pattern[row.pattern]}{row.articleType}"
        assert row.productDisplayName.endswith(" " + expected)


def test_vocabulary_and_long_tail(rows):
    articles = rows["articleType"].value_counts()
    assert len(articles) >= 12 and rows["baseColour"].nunique() >= 10
    assert set(rows["masterCategory"]) == {"Apparel", "Footwear", "Accessories"}
    assert articles.iloc[0] / articles.iloc[-1] > 3
    assert articles.iloc[-1] / len(rows) >= 0.015
    assert articles.index[0] == "Tshirts"  # the real catalogue's most common type
    assert rows["baseColour"].value_counts().index[0] == "Black"


@pytest.mark.parametrize("n", [MIN_ROWS, 51, 1501])
def test_article_counts_are_zipf_by_rank_with_two_each_at_least(n):
    counts = list(article_counts(n).values())
    assert sum(counts) == n and min(counts) >= 2
    assert counts == sorted(counts, reverse=True)  # registry order is the real frequency order


def test_registry_matches_the_real_catalogue(real_sample):
    real = pd.read_csv(real_sample / "styles.csv", on_bad_lines="skip")
    for name, article in ARTICLES.items():
        of_type = real[real["articleType"] == name]
        commonest = of_type.groupby(["masterCategory", "subCategory"]).size().idxmax()
        assert commonest == (article.masterCategory, article.subCategory), name
        assert set(article.genders) <= set(of_type["gender"]), name
        assert set(article.usages) <= set(of_type["usage"]), name
        assert set(article.seasons) <= set(of_type["season"]), name
    assert set(COLOURS) <= set(real["baseColour"])


@pytest.mark.parametrize("n", [MIN_ROWS - 1, 0, -5, 100.0, "100", True])
def test_bad_n_is_refused_naming_it(tmp_path, n):
    with pytest.raises(ValueError, match=f"n={n!r}: the demo needs an integer n >= {MIN_ROWS}"):
        generate_demo(tmp_path / "demo", n=n)
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("seed", [-1, 1.5, None])
def test_bad_seed_is_refused_naming_it(tmp_path, seed):
    with pytest.raises(ValueError, match=f"seed={seed!r}: the demo's seed must be an integer >= 0"):
        generate_demo(tmp_path / "demo", n=MIN_ROWS, seed=seed)
    assert not (tmp_path / "demo").exists()


def test_refuses_a_foreign_folder_but_replaces_a_previous_demo(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is a non-empty folder that is not a previous demo"):
        generate_demo(mine, n=MIN_ROWS)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        generate_demo(tmp_path / "file", n=MIN_ROWS)

    out = generate_demo(tmp_path / "demo", n=60, seed=0)
    generate_demo(out, n=MIN_ROWS, seed=1)
    styles = _styles(out)
    assert len(styles) == MIN_ROWS and len(list((out / "images").iterdir())) == MIN_ROWS
