"""`python -m core.data`: inspect, demo, download (kagglehub mocked: no network here)."""

from __future__ import annotations

import json
import subprocess
import sys

import kagglehub
import pytest
import requests
from kagglehub import exceptions as kaggle_errors
from test_catalogue import HEADER, lines, write_dataset

from core.data import CatalogueError
from core.data.__main__ import main
from core.data.catalogue import load_catalogue
from core.data.download import download_kaggle

TINY_ROWS = (
    "1,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,Shirt one",
    "2,Men,Apparel,Topwear,Shirts,,Fall,2011,Casual,Shirt two",
    "3,Men,Apparel,Bottomwear,Jeans,Blue,Summer,2012,Casual,Jeans, with a comma",
    "4,Women,Accessories,Watches,Watches,Silver,Winter,2016,,Watch",
    "1,Men,Apparel,Topwear,Shirts,Red,Fall,2011,Casual,Shirt one again",
    "6,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,No image",
)


@pytest.fixture
def tiny(tmp_path):
    return write_dataset(tmp_path / "tiny", lines(HEADER, *TINY_ROWS), image_ids=(1, 2, 3, 4))


def run_json(capsys, *argv: str) -> dict:
    assert main(["inspect", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_inspect_json_on_a_tiny_catalogue(tiny, capsys):
    result = run_json(capsys, str(tiny))
    assert result["report"] == {
        "styles_csv": str(tiny / "styles.csv"), "lines_read": 6, "lines_repaired": 1, "quotes_repaired": 0,
        "duplicate_ids": 1, "rows_without_image": 1, "photo_near_misses": 0, "rows_kept": 4,
        "near_miss_examples": [], "formula_values": 0, "formula_examples": [],
    }
    heads = result["heads"]
    assert list(heads) == ["gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage"]
    assert heads["gender"] == {
        "classes": 2, "missing": 0, "largest": 3, "smallest": 1, "imbalance_ratio": 3.0, "top_class": "Men",
    }
    assert heads["baseColour"] == {
        "classes": 2, "missing": 1, "largest": 2, "smallest": 1, "imbalance_ratio": 2.0, "top_class": "Blue",
    }
    assert heads["usage"] == {
        "classes": 1, "missing": 1, "largest": 3, "smallest": 3, "imbalance_ratio": 1.0, "top_class": "Casual",
    }


def test_inspect_text_shows_every_count_and_each_head(tiny, capsys):
    assert main(["inspect", str(tiny)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"catalogue: {tiny / 'styles.csv'}"
    counts = {line.split()[0]: line.split()[1] for line in out[1:8]}
    assert counts == {
        "lines_read": "6", "lines_repaired": "1", "quotes_repaired": "0", "duplicate_ids": "1",
        "rows_without_image": "1", "photo_near_misses": "0", "rows_kept": "4",
    }
    assert "misnamed" not in "\n".join(out)
    gender = next(line for line in out if line.startswith("gender"))
    assert gender.split() == ["gender", "2", "0", "3", "1", "3.0", "Men"]


def test_inspect_json_on_the_real_sample(real_sample, capsys):
    result = run_json(capsys, str(real_sample))
    assert (result["report"]["lines_read"], result["report"]["rows_kept"]) == (44_446, 11_882)
    gender = result["heads"]["gender"]
    assert ([gender[stat] for stat in ("classes", "missing", "largest", "smallest", "top_class")]
            == [5, 0, 7004, 86, "Men"])
    assert gender["imbalance_ratio"] == pytest.approx(7004 / 86)
    assert [result["heads"][head]["missing"] for head in ("baseColour", "season", "usage")] == [3, 1, 31]
    assert (result["heads"]["articleType"]["classes"], result["heads"]["articleType"]["top_class"]) == (113, "Tshirts")


def test_user_errors_exit_2_with_the_message(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope")]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"error: {tmp_path / 'nope'} does not exist\n")
    # The export moved to the label store's command line; its old spelling says where.
    assert main(["export", "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ("error: export is the label store's command now: python -m core.labels "
                                       "export --data DIR --out DIR2\n")


def test_inspect_names_misnamed_photos_and_counts_stray_quotes(tiny, capsys):
    (tiny / "images" / "0006.jpg").write_bytes(b"")
    styles = tiny / "styles.csv"
    styles.write_text(styles.read_text().replace("Shirt two", '"Shirt two 12'))
    assert main(["inspect", str(tiny)]) == 0
    out = capsys.readouterr().out.splitlines()
    counts = {line.split()[0]: line.split()[1] for line in out[1:9]}
    assert (counts["quotes_repaired"], counts["photo_near_misses"], counts["formula_values"]) == ("1", "1", "0")
    assert out[9] == "  photos that look misnamed (expected <id>.jpg), e.g.: 0006.jpg"


@pytest.mark.parametrize(("styles", "problem"), [
    (f"{HEADER}\r1,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,x\r",
     "line 1: a carriage return without a line feed"),
    (f"{HEADER}\n1,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,{'x' * 140_000}\n", "line 2: 140,0"),
    (f"{HEADER}\n{'9' * 20},Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,x\n",
     "line 2: id '99999999999999999999' is out"),
], ids=["cr-only-line-ends", "long-field", "id-beyond-64-bits"])  # short ids: the test id goes into the environment
def test_unreadable_files_end_in_an_error_line_not_a_traceback(tmp_path, styles, problem):
    root = write_dataset(tmp_path / "bad", styles, image_ids=(1,))
    done = subprocess.run([sys.executable, "-m", "core.data", "inspect", str(root)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {root / 'styles.csv'} {problem}")


def test_module_entry_point_prints_no_traceback(tmp_path):
    root = write_dataset(tmp_path / "bad", lines(HEADER, "x1,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,y"))
    command = [sys.executable, "-m", "core.data", "inspect", str(root)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == f"error: {root / 'styles.csv'} line 2: id 'x1' is not an integer\n"


def test_demo_writes_a_loadable_catalogue(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo"), "--n", "60", "--seed", "3"]) == 0
    captured = capsys.readouterr()
    root = load_catalogue(tmp_path / "demo").root
    assert f"demo catalogue: 60 products in {root}" in captured.out
    assert captured.err.startswith("\rwriting demo images: ") and captured.err.endswith("60/60\n")


def test_demo_user_errors_exit_2(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo"), "--n", "10"]) == 2
    assert capsys.readouterr().err.startswith("error: n=10: the demo needs an integer n >= 50 rows")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["demo", str(tmp_path / "mine")]) == 2
    assert "is a non-empty folder that is not a previous demo" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# --- download (kagglehub mocked) ------------------------------------------------------


def fail_with(error: Exception):
    def dataset_download(handle, path=None, *, force_download=False, output_dir=None):
        raise error
    return dataset_download


@pytest.mark.parametrize("error", [
    requests.exceptions.ConnectionError("Failed to resolve 'api.kaggle.com'"),
    kaggle_errors.UnauthenticatedError(),
    kaggle_errors.KaggleApiHTTPError("403 Client Error: Forbidden"),
])
def test_download_without_network_or_credentials_says_what_to_do(tmp_path, capsys, monkeypatch, error):
    monkeypatch.setattr(kagglehub, "dataset_download", fail_with(error))
    assert main(["download", str(tmp_path / "kaggle")]) == 2
    err = capsys.readouterr().err
    handle = "paramaggarwal/fashion-product-images-small"
    assert err.startswith(f"error: could not download {handle} from Kaggle ({type(error).__name__}: {error})")
    assert "https://www.kaggle.com/datasets/paramaggarwal/fashion-product-images-small, unzip it" in err
    assert "python -m core.data inspect DIR" in err and "Traceback" not in err


def test_download_into_a_folder_holding_other_files(tmp_path, monkeypatch):
    monkeypatch.setattr(kagglehub, "dataset_download", fail_with(FileExistsError("output_dir is not empty")))
    message = "is not empty and holds no finished download of paramaggarwal/fashion-product-images-dataset"
    with pytest.raises(CatalogueError, match=message):
        download_kaggle(tmp_path, variant="full")


@pytest.mark.parametrize(("variant", "handle"), [
    ("small", "paramaggarwal/fashion-product-images-small"),
    ("full", "paramaggarwal/fashion-product-images-dataset"),
])
def test_download_returns_the_dataset_folder(tmp_path, monkeypatch, variant, handle):
    calls = []

    def dataset_download(handle, path=None, *, force_download=False, output_dir=None):
        calls.append((handle, output_dir))
        write_dataset(tmp_path / "dest" / "1" / "myntradataset", lines(HEADER, TINY_ROWS[0]), image_ids=(1,))
        return output_dir

    monkeypatch.setattr(kagglehub, "dataset_download", dataset_download)
    assert download_kaggle(tmp_path / "dest", variant=variant) == tmp_path / "dest" / "1" / "myntradataset"
    assert calls == [(handle, str(tmp_path / "dest"))]


def test_download_argument_errors(tmp_path, capsys):
    with pytest.raises(CatalogueError, match="unknown variant 'tiny'; valid: full, small"):
        download_kaggle(tmp_path, variant="tiny")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CatalogueError, match="file is not a folder"):
        download_kaggle(tmp_path / "file")
    with pytest.raises(SystemExit) as caught:
        main(["download", "--variant", "tiny", str(tmp_path)])
    assert caught.value.code == 2
    assert "invalid choice: 'tiny' (choose from 'full', 'small')" in capsys.readouterr().err
