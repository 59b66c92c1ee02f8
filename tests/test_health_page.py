"""AppTest of the Data health page: before anything is computed, every section of a computed health
(pretrained backbone, a small demo with planted copies), the way into Review, similar photos for an
upload, and a run's own model with its split and right/wrong colouring."""

from __future__ import annotations

import time

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import workspace
from core.data.catalogue import load_catalogue
from core.health.files import leaked_ids, leaking_groups
from core.health.similarity import DEFAULT_THRESHOLD
from core.labels.store import LabelStore
from dashboard.health import similar_to_photo
from training import health as run_health
from training.launcher import health_job
from training.processes import log_tail

from conftest import captioned_ids, chart_spec, open_page, plotly_array, point_at_workspace
from health_support import planted_catalogue, with_unreadable_photos

HEALTH = "../pages/health.py"
SECTIONS = ["Map", "Similar photos", "Near-duplicates & leakage", "Label disagreements", "Outliers", "Image quality"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A workspace opening a 60-photo demo with four altered copies; yields the planted catalogue."""
    from core.data.demo import generate_demo

    root = tmp_path_factory.mktemp("health-page")
    demo = generate_demo(root / "demo", n=60, seed=7)
    planted = planted_catalogue(demo, root / "data", rows=60, copies=4, seed=1)
    with pytest.MonkeyPatch.context() as patch:
        point_at_workspace(patch, root / "ws", planted.folder)
        yield planted


def page(section: str | None = None) -> AppTest:
    return open_page(HEALTH, "health.section", section, timeout=120)


@pytest.mark.slow
def test_before_computing_the_page_offers_to_compute_it_in_the_background(planted):
    at = page()
    assert any("has not been computed" in info.value for info in at.info)
    [button] = [b for b in at.button if b.label == "Compute the data health"]
    button.click().run()
    assert not at.exception, at.exception
    catalogue = load_catalogue(planted.folder)
    deadline = time.monotonic() + 900
    while health_job(catalogue).running:
        assert time.monotonic() < deadline, log_tail(health_job(catalogue).log)
        time.sleep(2)
    assert health_job(catalogue).wrote_since_launch(run_health.folder_of(catalogue, None).info), log_tail(
        health_job(catalogue).log)
    at = page()
    assert not [b for b in at.button if b.label == "Compute the data health"]
    assert any(f"{len(catalogue.frame):,} photos" in c.value for c in at.caption)


@pytest.fixture(scope="module")
def computed(planted):
    """The planted catalogue's health (the background test computes it; computed here when run alone)."""
    catalogue = load_catalogue(planted.folder)
    return catalogue, run_health.compute(catalogue, None)


# The tests of `computed` are all slow: without the background test before them, whichever
# runs first computes the health itself (~9 s).
@pytest.mark.slow
def test_every_section_renders(computed):
    catalogue, health = computed
    for section in SECTIONS:
        at = page(section)
    assert any("embeddings by local (cpu)" in c.value for c in at.caption)  # which engine computed them


@pytest.mark.slow
def test_the_map_shows_every_photo_coloured_by_the_split(computed):
    catalogue, health = computed
    at = page("Map")
    spec = chart_spec(at)
    traces = spec["data"]
    assert all(trace["type"] == "scattergl" for trace in traces)
    assert (sorted(int(i) for trace in traces for i in np.atleast_1d(plotly_array(trace["customdata"])))
            == sorted(health.ids.tolist()))
    split, _ = run_health.health_split(catalogue, None)
    assert [trace["name"] for trace in traces] == [f"{name} ({count:,})" for name, count in
                                                   split.value_counts().reindex(["train", "val"]).items()]
    assert spec["layout"]["dragmode"] == "zoom"  # a click picks a point; the toolbar selects regions
    at.selectbox(key="health.colour").select("articleType").run()
    assert not at.exception
    assert len(chart_spec(at)["data"]) == min(catalogue.frame["articleType"].nunique(), 16)


@pytest.mark.slow
def test_duplicates_and_leakage_are_counted_and_listed(computed):
    catalogue, health = computed
    at = page("Near-duplicates & leakage")
    groups = health.near_duplicates(DEFAULT_THRESHOLD)
    split, _ = run_health.health_split(catalogue, None)
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Near-duplicate groups"] == f"{len(groups):,}"
    assert metrics["Groups across train and val"] == f"{len(leaking_groups(groups, split)):,}"
    assert metrics["Val photos with a twin in train"] == f"{len(leaked_ids(groups, split)):,}"
    assert groups, "the planted copies make groups"
    at.segmented_control(key="health.groups_shown").set_value("all groups").run()
    table = at.dataframe[0].value
    assert table["photos"].tolist() == [len(group) for group in groups]
    assert table["found_by"].tolist() == list(health.near_duplicates_found_by(DEFAULT_THRESHOLD).values())
    assert all(found for found in table["found_by"])  # every group says what found it
    at.slider(key="health.threshold").set_value(1.0).run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Near-duplicate groups"] == f"{len(health.near_duplicates(1.0)):,}"


@pytest.mark.slow
def test_outliers_go_to_the_review_queue(computed):
    catalogue, health = computed
    at = page("Outliers")
    outliers = health.outliers()
    assert captioned_ids(at) == outliers[:24]
    [button] = [b for b in at.button if b.label.startswith("Review these photos")]
    if not outliers:
        assert button.disabled
        return
    button.click().run()
    queue = at.session_state["review.queue"]
    items = LabelStore(workspace=workspace.workspace_dir()).items(queue)
    assert [item.product_id for item in items] == outliers


@pytest.mark.slow
def test_image_quality_lists_each_issue_type_worst_first(computed):
    catalogue, health = computed
    at = page("Image quality")
    for kind in ("dark", "odd_size", "grayscale"):
        at.segmented_control(key="health.issue").set_value(kind).run()
        assert not at.exception
        flagged = health.issues[health.issues[kind]].sort_values(f"{kind}_score", kind="stable")["id"].tolist()
        assert captioned_ids(at) == flagged[:24]


@pytest.mark.slow
def test_similar_photos_for_a_catalogue_id_and_for_an_upload(computed):
    catalogue, health = computed
    at = page("Similar photos")
    product = int(health.ids[5])
    at.text_input(key="health.similar_id").input(str(product)).run()
    assert not at.exception
    assert captioned_ids(at) == health.similar(product)["id"].tolist()[:24]
    at.text_input(key="health.similar_id").input("not an id").run()
    assert any("No photo with this id" in error.value for error in at.error)

    found = similar_to_photo(catalogue, None, catalogue.image_path(product).read_bytes(), "mine.jpg")
    assert found["id"].iloc[0] == product and found["similarity"].iloc[0] == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match="notes.txt"):
        similar_to_photo(catalogue, None, b"not a photo", "notes.txt")


@pytest.mark.slow
def test_a_near_duplicate_group_gets_one_label_as_one_bulk_edit(computed):
    catalogue, health = computed
    at = page("Near-duplicates & leakage")
    at.segmented_control(key="health.groups_shown").set_value("all groups").run()
    group = health.near_duplicates(DEFAULT_THRESHOLD)[0]
    at.session_state["health.groups.all groups.table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.session_state["health.groups.all groups.group.bulk_open"] = True
    at.run()
    at.selectbox(key="health.groups.all groups.group.bulk_head").set_value("usage").run()
    at.selectbox(key="health.groups.all groups.group.bulk_value").set_value("Sports").run()
    at.checkbox(key="health.groups.all groups.group.bulk_confirm").check().run()
    at.button(key="health.groups.all groups.group.bulk_apply").click().run()
    assert not at.exception, at.exception
    store = LabelStore(workspace=workspace.workspace_dir())
    state = {item.product_id: values["usage"] for item, values in store.dataset_state(catalogue.root)}
    assert set(group) == set(state) | set(catalogue.frame.loc[catalogue.frame["usage"] == "Sports", "id"]) & set(group)
    assert set(state.values()) == {"Sports"}


@pytest.fixture(scope="module")
def run_health_page(in_tiny_run):
    """The shared tiny run, with its demo's health under the run's own model (in the run's workspace,
    removed with the module by in_tiny_run)."""
    record, demo, _ = in_tiny_run
    catalogue = load_catalogue(demo)
    return record, catalogue, run_health.compute(catalogue, record)


def test_a_runs_model_colours_the_map_by_its_split_and_its_right_and_wrong(run_health_page):
    record, catalogue, health = run_health_page
    assert health.info["model"] == f"run-{record.id}-best"
    at = page()
    at.selectbox(key="health.model").select(record.id).run()
    assert not at.exception, at.exception
    names = [trace["name"].split(" (")[0] for trace in chart_spec(at)["data"]]
    assert names == ["train", "val", "not used"]  # the run's max_samples leaves rows out
    at.selectbox(key="health.colour").select("right or wrong").run()
    assert not at.exception, at.exception
    traces = chart_spec(at)["data"]
    evaluated = {trace["name"].split(" (")[0]: len(np.atleast_1d(plotly_array(trace["customdata"])))
                 for trace in traces}
    split, name = run_health.health_split(catalogue, record)
    assert name == f"the split of run {record.id}"
    assert evaluated["right"] + evaluated["wrong"] == (split == "val").sum()


@pytest.mark.slow
def test_photos_that_cannot_be_read_are_named_on_the_page_with_the_reason(tmp_path, monkeypatch):
    folder, broken = with_unreadable_photos(tmp_path / "data", seed=3)
    point_at_workspace(monkeypatch, tmp_path / "ws", folder)
    run_health.compute(load_catalogue(folder), None)
    at = page()
    assert any(warning.value.startswith("2 photos could not be read: they have no embedding") for warning in at.warning)
    [table] = [frame.value for frame in at.dataframe if list(frame.value.columns) == ["id", "why"]]
    assert sorted(table["id"]) == sorted(broken)
    assert all(f"{product_id}.jpg" in why for product_id, why in zip(table["id"], table["why"]))
