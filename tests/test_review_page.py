"""AppTest of the Review page on one finished tiny run: upload, correct, undo, correct again, export;
the decisions outlive the session; bad uploads are refused one by one; a catalogue queue works."""

from __future__ import annotations

import math
import time

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import workspace
from core.data.catalogue import load_catalogue
from core.data.schema import OTHER_CLASS
from core.labelstore import EXTERNAL_ID_BASE, LabelStore
from core.review import label_issue_ids
from training.checkpoints import load_predictor
from training.evaluate import label_issues
from training.launcher import evaluation_job
from training.processes import log_tail

from conftest import REPO, tiny_run_workspace

HOME = str(REPO / "dashboard" / "Home.py")
REVIEW = "../pages/review.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run on a small demo catalogue, in a workspace of its own."""
    with tiny_run_workspace(tmp_path_factory, seed=4) as (record, demo, _):
        yield record, load_catalogue(demo)


def review_page(reviewer: str = "ana") -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=90)
    at.run()
    at.switch_page(REVIEW).run()
    at.text_input(key="review.reviewer").set_value(reviewer).run()
    assert not at.exception, at.exception
    return at


def photo(catalogue, product_id: int) -> tuple[str, bytes, str]:
    return f"{product_id}.jpg", catalogue.image_path(product_id).read_bytes(), "image/jpeg"


def texts(elements) -> list[str]:
    return [element.value for element in elements]


def current_item(at: AppTest) -> int:
    return at.session_state["review.current"]


def progress_text(at: AppTest) -> str:
    return at.get("progress")[0].proto.text


def other_value(at: AppTest, item: int, head: str, besides: tuple[str, ...] = ()) -> str:
    """An option of the head's choice other than the one shown and `besides`."""
    box = at.selectbox(key=f"review.{item}.{head}")
    return next(option for option in box.options if option != box.value and option not in besides)


def test_export_names_the_photos_it_could_not_write(run, tmp_path):
    _, catalogue = run
    broken = catalogue.image_path(int(catalogue.frame["id"].iloc[-1]))
    kept = broken.read_bytes()
    broken.write_bytes(b"")
    try:
        at = review_page()
        at.session_state["review.section"] = "Export"
        at.run()
        at.text_input(key="review.export_to").set_value(str(tmp_path / "export"))
        next(button for button in at.button if button.label == "Export").click().run()
    finally:
        broken.write_bytes(kept)
    assert not at.exception, at.exception
    assert at.success and texts(at.warning) == [
        "1 photo(s) could not be exported: their rows are in styles.csv without a photo (why, below)."]
    assert texts(at.text) == [f"photo of {broken.stem} not written: {broken.name}: the file is empty (0 bytes)"]


def test_upload_correct_undo_correct_export_and_persist(run, tmp_path):
    record, catalogue = run
    first, second = (int(i) for i in catalogue.frame["id"].iloc[:2])
    at = review_page()
    at.file_uploader(key="review.uploads").set_value([photo(catalogue, first), photo(catalogue, second)]).run()
    assert not at.exception, at.exception
    queue = at.session_state["review.queue"]
    assert len(queue) == 2 and current_item(at) == queue[0]
    item = queue[0]
    assert progress_text(at) == "**0 of 2 reviewed**"

    wrong = other_value(at, item, "baseColour")
    at.selectbox(key=f"review.{item}.baseColour").set_value(wrong).run()
    at.button(key="review_save").click().run()
    assert current_item(at) == queue[1]  # auto-advance
    assert progress_text(at) == "**1 of 2 reviewed**"
    at.button(key="review_undo").click().run()
    assert current_item(at) == item
    assert LabelStore().current([item])[item]["status"] is None
    assert at.selectbox(key=f"review.{item}.baseColour").value != wrong  # back to the model's proposal
    right = other_value(at, item, "baseColour", besides=(wrong,))
    at.selectbox(key=f"review.{item}.baseColour").set_value(right).run()
    at.button(key="review_save").click().run()
    assert not at.exception, at.exception

    at.session_state["review.section"] = "Export"
    at.run()
    out = tmp_path / "export"
    at.text_input(key="review.export_to").set_value(str(out))
    next(button for button in at.button if button.label == "Export").click().run()
    assert not at.exception, at.exception
    assert at.success, [e.value for e in at.error]

    next(button for button in at.button if button.label == "Open the exported dataset").click().run()
    assert at.session_state["dataset_dir"] == str(out) and not at.exception

    exported = load_catalogue(out).frame
    assert len(exported) == len(catalogue.frame) + 1  # the reviewed upload; the unreviewed one stays out
    added = exported[exported["id"] >= EXTERNAL_ID_BASE]
    assert added["baseColour"].tolist() == [right]
    history = pd.read_csv(out / "corrections.csv")
    colour = history[history["field"] == "baseColour"]
    assert colour["kind"].tolist()[1] == "undo" and len(colour) == 3
    assert colour["new"].tolist()[0] == wrong and colour["new"].tolist()[2] == right
    assert colour["old"].isna().tolist() == [True, False, True]
    assert history["action"].nunique() == 3 and set(history["reviewer"]) == {"ana"}

    # A new session of the app: the same photos are the same items, with their decisions.
    fresh = review_page(reviewer="ben")
    fresh.file_uploader(key="review.uploads").set_value([photo(catalogue, first), photo(catalogue, second)]).run()
    assert fresh.session_state["review.queue"] == queue
    assert fresh.selectbox(key=f"review.{item}.baseColour").value == right
    assert LabelStore().current([item])[item]["baseColour"] == right


def test_bad_uploads_are_refused_one_by_one(run, tmp_path):
    _, catalogue = run
    good = photo(catalogue, int(catalogue.frame["id"].iloc[5]))
    at = review_page()
    at.file_uploader(key="review.uploads").set_value([
        ("notes.jpg", b"this is not an image", "image/jpeg"), ("empty.png", b"", "image/png"), good,
        ("../../escape.jpg", good[1], "image/jpeg"),
    ]).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("notes.jpg" in e and "not an image" in e for e in errors), errors
    assert any("empty.png" in e and "empty" in e for e in errors), errors
    queue = at.session_state["review.queue"]
    assert len(queue) == 1  # the good photo and its copy under a hostile name are the same bytes: one item
    uploads = workspace.workspace_dir() / "uploads"
    assert all(path.parent == uploads for path in uploads.rglob("*") if path.is_file())
    assert not (workspace.workspace_dir().parent / "escape.jpg").exists()


def test_catalogue_queue_least_confident_then_not_a_product(run, tmp_path):
    record, catalogue = run
    at = review_page()
    at.segmented_control(key="review.source").set_value("Catalogue: least confident first").run()
    at.number_input(key="review.limit").set_value(5).run()
    at.button(key="review.load_confident").click().run()
    assert not at.exception, at.exception
    queue = at.session_state["review.queue"]
    assert len(queue) == 5
    items = LabelStore().items(queue)
    assert all(item.kind == "catalogue" for item in items)
    dropped = items[0]
    at.button(key="review_not_product").click().run()
    assert current_item(at) == queue[1]
    at.selectbox(key="review.filter").set_value("not a product").run()
    assert current_item(at) in queue and at.session_state["review.queue"] == queue
    assert LabelStore().current([dropped.item])[dropped.item]["status"] == "not_product"


def test_a_new_value_needs_the_confirmation_then_joins_the_vocabulary(run):
    _, catalogue = run
    at = review_page()
    at.file_uploader(key="review.uploads").set_value([photo(catalogue, int(catalogue.frame["id"].iloc[7]))]).run()
    [item] = at.session_state["review.queue"]
    at.selectbox(key=f"review.new_head.{item}").set_value("baseColour")
    at.text_input(key=f"review.new_text.{item}").set_value("Teal")
    submit = next(button for button in at.button if button.label == "Use this value")
    submit.click().run()
    assert any("tick the confirmation" in e.value for e in at.error)
    assert "Teal" not in at.selectbox(key=f"review.{item}.baseColour").options

    at.checkbox(key=f"review.new_confirm.{item}").check()
    next(button for button in at.button if button.label == "Use this value").click().run()
    assert at.selectbox(key=f"review.{item}.baseColour").value == "Teal"
    at.button(key="review_save").click().run()
    assert not at.exception, at.exception
    history = LabelStore().history(item)
    assert history.loc[history["field"] == "baseColour", ["new", "kind"]].values.tolist() == [["Teal", "new_value"]]
    assert "Teal" in LabelStore().values(catalogue.root)["baseColour"]


def test_label_issue_queue_of_one_head_follows_the_ranking(run):
    record, catalogue = run
    at = review_page()
    at.segmented_control(key="review.source").set_value("Catalogue: label issues").run()
    at.multiselect(key="review.issue_heads").set_value(["baseColour"]).run()
    at.button(key="review.load_issues").click().run()
    assert not at.exception, at.exception
    expected = label_issue_ids(label_issues(record.folder), 100, heads=["baseColour"])
    assert expected, "the tiny run flags no baseColour issue: nothing to compare"
    queue = at.session_state.get("review.queue") or []
    assert [item.product_id for item in LabelStore().items(queue)] == expected


@pytest.mark.slow
def test_predict_every_row_in_the_background_then_queue_from_it(run):
    record, catalogue = run
    at = review_page()
    at.segmented_control(key="review.source").set_value("Catalogue: least confident first").run()
    at.button(key="review.predict_all").click().run()
    assert not at.exception, at.exception
    job = evaluation_job(record, catalogue.root)
    deadline = time.monotonic() + 180
    while evaluation_job(record, catalogue.root).running:
        assert time.monotonic() < deadline, "the evaluation did not end within 180 s"
        time.sleep(0.5)
    assert job.finished_since_launch(record.folder), log_tail(job.log)
    at.run()
    evaluations = at.selectbox(key="review.evaluation")
    assert f"every row ({job.name})" in evaluations.options
    evaluations.set_value(job.name).run()
    at.number_input(key="review.limit").set_value(len(catalogue.frame)).run()
    at.button(key="review.load_confident").click().run()
    queue = [item.product_id for item in LabelStore().items(at.session_state["review.queue"])]
    assert sorted(queue) == sorted(catalogue.frame["id"].tolist())  # every row, not only the validation split


def test_accept_the_sure_new_photos_in_bulk(run):
    record, catalogue = run
    ids = [int(i) for i in catalogue.frame["id"].iloc[-3:]]  # photos no other test here uploads
    at = review_page()
    at.file_uploader(key="review.uploads").set_value([photo(catalogue, i) for i in ids]).run()
    queue = at.session_state["review.queue"]
    assert len(queue) == 3 and progress_text(at) == "**0 of 3 reviewed**"
    # What the run's model proposes for these photos, straight from the predictor; the threshold
    # takes the surest photo (slider steps are 0.01) and whichever others reach it.
    predictions = load_predictor(record.folder).predict_files([catalogue.image_path(i) for i in ids], top_k=1)
    least = [min(guesses[0].p for guesses in result.predictions.values()) for result in predictions]
    threshold = math.floor(max(least) * 100) / 100
    sure = [item for item, p in zip(queue, least) if p >= threshold]
    assert OTHER_CLASS not in {guesses[0].label for result in predictions for guesses in result.predictions.values()}

    assert not at.get("slider")  # the section stays closed (and costs nothing) until opened
    at.session_state["review.bulk"] = True  # open it
    at.run()
    at.button(key="review.bulk_check").click().run()
    assert not at.exception, at.exception
    at.slider(key="review.bulk_threshold").set_value(threshold).run()
    assert f"**{len(sure)} of 3** unreviewed new photos reach {threshold:.2f} in every head." in texts(at.markdown)
    at.button(key="review.bulk_accept").click().run()
    assert not at.exception, at.exception
    assert texts(at.success) == [f"Accepted {len(sure)} new photos sure to at least {threshold:.2f} in every head; "
                                 f"{3 - len(sure)} left for you."]
    assert progress_text(at) == f"**{len(sure)} of 3 reviewed**"
    current = LabelStore().current(queue)
    for item, result in zip(queue, predictions):
        if item in sure:
            assert current[item]["status"] == "reviewed"
            assert {head: current[item][head] for head in result.predictions} == {
                head: guesses[0].label for head, guesses in result.predictions.items()}
        else:
            assert current[item]["status"] is None
    at.run()
    assert not at.success  # the message shows once

    at.button(key="review.bulk_undo").click().run()
    assert not at.exception, at.exception
    assert texts(at.success) == [f"Undid the bulk acceptance: {len(sure)} photos are unreviewed again."]
    assert progress_text(at) == "**0 of 3 reviewed**"
    assert [status["status"] for status in LabelStore().current(queue).values()] == [None, None, None]
    assert "review.bulk_undo" not in [button.key for button in at.button]  # nothing of it left to undo
