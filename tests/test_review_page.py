"""AppTest of the Review page on one finished tiny run: upload, correct, undo, correct again, export;
the decisions outlive the session; bad uploads are refused one by one; a catalogue queue works."""

from __future__ import annotations

import dataclasses
import re
import time

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import workspace
from core.access.roles import DATA_ROOTS_ENV, Actor, Role
from core.data.catalogue import load_catalogue
from core.labels.queues import HISTORY_TABLE_COLUMNS, label_issue_ids, load_photo_folder
from core.labels.sources import set_audit_share
from core.labels.store import LabelStore
from core.labels.tables import EXTERNAL_ID_BASE, SavedQueue
from core.trust.abstention import THRESHOLDS, Selection
from core.trust.layer import Calibration
from core.trust.sources import NEW_SOURCE_AUDIT_SHARE, audit_draw
from core.trust.taxonomy import Taxonomy
from core.trust.typicality import UNLIKE_CALIBRATION
from dashboard.queue_state import TAXONOMY_SOURCE
from dashboard.text import plain
from training.checkpoints import add_to_checkpoints, load_predictor, stored_calibration
from training.evaluate import label_issues
from training.launcher import evaluation_job
from training.processes import log_tail
from training.run_folder import RunFolder

from conftest import ANN, EXTERNAL_DIR, REPO, point_at_workspace, shown, tiny_run_workspace

HOME = str(REPO / "dashboard" / "Home.py")
REVIEW = "../pages/review.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run on a small demo catalogue, in a workspace of its own (not conftest's shared
    run: these tests write labels into its database and an evaluation of every row into its folder)."""
    with tiny_run_workspace(tmp_path_factory, seed=4) as (record, demo, _):
        yield record, load_catalogue(demo)


@pytest.fixture(autouse=True)
def allowed_tmp_path(tmp_path, monkeypatch):
    """Each test's tmp_path is an allowed folder (exports, photo folders): local mode, in the roots."""
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tmp_path))


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
    seconds = LabelStore(workspace=workspace.workspace_dir()).history(item)["seconds"]
    assert seconds.notna().all() and (seconds > 0).all()  # the effort, measured on the server
    assert progress_text(at) == "**1 of 2 reviewed**"
    at.button(key="review_undo").click().run()
    assert current_item(at) == item
    assert LabelStore(workspace=workspace.workspace_dir()).current([item])[item]["status"] is None
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
    assert LabelStore(workspace=workspace.workspace_dir()).current([item])[item]["baseColour"] == right


def test_bad_uploads_are_refused_one_by_one(run, tmp_path):
    _, catalogue = run
    good = photo(catalogue, int(catalogue.frame["id"].iloc[5]))
    at = review_page()
    at.file_uploader(key="review.uploads").set_value([
        ("notes.jpg", b"this is not an image", "image/jpeg"), ("empty.png", b"", "image/png"), good,
        ("../../escape.jpg", good[1], "image/jpeg"),
    ]).run()
    assert not at.exception, at.exception
    errors = [re.sub(r"\\(.)", r"\1", e.value) for e in at.error]  # shown as plain text: markdown escaped
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
    items = LabelStore(workspace=workspace.workspace_dir()).items(queue)
    assert all(item.kind == "catalogue" for item in items)
    dropped = items[0]
    at.button(key="review_not_product").click().run()
    assert current_item(at) == queue[1]
    at.selectbox(key="review.filter").set_value("not a product").run()
    assert current_item(at) in queue and at.session_state["review.queue"] == queue
    status = LabelStore(workspace=workspace.workspace_dir()).current([dropped.item])[dropped.item]["status"]
    assert status == "not_product"


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
    history = LabelStore(workspace=workspace.workspace_dir()).history(item)
    assert history.loc[history["field"] == "baseColour", ["new", "kind"]].values.tolist() == [["Teal", "new_value"]]
    assert "Teal" in LabelStore(workspace=workspace.workspace_dir()).values(catalogue.root)["baseColour"]


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
    assert [item.product_id for item in LabelStore(workspace=workspace.workspace_dir()).items(queue)] == expected


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
    every_row = f"run {record.id}: every row ({job.name})"
    assert every_row in evaluations.options
    evaluations.set_value(every_row).run()
    at.number_input(key="review.limit").set_value(len(catalogue.frame)).run()
    at.button(key="review.load_confident").click().run()
    queued = LabelStore(workspace=workspace.workspace_dir()).items(at.session_state["review.queue"])
    queue = [item.product_id for item in queued]
    assert sorted(queue) == sorted(catalogue.frame["id"].tolist())  # every row, not only the validation split


@pytest.fixture
def certified(run):
    """The run's calibration with gender and masterCategory certified at any confidence (no error
    at any threshold on plenty of rows): the tiny run's own has too few rows to certify any head.
    Without its typicality gate, which a dozen reference rows make strict: bulk acceptance is what
    is tested here (the gate's refusal, in test_a_photo_unlike_the_calibration_photos_is_said_so)."""
    record, _ = run
    folder = RunFolder(record.folder)
    original = Calibration.load(folder.calibration)
    sure = Selection(tuple([1000] * len(THRESHOLDS)), tuple([0] * len(THRESHOLDS)), 1000)
    heads = ("gender", "masterCategory")
    add_to_checkpoints(folder, {"calibration": stored_calibration(dataclasses.replace(
        original, selections={**original.selections, **dict.fromkeys(heads, sure)}, typicality=None))})
    yield heads
    add_to_checkpoints(folder, {"calibration": stored_calibration(original)})


def test_accept_the_sure_heads_of_new_photos_in_bulk(run, certified):
    record, catalogue = run
    ids = [int(i) for i in catalogue.frame["id"].iloc[-3:]]  # photos no other test here uploads
    at = review_page()
    at.file_uploader(key="review.uploads").set_value([photo(catalogue, i) for i in ids]).run()
    queue = at.session_state["review.queue"]
    assert len(queue) == 3 and progress_text(at) == "**0 of 3 reviewed**"
    # What the run's model proposes and accepts for these photos, straight from the predictor.
    predictions = load_predictor(record.folder).predict_files([catalogue.image_path(i) for i in ids], top_k=1)
    accepted = [{head: label for head, label in result.accepted.items() if label is not None} for result in predictions]
    assert all(set(heads) <= set(certified) for heads in accepted)  # only the certified heads are ever accepted
    taken = sum(map(len, accepted))
    assert taken > 0, "no certified head reached its threshold: nothing to accept"
    open_heads = 3 * len(record.config["heads"])

    assert not at.get("segmented_control") or "review.bulk_target" not in [c.key for c in at.get("segmented_control")]
    at.session_state["review.bulk"] = True  # open the section (closed, it costs nothing)
    at.run()
    at.button(key="review.bulk_check").click().run()
    assert not at.exception, at.exception
    # The source's own reviewed photos would certify its heads: how many more, for the nearest two.
    assert any(re.search(r"\d+ more reviewed photos of uploads certify \w+ at 2", c.value) for c in at.caption)
    # Until then a person decides every photo of it, and the page says why.
    assert any(f"**0 of {open_heads}** open head decisions" in text for text in texts(at.markdown))
    assert any("3 of the new photos come from sources not yet certified" in c.value for c in at.caption)
    assert at.button(key="review.bulk_accept").disabled

    # An admin opens the source to the run's rule, with 20 % of its photos audited: a photo drawn for an
    # audit (by a hash of its item) is left for a person, unannounced.
    set_audit_share(LabelStore(workspace=workspace.workspace_dir()), catalogue.root, "uploads", 0.2, ANN)
    audited = audit_draw(queue, 0.2)
    kept = [{} if drawn else heads for heads, drawn in zip(accepted, audited)]
    at.run()
    assert any(f"**{taken} of {open_heads}** open head decisions on 3 new photos need no person at ≤ 2% error; "
               f"**{open_heads - taken}** are left for you" in text for text in texts(at.markdown)), texts(at.markdown)
    at.button(key="review.bulk_accept").click().run()
    assert not at.exception, at.exception
    taken = sum(map(len, kept))
    assert texts(at.success)[0].startswith(f"Accepted {taken} head decisions at ≤ 2% error: 0 photos complete")
    assert progress_text(at) == "**0 of 3 reviewed**"  # the other heads still wait for a person
    current = LabelStore(workspace=workspace.workspace_dir()).current(queue)
    for item, heads in zip(queue, kept):
        assert {head: current[item][head] for head in record.config["heads"] if current[item][head]} == heads
        assert current[item]["status"] is None
    at.run()
    assert not at.success  # the message shows once

    at.button(key="review.bulk_undo").click().run()
    assert not at.exception, at.exception
    assert texts(at.success) == [f"Undid the bulk acceptance: {sum(map(bool, kept))} photos are as they were."]
    current = LabelStore(workspace=workspace.workspace_dir()).current(queue)
    assert all(value is None for values in current.values() for value in values.values())
    assert "review.bulk_undo" not in [button.key for button in at.button]  # nothing of it left to undo


def test_save_on_a_catalogue_row_keeps_its_labels_and_a_proposal_is_one_key_away(run):
    """A hurried reviewer cannot make the catalogue worse: the boxes show the catalogue's values,
    Save & next without an edit changes no label; the model's other opinion is a button beside."""
    record, catalogue = run
    at = review_page()
    at.segmented_control(key="review.source").set_value("Catalogue: least confident first").run()
    at.number_input(key="review.limit").set_value(8).run()
    at.button(key="review.load_confident").click().run()
    queue = at.session_state["review.queue"]
    store = LabelStore(workspace=workspace.workspace_dir())
    items = store.items(queue)
    first = items[0]
    for head in record.config["heads"]:
        assert at.selectbox(key=f"review.{first.item}.{head}").value == first.baseline[head]
    at.button(key="review_save").click().run()
    assert not at.exception, at.exception
    after = store.current([first.item])[first.item]
    assert ({head: after[head] for head in record.config["heads"]}
            == {h: first.baseline[h] for h in record.config["heads"]})
    assert after["status"] == "reviewed"
    history = store.history(first.item)
    assert set(history[history["action"] == history["action"].iloc[-1]]["kind"]) == {"accept", "review"}  # kept

    # The first row (after it) where the model disagrees on some head: take its proposal with the button.
    for item in items[1:]:
        takes = [button for button in at.button if (button.key or "").startswith("review_take_")]
        if takes:
            break
        at.button(key="review_next").click().run()
    else:
        pytest.skip("the tiny model agrees with the catalogue on every head of these rows")
    item = store.items([current_item(at)])[0]
    take = takes[0]
    head = list(record.config["heads"])[int(take.key.rsplit("_", 1)[1]) - 1]
    proposal = take.label.removeprefix("Take ").split(" (")[0]
    assert at.selectbox(key=f"review.{item.item}.{head}").value == item.baseline[head] != proposal
    take.click().run()
    assert at.selectbox(key=f"review.{item.item}.{head}").value == proposal
    at.button(key="review_save").click().run()
    assert store.current([item.item])[item.item][head] == proposal

def test_rows_that_break_the_taxonomy_are_a_label_issue_queue(run):
    _, catalogue = run
    broken = Taxonomy.fit(catalogue.frame).violations(catalogue.frame)
    expected = broken.loc[(broken["head"] == "usage") | (broken["parent_head"] == "usage"), "id"].drop_duplicates()
    assert len(expected), "the demo catalogue breaks no usage rule: nothing to compare"
    at = review_page()
    at.segmented_control(key="review.source").set_value("Catalogue: label issues").run()
    at.selectbox(key="review.issues_source").set_value(TAXONOMY_SOURCE).run()
    at.multiselect(key="review.issue_heads").set_value(["usage"]).run()
    at.button(key="review.load_issues").click().run()
    assert not at.exception, at.exception
    queued = LabelStore(workspace=workspace.workspace_dir()).items(at.session_state["review.queue"])
    assert [item.product_id for item in queued] == expected.tolist()


def test_a_folder_with_no_readable_photo_leaves_the_queue_and_says_so(run, tmp_path):
    _, catalogue = run
    at = review_page()
    at.file_uploader(key="review.uploads").set_value([photo(catalogue, int(catalogue.frame["id"].iloc[9]))]).run()
    queue = at.session_state["review.queue"]
    at.button(key="review_save").click().run()
    bad = tmp_path / "arrivals"
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"not a photo")
    at.text_input(key="review.folder").set_value(str(bad))
    next(button for button in at.button if button.label == "Load folder").click().run()
    assert not at.exception, at.exception
    assert at.session_state["review.queue"] == queue  # the queue under review stays
    shown = [re.sub(r"\\(.)", r"\1", w.value) for w in at.warning]
    assert f"No photo of {bad} could be read: the queue is as it was." in shown
    assert any("broken.jpg" in re.sub(r"\\(.)", r"\1", e.value) for e in at.error)
    at.button(key="review_next").click().run()  # a later action: the folder's messages are gone
    assert not [w for w in at.warning if "could be read" in w.value] and not at.error
    # Its history reads as a person reads it: seconds, words, the model's proposal with its p.
    at.run()
    table = at.dataframe[-1].value
    assert list(table.columns) == HISTORY_TABLE_COLUMNS
    assert table["when (UTC)"].str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d").all()
    assert set(table["what"]) <= {"kept or took the proposal", "corrected", "reviewed"}


def test_the_reviewer_name_survives_a_reload(run):
    at = review_page(reviewer="dee")
    assert at.query_params["review.reviewer"] == "dee"
    reloaded = AppTest.from_file(HOME, default_timeout=90)
    reloaded.query_params["review.reviewer"] = "dee"
    reloaded.run()
    reloaded.switch_page(REVIEW).run()
    assert reloaded.text_input(key="review.reviewer").value == "dee"
    assert not reloaded.sidebar.warning
    reloaded.text_input(key="review.reviewer").set_value("").run()  # emptied (the browser's undo does it too)
    [warning] = [w.value for w in reloaded.sidebar.warning]
    assert warning.startswith("Your name is empty: decisions are recorded as ")


def test_a_photo_unlike_the_calibration_photos_is_said_so(run):
    """A street photo under a model calibrated on generated studio shots: the typicality gate refuses
    it, so the page says why nothing of it is accepted, and the predictor accepts none of its heads."""
    record, catalogue = run
    if not EXTERNAL_DIR.is_dir():
        pytest.skip(f"the external photos are not present at {EXTERNAL_DIR}")
    street = sorted((EXTERNAL_DIR / "shoes").glob("*.jpg"))[0]
    studio = int(catalogue.frame["id"].iloc[0])  # one of the run's own photos
    (result,) = load_predictor(record.folder).predict_files([street])
    assert result.typicality is not None and result.typicality[1] is False
    assert not any(result.accepted.values())
    at = review_page()
    at.file_uploader(key="review.uploads").set_value([
        ("street.jpg", street.read_bytes(), "image/jpeg"), photo(catalogue, studio)]).run()
    captions = shown(" ".join(texts(at.caption)))
    assert f"street.jpg · unreviewed · :material/help: **{UNLIKE_CALIBRATION}**" in captions
    assert not at.exception, at.exception


def test_the_trust_view_shows_each_source_and_an_admin_sets_its_audit_share_and_recalibrates_it(run, tmp_path):
    record, catalogue = run
    store = LabelStore(workspace=workspace.workspace_dir())
    folder = tmp_path / "lookbook"
    folder.mkdir()
    for product_id in catalogue.frame["id"].iloc[3:6]:
        (folder / f"look-{product_id}.jpg").write_bytes(catalogue.image_path(int(product_id)).read_bytes() + b"\0")
    items, _ = load_photo_folder(store, catalogue.root, str(folder), ANN)
    for item in items:  # reviewed with the run's proposal shown, and kept
        store.review(item.item, {"gender": "Men"}, ANN, run_id=record.id, predicted={"gender": ("Men", 0.97)})
    at = AppTest.from_file(HOME, default_timeout=90)
    at.run()
    at.switch_page("../pages/evaluate.py").run()
    at.session_state["evaluate.section"] = "Trust"
    at.run()
    assert not at.exception, at.exception
    table = source_frame(at)
    lookbook = table[table["source"] == "lookbook"].set_index("head")
    assert lookbook.loc["gender", "decisions"] == 3 and lookbook.loc["gender", "photos"] == 3
    assert lookbook.loc["gender", "more_needed"] > 0 and lookbook.loc["gender", "audit_share"] == NEW_SOURCE_AUDIT_SHARE

    at.selectbox(key="trust.source").set_value("lookbook").run()
    assert at.number_input(key="trust.audit_share").value == 100.0  # the share in force, not a fixed default
    at.number_input(key="trust.audit_share").set_value(20.0)
    next(button for button in at.button if button.label == "Set the audit share").click().run()
    assert not at.exception, at.exception
    assert texts(at.success) == [plain("Audit share of lookbook set to 20 %.")]  # a typed name: plain text
    table = source_frame(at)
    assert set(table.loc[table["source"] == "lookbook", "audit_share"]) == {0.2}
    assert at.selectbox(key="trust.source").value == "lookbook" and at.number_input(key="trust.audit_share").value == 20
    next(button for button in at.button if button.label == "Recalibrate from its reviewed photos").click().run()
    assert not at.exception, at.exception
    assert texts(at.success)[0].startswith("lookbook recalibrated on 3 reviewed photos")
    table = source_frame(at)
    gender = table[(table["source"] == "lookbook") & (table["head"] == "gender")].iloc[0]
    assert gender["rule"] == "not certified on this source's reviewed photos: a person decides"


def source_frame(at: AppTest) -> pd.DataFrame:
    """The Trust view's table per source and head."""
    return next(frame.value for frame in at.dataframe if "source" in frame.value.columns)


def test_uploads_take_the_source_typed_and_a_bad_name_is_refused_with_the_default_kept(run):
    _, catalogue = run
    first, second = (int(i) for i in catalogue.frame["id"].iloc[6:8])
    at = review_page()
    at.text_input(key="review.upload_source").set_value("Spring drop 2027").run()
    at.file_uploader(key="review.uploads").set_value([photo(catalogue, first)]).run()
    assert not at.exception, at.exception
    store = LabelStore(workspace=workspace.workspace_dir())
    assert [item.source for item in store.items(at.session_state["review.queue"])] == ["Spring drop 2027"]
    at.text_input(key="review.upload_source").set_value("=cmd|' /C calc'!A0").run()
    at.file_uploader(key="review.uploads").set_value([photo(catalogue, first), photo(catalogue, second)]).run()
    assert not at.exception, at.exception
    assert any("Source of the uploads" in text and "uploads" in text for text in texts(at.error))
    assert [item.source for item in store.items(at.session_state["review.queue"])] == ["Spring drop 2027", "uploads"]


def reloaded_review(reviewer: str) -> AppTest:
    """The Review page as a reload (or another device) opens it: a new session, the name in the address."""
    at = AppTest.from_file(HOME, default_timeout=90)
    at.query_params["review.reviewer"] = reviewer
    at.run()
    at.switch_page(REVIEW).run()
    assert not at.exception, at.exception
    return at


def test_the_queue_its_view_and_position_come_back_on_a_reload(run):
    record, catalogue = run
    at = review_page(reviewer="eve")
    at.segmented_control(key="review.source").set_value("Catalogue: least confident first").run()
    at.number_input(key="review.limit").set_value(4).run()
    at.button(key="review.load_confident").click().run()
    queue = at.session_state["review.queue"]
    at.selectbox(key="review.filter").set_value("unreviewed").run()
    first = current_item(at)
    at.button(key="review_next").click().run()
    where = current_item(at)
    assert where != first and where in queue and not at.exception

    reloaded = reloaded_review("eve")
    assert reloaded.session_state["review.queue"] == queue and current_item(reloaded) == where
    assert reloaded.selectbox(key="review.filter").value == "unreviewed"
    assert reloaded.expander[0].label == "Queue: " + plain(f"the least confident rows of run {record.id}: "
                                                "its validation split")
    assert reloaded.selectbox(key=f"review.{where}.gender")  # the item is on screen


def test_photos_uploaded_in_an_earlier_session_can_be_queued_again(run):
    _, catalogue = run
    at = review_page(reviewer="gil")
    at.file_uploader(key="review.uploads").set_value([photo(catalogue, int(catalogue.frame["id"].iloc[9]))]).run()
    [uploaded] = at.session_state["review.queue"]
    at.segmented_control(key="review.source").set_value("Catalogue: least confident first").run()
    at.button(key="review.load_confident").click().run()  # another queue replaces it
    assert uploaded not in at.session_state["review.queue"]

    later = reloaded_review("gil")
    later.segmented_control(key="review.source").set_value("Photos (upload or folder)").run()
    later.button(key="review.queue_added").click().run()
    photos = LabelStore(workspace=workspace.workspace_dir()).dataset_items(catalogue.root, "external")
    assert later.session_state["review.queue"] == [item.item for item in photos]
    assert uploaded in later.session_state["review.queue"] and not later.exception, later.exception


def test_without_a_model_a_data_health_list_is_reviewed_from_the_catalogue_values(tmp_path, monkeypatch):
    """No finished run: a queue Data health made (here as the store keeps it for the person) opens
    on the catalogue's values, and a decision is saved without a model."""
    from core.data.demo import generate_demo

    demo = generate_demo(tmp_path / "demo", n=50, seed=6)
    point_at_workspace(monkeypatch, tmp_path / "ws", demo)
    catalogue = load_catalogue(demo)
    store = LabelStore(workspace=workspace.workspace_dir())
    hal = Actor("hal", Role.ADMIN)
    items = store.add_catalogue_items(catalogue, catalogue.frame["id"].tolist()[:3], hal)
    store.keep_queue(demo, SavedQueue("Data health: outliers", tuple(item.item for item in items)), hal)

    at = reloaded_review("hal")
    assert "No finished run yet" in " ".join(texts(at.caption))
    first = items[0]
    assert current_item(at) == first.item
    for head in ("articleType", "baseColour"):
        assert at.selectbox(key=f"review.{first.item}.{head}").value == first.baseline[head]
    at.button(key="review_save").click().run()
    assert not at.exception, at.exception
    assert current_item(at) == items[1].item
    history = store.history(first.item)
    assert store.current([first.item])[first.item]["status"] == "reviewed" and history["run_id"].isna().all()


def test_the_model_defaults_to_the_best_run_on_the_dataset_and_every_runs_predictions_stay_listed(run, tmp_path):
    """A newer run that scores worse is not the default; chosen by hand, the older run's predictions
    are still offered for a least-confident queue."""
    import os
    import shutil

    from training.registry import RunRegistry

    record, catalogue = run
    registry = RunRegistry()
    folder = tmp_path / "worse-run"
    shutil.copytree(record.folder, folder, ignore=shutil.ignore_patterns("evaluation*"))
    worse = registry.create(record.config, "tester", folder=folder)
    registry.mark_running(worse.id, os.getpid(), "cpu", "random")
    score = record.metrics["mean_macro_f1"]
    registry.mark_finished(worse.id, 0.0, "val/mean_macro_f1", {**record.metrics, "mean_macro_f1": score / 2}, {})

    at = review_page()
    assert at.selectbox(key="review.run").value == record.id
    assert (f"Proposals from run {record.id}: the best run on this dataset by mean macro-F1 on the dataset's fixed "
            f"test part (a run without one: on its validation rows, ranked after), {score:.3f} on its validation "
            "rows.") in texts(at.sidebar.caption)  # a catalogue this small has no test part
    at.selectbox(key="review.run").set_value(worse.id).run()
    at.segmented_control(key="review.source").set_value("Catalogue: least confident first").run()
    assert f"run {record.id}: its validation split" in at.selectbox(key="review.evaluation").options
    assert f"the best on this dataset is {record.id}" in " ".join(texts(at.sidebar.caption))
    assert not at.exception, at.exception
