"""Labels in plotly figures (dashboard.charts): plotly reads HTML (`<a href>`, `<b>`, ...) in every
text it draws, so a catalogue label holding a link tag would become a link. Each figure that draws
labels is built with such a label: no string of its JSON holds a tag from it, the label is there as
entities plotly shows as its characters, and a click on the confusion matrix still hands back the
raw class name, on its own and through the Evaluate page. (The other figures, losses, curves,
reliability, risk-coverage and years, draw no label.) The real browser: test_browser_untrusted."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest
from streamlit.elements.plotly_chart import PlotlySelectionState, PlotlyState

from core.data.catalogue import STYLES_FILE
from core.data.demo import generate_demo
from core.data.profile import OTHERS_LABEL, top_n_counts
from core.data.split import split_catalogue, split_distribution
from core.evaluation.files import load_evaluation
from core.evaluation.views import ConfusionView, cell_rows, top_n_confusion
from core.trust.taxonomy import Taxonomy
from dashboard import charts
from dashboard.text import chart_text, plain
from training.run_folder import RunFolder

from conftest import open_page, plotly_array, tiny_run_workspace

HOSTILE = '<a href="http://evil.example/">x</a> <b>bold</b> &lt;'  # a tag, formatting, and an entity
DRAWN = chart_text(HOSTILE)
HEAD = "articleType"


def relabel_commonest(head: str, label: str):
    """An edit for a demo folder: the commonest value of `head` in styles.csv becomes `label`."""
    def edit(folder) -> None:
        frame = pd.read_csv(folder / STYLES_FILE, dtype=str, keep_default_na=False)
        frame.loc[frame[head] == frame[head].value_counts().index[0], head] = label
        frame.to_csv(folder / STYLES_FILE, index=False)
    return edit


def strings(value, skip: frozenset[str] = frozenset({"customdata"})) -> list[str]:
    """Every string in a figure's JSON, but under `skip` (customdata is drawn only through a
    hovertemplate, checked on its own)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() if key not in skip for text in strings(item, skip)]
    if isinstance(value, list):
        return [text for item in value for text in strings(item, skip)]
    return []


def assert_drawn_inert(figure) -> dict:
    """No string the figure (a plotly figure, or its JSON as a page sends it) may draw holds a tag
    from the label, and the label is drawn as the entities plotly turns back into its characters;
    returns the figure's JSON."""
    spec = figure if isinstance(figure, dict) else json.loads(figure.to_json())
    texts = strings(spec)
    assert not [text for text in texts if "<a" in text or "<b>" in text or "evil.example/\">" in text]
    assert any(DRAWN in text for text in texts)
    return spec


def test_chart_text_is_what_plotly_shows_as_characters():
    assert DRAWN == '&lt;a href="http://evil.example/"&gt;x&lt;/a&gt; &lt;b&gt;bold&lt;/b&gt; &amp;lt;'
    # Plotly splits tags on "<" and decodes only a few entities (amp, lt, gt among them), once.
    assert "<" not in DRAWN and set(re.findall(r"&\w+;", DRAWN)) <= {"&lt;", "&gt;", "&amp;"}
    assert html.unescape(DRAWN) == HOSTILE
    assert chart_text("Tshirts") == "Tshirts" and chart_text(3) == "3"


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    folder = generate_demo(tmp_path_factory.mktemp("charts") / "demo", n=80, seed=2)
    relabel_commonest(HEAD, HOSTILE)(folder)
    return pd.read_csv(folder / STYLES_FILE, dtype=str, keep_default_na=False).replace("", None)


def test_distribution_and_split_bars_draw_the_label_as_text(frame):
    spec = assert_drawn_inert(charts.counts_bar(top_n_counts(frame, HEAD, 10), "t", log_scale=False))
    assert spec["data"][0]["y"][0] == DRAWN  # the commonest class, first
    split = split_catalogue(frame, val_fraction=0.2, seed=0)
    spec = assert_drawn_inert(charts.split_bars(split_distribution(frame, split, HEAD), HEAD))
    assert all(trace["y"][0] == DRAWN for trace in spec["data"])


def test_f1_bars_draw_the_label_as_text():
    table = pd.DataFrame({"class": ["Shirts", HOSTILE], "precision": [0.5, 0.9], "recall": [0.5, 0.8],
                          "f1": [0.5, 0.85], "support": [3, 9]})
    spec = assert_drawn_inert(charts.class_f1_bars(table, HEAD))
    assert spec["data"][0]["x"] == [DRAWN, "Shirts"]


def test_taxonomy_sunburst_draws_the_label_as_text(frame):
    spec = assert_drawn_inert(charts.taxonomy_sunburst(Taxonomy.fit(frame).tree()))
    assert DRAWN in spec["data"][0]["labels"]


def test_map_legend_and_hover_draw_the_label_as_text_and_selections_name_photos():
    points = pd.DataFrame({"id": [11, 12, 13], "x": [0.0, 1.0, 2.0], "y": [0.0, 1.0, 0.5],
                           "colour": pd.Categorical([HOSTILE, "Shirts", HOSTILE], categories=[HOSTILE, "Shirts"]),
                           "label": [f"Men · {HOSTILE}", "Men · Shirts", f"Women · {HOSTILE}"]})
    spec = assert_drawn_inert(charts.embedding_map(points, "t"))
    hostile, shirts = spec["data"]
    assert hostile["name"] == f"{DRAWN} (2)" and hostile["text"] == [f"Men · {DRAWN}", f"Women · {DRAWN}"]
    assert hostile["hovertemplate"] == "%{customdata}<br>%{text}<extra></extra>"
    assert plotly_array(hostile["customdata"]).tolist() == [11, 13]  # what a selection reports


def test_confusion_matrix_draws_labels_as_text_and_a_click_hands_back_the_raw_class():
    classes = [HOSTILE, "Shirts", OTHERS_LABEL]
    view = ConfusionView(classes=classes, counts=np.array([[4, 1, 0], [0, 2, 2], [1, 0, 0]]), grouped=["Tops"])
    spec = assert_drawn_inert(charts.confusion_heatmap(view, normalised=False, title="t"))
    heatmap, cells = spec["data"]
    assert heatmap["x"] == heatmap["y"] == [DRAWN, "Shirts", OTHERS_LABEL]
    # The hover draws the cell's drawn names and its numbers, never the raw names in customdata.
    assert (set(re.findall(r"%\{(\w+(?:\[\d\])?)", cells["hovertemplate"]))
            == {"x", "y", "customdata[0]", "customdata[1]"})
    for n, (x, y, customdata) in enumerate(zip(cells["x"], cells["y"], cells["customdata"])):
        true, predicted = charts.clicked_cell({"x": x, "y": y, "customdata": customdata})  # as Streamlit reports it
        assert (true, predicted) == (classes[n // 3], classes[n % 3])


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A finished tiny run on a demo whose commonest articleType is HOSTILE."""
    with tiny_run_workspace(tmp_path_factory, seed=8, edit=relabel_commonest(HEAD, HOSTILE)) as (record, demo, _):
        yield record, load_evaluation(RunFolder(record.folder).evaluation())


@pytest.mark.slow  # it trains hostile_run
def test_a_click_on_a_hostile_cell_of_the_evaluate_page_shows_its_photos(hostile_run):
    record, evaluation = hostile_run
    at = open_page("../pages/evaluate.py", "evaluate.section", "Confusion")
    top_n = at.slider(key=f"evaluate.top_n.{HEAD}").value
    view = top_n_confusion(evaluation.classes(HEAD), evaluation.matrix(HEAD), top_n)
    i = view.classes.index(HOSTILE)
    j = int(np.argmax(view.counts[i]))
    spec = assert_drawn_inert(json.loads(at.get("plotly_chart")[0].proto.spec))
    cells = spec["data"][1]
    n = i * len(view.classes) + j
    point = {"x": cells["x"][n], "y": cells["y"][n], "customdata": cells["customdata"][n], "curve_number": 1,
             "point_number": n, "point_index": n}
    assert point["y"] == DRAWN  # drawn as text, and the click still names the class
    # What a click makes the chart return (Streamlit's own serde: session state bypasses it).
    at.session_state[f"evaluate.heatmap.{HEAD}.{top_n}"] = PlotlyState({"selection": PlotlySelectionState(
        {"points": [point], "point_indices": [n], "box": [], "lasso": []})})
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key=f"evaluate.true.{HEAD}.{top_n}").value == HOSTILE
    assert at.selectbox(key=f"evaluate.pred.{HEAD}.{top_n}").value == view.classes[j]
    heading = next(element.value for element in at.markdown if "images** true" in element.value)
    assert heading.startswith(f"**{view.counts[i, j]:,} images** true {plain(HOSTILE)},")
    assert len(cell_rows(evaluation.predictions, HEAD, view, HOSTILE, view.classes[j])) == view.counts[i, j]
