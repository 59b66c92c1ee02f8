"""AppTest of the Home and Explore pages on a generated demo dataset and on the real sample."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import workspace
from core.access.roles import DATA_ROOTS_ENV
from core.data.catalogue import load_catalogue
from core.data.profile import filter_rows
from core.data.split import in_test_part, split_catalogue
from core.labels.checks import catalogue_value
from core.labels.store import LabelStore
from core.labels.tables import ReviewStatus
from core.trust.taxonomy import Taxonomy
from training.config import TrainConfig, resolve_rare_min_count
from training.rows import decide_split

from conftest import ANN, REPO, point_at_workspace

HOME = str(REPO / "dashboard" / "Home.py")
EXPLORE = "../pages/explore.py"


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory) -> Path:
    """A workspace holding a small, complete demo dataset (generated once per test session)."""
    with pytest.MonkeyPatch.context() as patch:
        home = point_at_workspace(patch, tmp_path_factory.mktemp("workspace"))
        workspace.ensure_demo(n=120, seed=3)
    return home


@pytest.fixture
def on_demo(demo_workspace, monkeypatch, tmp_path) -> Path:
    """The demo open in local mode; the test's tmp_path an allowed folder too."""
    point_at_workspace(monkeypatch, demo_workspace)
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tmp_path))
    return demo_workspace / workspace.DEMO_FOLDER


@pytest.fixture
def configured_demo(demo_workspace, workspace_home, monkeypatch) -> Path:
    """The demo as the configured dataset (FASHION_TAGGER_DATA) of a fresh, empty workspace."""
    demo = demo_workspace / workspace.DEMO_FOLDER
    monkeypatch.setenv(workspace.DATA_ENV, str(demo))
    return demo


def app() -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def open_folder(at: AppTest, path: str | Path) -> None:
    at.text_input(key="dataset.folder").input(str(path))
    next(button for button in at.sidebar.button if button.label == "Open folder").click().run()


def sidebar_errors(at: AppTest) -> str:
    """The sidebar's errors as shown (markdown escapes undone)."""
    return " ".join(re.sub(r"\\(.)", r"\1", error.value) for error in at.sidebar.error)


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def explore(at: AppTest, section: str = "Distributions") -> AppTest:
    """The Explore page with its tab `section` open (only the open tab is drawn)."""
    at.session_state["explore.section"] = section
    at.switch_page(EXPLORE).run()
    assert not at.exception, at.exception
    return at


def test_home_shows_the_demo_dataset_and_its_cleaning_report(on_demo):
    at = app()
    report = load_catalogue(on_demo).report
    metrics = metric_values(at)
    assert metrics["Lines read"] == f"{report.lines_read:,}"
    assert metrics["Products kept"] == f"{report.rows_kept:,}" == "120"
    assert metrics["Rows without image"] == "0"
    assert any(str(on_demo) in m.value for m in at.markdown)


def test_home_counts_quote_repairs_and_names_misnamed_photos(workspace_home, tmp_path, monkeypatch):
    from test_catalogue import HEADER, JEANS, SHIRT, WATCH, lines, write_dataset

    unterminated = SHIRT.replace("Turtle", '"Turtle')
    root = write_dataset(tmp_path / "data", lines(HEADER, unterminated, JEANS, WATCH), image_ids=(15970, 39386))
    (root / "images" / "059263.jpg").write_bytes(b"")
    monkeypatch.setenv(workspace.DATA_ENV, str(root))
    at = app()
    metrics = metric_values(at)
    assert (metrics["Lines read"], metrics["Lines repaired"], metrics["Rows without image"]) == ("3", "1", "1")
    assert [t.value for t in at.text] == [
        "Files in images/ that look like photos of those rows but are misnamed (expected <id>.jpg): 1, e.g. 059263.jpg"
    ]


def test_explore_names_a_photo_too_large_to_show_and_shows_the_others(workspace_home, tmp_path, monkeypatch):
    from test_catalogue import HEADER, JEANS, SHIRT, WATCH, lines, write_dataset
    from test_images import PHOTO, patched_jpeg_size

    root = write_dataset(tmp_path / "data", lines(HEADER, SHIRT, JEANS, WATCH))
    (root / "images" / "15970.jpg").write_bytes(patched_jpeg_size(PHOTO, 15_000, 15_000))  # 225 MP
    monkeypatch.setenv(workspace.DATA_ENV, str(root))
    at = explore(app(), "Photos")
    assert [t.value for t in at.text] == [
        "15970.jpg: 225,000,000 pixels, more than the 160 megapixel limit (refused as a possible decompression bomb)"
    ]
    assert [w.value for w in at.warning] == ["This photo cannot be read."]
    assert len(at.get("imgs")) + len(at.get("image")) == 2  # the two good photos


def test_a_busy_database_is_a_message_on_the_page_not_a_traceback(on_demo, monkeypatch):
    from core.access.database import DatabaseBusy
    from training.registry import RunRegistry

    def busy(self, limit=None):
        raise DatabaseBusy("the workspace database (labels and runs) is busy: ...; try again")

    monkeypatch.setattr(RunRegistry, "list", busy)
    at = app()
    assert [e.value for e in at.error] == [
        "the workspace database (labels and runs) is busy: ...; try again. Nothing was saved; your choices are kept."]
    assert metric_values(at)["Products kept"] == "120"  # what was shown before stays


def test_first_run_generates_the_demo_with_a_progress_bar(workspace_home, monkeypatch):
    monkeypatch.setattr(workspace, "DEMO_SIZE", 60)
    at = app()
    assert workspace.demo_ready()
    assert metric_values(at)["Products kept"] == "60"
    assert len(list((workspace_home / "demo" / "images").glob("*.jpg"))) == 60


def test_configured_dataset_is_opened_by_default(configured_demo, workspace_home):
    at = app()
    assert metric_values(at)["Products kept"] == "120"
    assert not (workspace_home / "demo").exists()  # the workspace's own demo is not generated


@pytest.mark.parametrize(
    "make_bad, expected",
    [
        (lambda root: root / "nowhere", "does not exist"),
        (lambda root: root, "styles.csv"),
    ],
    ids=["missing-folder", "no-styles-csv"],
)
def test_a_bad_folder_is_refused_and_the_previous_dataset_stays(on_demo, tmp_path, make_bad, expected):
    at = app()
    open_folder(at, make_bad(tmp_path))
    errors = sidebar_errors(at)
    assert expected in errors and "previous dataset stays open" in errors
    assert metric_values(at)["Products kept"] == "120"


def test_a_folder_with_wrong_columns_is_refused(on_demo, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "styles.csv").write_text("id,colour\n1,Red\n")
    at = app()
    open_folder(at, tmp_path)
    errors = sidebar_errors(at)
    assert "gender" in errors and "colour" in errors  # names what is missing and what was found
    assert metric_values(at)["Products kept"] == "120"


def a_shop(on_demo: Path, folder: Path) -> Path:
    """A 7-row catalogue in `folder`, from the demo's rows and photos."""
    (folder / "images").mkdir(parents=True)
    frame = pd.read_csv(on_demo / "styles.csv").head(7)
    frame.to_csv(folder / "styles.csv", index=False)
    for product_id in frame["id"]:
        (folder / "images" / f"{product_id}.jpg").write_bytes((on_demo / "images" / f"{product_id}.jpg").read_bytes())
    return folder


@pytest.mark.parametrize("address, opens", [("127.0.0.1", True), ("localhost", True), ("0.0.0.0", False)])
def test_local_mode_on_this_machine_opens_any_folder_of_the_user(on_demo, tmp_path_factory, monkeypatch, address,
                                                                 opens):
    """Local mode listening on this machine only: its one user's own folders open, no allowed roots
    (the workspace and the test's tmp_path are the roots here; the shop lies outside both). Listening
    on the network without a login keeps the refusal."""
    import streamlit as st

    shop = a_shop(on_demo, tmp_path_factory.mktemp("elsewhere") / "shop")
    monkeypatch.setattr(st, "get_option",
                        lambda key, get=st.get_option: address if key == "server.address" else get(key))
    at = app()
    open_folder(at, shop)
    if opens:
        assert metric_values(at)["Products kept"] == "7" and not at.sidebar.error
    else:
        assert "not a folder this dashboard may use" in sidebar_errors(at)
        assert metric_values(at)["Products kept"] == "120"


def test_switching_to_another_folder_and_back_to_the_demo(on_demo, tmp_path):
    other = a_shop(on_demo, tmp_path / "shop")
    at = app()
    open_folder(at, other)
    assert metric_values(at)["Products kept"] == "7"
    assert at.query_params["dataset_dir"] == str(other)  # in the URL: a reload opens it again
    reloaded = AppTest.from_file(HOME, default_timeout=60)
    reloaded.query_params["dataset_dir"] = str(other)
    reloaded.run()
    assert metric_values(reloaded)["Products kept"] == "7"
    next(button for button in at.sidebar.button if button.label == "Use the demo dataset").click().run()
    assert metric_values(at)["Products kept"] == "120"
    broken = AppTest.from_file(HOME, default_timeout=60)
    broken.query_params["dataset_dir"] = str(tmp_path / "gone")
    broken.run()
    assert metric_values(broken)["Products kept"] == "120"  # the default, with a word on the link
    assert any("The dataset in the link cannot be opened" in w.value for w in broken.warning)


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def values(array) -> list:
    """A plotly trace array as a list: plotly ships numeric arrays as typed base64 (`bdata`)."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def test_explore_renders_every_section_on_the_demo_one_open_tab_at_a_time(on_demo):
    at = explore(app())
    frame = load_catalogue(on_demo).frame
    bars = chart_specs(at)[0]["data"][0]
    counts = frame["articleType"].value_counts()
    assert dict(zip(bars["y"], values(bars["x"]))) == {name: int(count) for name, count in counts.items()}
    expected = {  # per tab: its subheaders and its charts' titles, and nothing of the other tabs
        "Distributions": (["Label distributions", "Missing and unique values per column"],
                          ["articleType: rows per class"]),
        "Imbalance": (["Class imbalance"], []),
        "Taxonomy": (["Taxonomy"], ["The catalogue's taxonomy (rows per articleType)"]),
        "Split & years": (["Train / validation split"],
                          ["articleType: share of each class per split", "Products per year"]),
        "Photos": (["Photos"], []),
    }
    for section, (subheaders, titles) in expected.items():
        at.session_state["explore.section"] = section
        at.run()
        assert not at.exception, at.exception
        assert [s.value for s in at.main.subheader] == subheaders, section
        assert [spec["layout"]["title"]["text"] for spec in chart_specs(at)] == titles, section
    assert len(at.get("imgs")) >= 1 or len(at.get("image")) >= 1


def test_explore_taxonomy_lists_the_rows_that_break_it_and_queues_them_for_review(on_demo):
    frame = load_catalogue(on_demo).frame.copy()
    styles = pd.read_csv(on_demo / "styles.csv")
    stray = int(styles.loc[styles["articleType"] == "Tshirts", "id"].iloc[0])
    styles.loc[styles["id"] == stray, "subCategory"] = "Shoes"  # a T-shirt under Shoes: breaks the taxonomy
    styles.to_csv(on_demo / "styles.csv", index=False)
    frame = load_catalogue(on_demo).frame
    broken = Taxonomy.fit(frame).violations(frame)
    assert stray in broken["id"].tolist()
    at = explore(app(), "Taxonomy")
    assert any(m.value.startswith(f"**{broken['id'].nunique():,} rows break it**") for m in at.markdown)
    sunburst = next(spec for spec in chart_specs(at) if spec["data"][0]["type"] == "sunburst")["data"][0]
    leaves = [rows for node, rows in zip(values(sunburst["ids"]), values(sunburst["values"])) if node.count("/") == 2]
    strays = broken[(broken["head"] == "articleType") & (broken["parent_head"] == "subCategory")]
    assert sum(leaves) == frame["articleType"].notna().sum() - len(strays)  # every row but the strays
    at.button(key="taxonomy_review").click().run()
    assert not at.exception, at.exception
    queued = LabelStore(workspace=workspace.workspace_dir()).items(at.session_state["review.queue"])
    assert [item.product_id for item in queued] == broken["id"].drop_duplicates().tolist()


def test_explore_log_scale_and_top_n(on_demo):
    at = explore(app())
    at.toggle(key="dist_log").set_value(True).run()
    spec = chart_specs(at)[0]
    assert spec["layout"]["xaxis"]["type"] == "log"
    at.slider(key="dist_top_n").set_value(5).run()
    bars = chart_specs(at)[0]["data"][0]
    assert len(bars["y"]) == 6 and bars["y"][-1] == "(others)"
    assert sum(values(bars["x"])) == 120


def test_rare_threshold_shows_live_what_becomes_none_or_other(on_demo):
    at = explore(app(), "Imbalance")
    frame = load_catalogue(on_demo).frame
    # It starts from what a new run of the default recipe does: merge into Other under its automatic threshold.
    train_rows = int((split_catalogue(frame, val_fraction=0.2, seed=0) == "train").sum())
    assert at.slider(key="rare_threshold").value == resolve_rare_min_count(TrainConfig(), train_rows)
    assert at.radio(key="rare_policy").value == "other"
    at.segmented_control(key="rare_head").set_value("articleType").run()
    at.slider(key="rare_threshold").set_value(10).run()
    counts = frame["articleType"].value_counts()
    rare = int((counts < 10).sum())
    assert any(f"{rare} of {len(counts)} articleType classes are under 10 rows" in c.value for c in at.caption)
    at.radio(key="rare_policy").set_value("other").run()
    preview = next(d.value for d in at.dataframe if "becomes" in d.value.columns)
    becomes = preview.set_index("class")["becomes"]
    assert all(becomes[c] == "Other" for c in counts[counts < 10].index)
    assert all(becomes[c] == c for c in counts[counts >= 10].index)


def test_image_grid_filters_and_pages(on_demo):
    at = explore(app(), "Photos")
    frame = load_catalogue(on_demo).frame
    article = frame["articleType"].value_counts().index[0]
    at.multiselect(key="filter_articleType").set_value([article]).run()
    expected = filter_rows(frame, {"articleType": [article]})
    assert any(f"{len(expected):,} products match." == c.value for c in at.caption)
    captions = [c.value for c in at.caption if c.value.startswith("**")]
    assert len(captions) == min(24, len(expected))
    assert all(article in c for c in captions)
    first_page_ids = [c.split("**")[1] for c in captions]
    assert first_page_ids == [str(i) for i in expected["id"].head(len(captions))]


def test_home_and_explore_on_the_real_sample(real_sample, workspace_home, monkeypatch):
    monkeypatch.setenv(workspace.DATA_ENV, str(real_sample))
    at = app()
    metrics = metric_values(at)
    assert metrics["Lines read"] == "44,446"
    assert metrics["Products kept"] == "11,882"
    at = explore(at)
    bars = chart_specs(at)[0]["data"][0]
    assert bars["y"][0] == "Tshirts" and bars["y"][-1] == "(others)"
    assert sum(values(bars["x"])) == 11882
    at = explore(at, "Split & years")  # a new run leaves the dataset's fixed test part out
    frame = load_catalogue(real_sample).frame
    parts = decide_split(TrainConfig(), load_catalogue(real_sample)).value_counts()
    assert parts.sum() == 11882 - 1181 == len(frame) - in_test_part(frame["id"].to_numpy()).sum()
    assert (f"The default split of a new run (seed 0, 20% validation, stratified on articleType): {parts['train']:,} "
            f"train, {parts['val']:,} val; 1,181 rows are the dataset's fixed test part, which every run is scored on "
            "and none trains or validates on.") in [c.value for c in at.caption]


def test_home_counts_the_reviewed_labels_of_the_open_dataset(configured_demo):  # a label store of its own
    at = app()
    assert "No corrections yet" in " ".join(caption.value for caption in at.caption)

    catalogue = load_catalogue(configured_demo)
    frame = catalogue.frame
    store = LabelStore(workspace=workspace.workspace_dir())
    first, second, third = store.add_catalogue_items(catalogue, frame["id"].iloc[:3], ANN)
    other_colour = next(value for value in frame["baseColour"].dropna().unique()
                        if value != first.baseline["baseColour"])
    store.review(first.item, {"baseColour": other_colour}, ANN)  # corrected
    store.review(second.item, {}, ANN)  # accepted as it is: not a correction
    store.mark(third.item, ReviewStatus.NOT_PRODUCT, ANN)
    images = configured_demo / "images"
    photo = store.add_image(catalogue.root, (images / f"{frame['id'].iloc[3]}.jpg").read_bytes(), "new.jpg", ANN)
    store.review(photo.item, {"gender": "Men"}, ANN)
    store.add_image(catalogue.root, (images / f"{frame['id'].iloc[4]}.jpg").read_bytes(), "later.jpg", ANN)

    at = app()
    metrics = metric_values(at)
    assert (metrics["Corrected rows"], metrics["Not a product"], metrics["New photos labelled"]) == ("1", "1", "1")


def test_a_filtered_grid_gets_one_label_as_one_bulk_edit_with_a_count_a_confirmation_and_an_undo(configured_demo):
    frame = load_catalogue(configured_demo).frame
    article = frame["articleType"].value_counts().index[0]
    ids = filter_rows(frame, {"articleType": [article]})["id"].tolist()
    at = explore(app(), "Photos")
    at.multiselect(key="filter_articleType").set_value([article]).run()
    at.session_state["grid.bulk_open"] = True  # open the form (closed, it costs nothing)
    at.run()
    at.selectbox(key="grid.bulk_head").set_value("season").run()
    at.selectbox(key="grid.bulk_value").set_value("Spring").run()
    springs = int((frame.set_index("id").loc[ids, "season"] == "Spring").sum())
    changing = len(ids) - springs
    assert any(m.value.startswith(f"**{changing:,} of {len(ids):,} photos** would change to season = Spring")
               for m in at.markdown)
    assert at.button(key="grid.bulk_apply").disabled  # not confirmed yet
    at.checkbox(key="grid.bulk_confirm").check().run()
    at.button(key="grid.bulk_apply").click().run()
    assert not at.exception, at.exception
    assert f"Set season to Spring on {changing:,} photos." in [s.value for s in at.success]
    store = LabelStore(workspace=workspace.workspace_dir())
    state = {item.product_id: values["season"] for item, values in store.dataset_state(configured_demo)}
    assert len(state) == changing and set(state.values()) == {"Spring"} and set(state) <= set(ids)
    assert store.log_frame(configured_demo)["action"].nunique() == changing  # one action per photo, one batch

    at.button(key="grid.bulk_undo").click().run()
    assert not at.exception, at.exception
    after = {item.product_id: values["season"] for item, values in store.dataset_state(configured_demo)}
    assert after == {product_id: catalogue_value(frame.set_index("id").loc[product_id, "season"])
                     for product_id in state}
    assert not at.success


HEAVY_MODULES = ("torch", "lightning", "timm", "torchmetrics", "cleanlab", "sklearn", "scipy",
                 # and the run machinery Explore has no use for (a first visit's imports are most of its time)
                 "training.rows", "training.crossval", "training.launcher", "training.evaluate")
HOME_AND_EXPLORE = f"""
import json, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({HOME!r}, default_timeout=120)
at.run()
for section in ("Distributions", "Imbalance", "Taxonomy", "Split & years", "Photos"):
    at.session_state["explore.section"] = section
    at.switch_page({EXPLORE!r}).run()
print(json.dumps({{"exception": [str(error.value) for error in at.exception],
                  "loaded": sorted(name for name in {HEAVY_MODULES!r} if name in sys.modules)}}))
"""


@pytest.mark.slow
def test_home_and_every_tab_of_explore_load_no_model_library(on_demo):
    """What every session runs first (Home) and Explore import none of torch, Lightning, timm,
    cleanlab or SciPy (seconds each, cold), nor the run machinery (a run's rows, crossval, the
    launcher). In a fresh interpreter, since this one has them."""
    done = subprocess.run([sys.executable, "-c", HOME_AND_EXPLORE], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"exception": [], "loaded": []}
