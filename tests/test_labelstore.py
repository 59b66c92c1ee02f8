"""core.labels.store: review, correct, mark, undo and their history, external images, concurrent writers.

Every store test runs on SQLite (a tmp workspace) and on PostgreSQL when FASHION_TAGGER_TEST_PG_URL
names one (.ci/run starts one; the tests drop the store's tables first, so reruns start clean).
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from test_catalogue import HEADER, JEANS, SHIRT, WATCH, lines, write_dataset
from test_images import png_of_zeros

from core.access import database
from core.access.database import DB_FILE, DatabaseBusy, db_engine
from core.access.roles import AccessDenied, Actor, FolderRefused, Role
from core.data import HEADS
from core.data.catalogue import load_catalogue
from core.images.reading import ImageRejected
from core.labels import tables
from core.labels.corrections import CORRECTIONS_FILE, export_dataset
from core.labels.store import HISTORY_COLUMNS, LabelStore, UndoConflict
from core.labels.tables import EXTERNAL_ID_BASE, FIELDS, STATUS, ReviewStatus, SavedQueue
from core.labels.uploads import UPLOADS_FOLDER
from core.workspace import HOME_ENV

from conftest import ANN, BOB, REPO
from lock_holder import finishes_within, lock_held

REVIEWED, SKIPPED, NOT_PRODUCT = ReviewStatus.REVIEWED, ReviewStatus.SKIPPED, ReviewStatus.NOT_PRODUCT

PG_URL_ENV = "FASHION_TAGGER_TEST_PG_URL"
WRITER = REPO / "tests" / "labelstore_writer.py"
SHIRT_ID, JEANS_ID, WATCH_ID = 15970, 39386, 59263
SHIRT_LABELS = {
    "gender": "Men", "masterCategory": "Apparel", "subCategory": "Topwear", "articleType": "Shirts",
    "baseColour": "Navy Blue", "season": "Fall", "usage": "Casual",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, workspace_home) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{workspace_home / 'fashion_tagger.db'}"
    url = os.environ.get(PG_URL_ENV)
    if not url:
        pytest.skip(f"{PG_URL_ENV} is unset: no PostgreSQL to test against (.ci/run starts one)")
    with db_engine(url).begin() as connection:
        tables.metadata.drop_all(connection)  # whatever an earlier test or run left
    return url


@pytest.fixture()
def store(db_url, workspace_home) -> LabelStore:
    return LabelStore(workspace=workspace_home, db_url=db_url)


@pytest.fixture()
def catalogue(tmp_path):
    return load_catalogue(write_dataset(tmp_path / "data", lines(HEADER, SHIRT, JEANS, WATCH)))


@pytest.fixture()
def items(store, catalogue) -> dict[int, int]:
    """product id -> item, for the three catalogue products."""
    added = store.add_catalogue_items(catalogue, [SHIRT_ID, JEANS_ID, WATCH_ID], ANN)
    return {found.product_id: found.item for found in added}


def image_bytes(format: str = "PNG", colour: tuple[int, int, int] = (10, 200, 10), size=(30, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=format)
    return buffer.getvalue()


def kinds(store: LabelStore, item: int) -> list[tuple[str, str | None, str | None, str]]:
    """(field, old, new, kind) of each log row of `item`, oldest first."""
    return [tuple(row) for row in store.history(item)[["field", "old", "new", "kind"]].itertuples(index=False)]


def assert_history_consistent(store: LabelStore, item_ids: list[int]) -> None:
    """Per (item, field), in seq order: each old is the previous new (the first, the baseline), and
    the current value is the last new."""
    current = store.current(item_ids)
    for found in store.items(item_ids):
        log = store.history(found.item)
        assert log["seq"].is_monotonic_increasing and log["seq"].is_unique
        for field in FIELDS:
            rows = log[log["field"] == field]
            expected = found.baseline.get(field)  # STATUS starts as None
            for old, new in zip(rows["old"], rows["new"]):
                assert old == expected, f"item {found.item} {field}: old {old!r} after new {expected!r}"
                expected = new
            assert current[found.item][field] == expected


# --- items ------------------------------------------------------------------------------------


def test_catalogue_items_keep_their_baseline_and_adding_again_changes_nothing(store, catalogue, items):
    again = store.add_catalogue_items(catalogue, [WATCH_ID, SHIRT_ID, WATCH_ID], BOB)
    assert [found.item for found in again] == [items[WATCH_ID], items[SHIRT_ID], items[WATCH_ID]]
    shirt = again[1]
    assert (shirt.kind, shirt.name, shirt.added_by) == ("catalogue", f"{SHIRT_ID}.jpg", "ann")
    assert shirt.dataset == str(catalogue.root.resolve()) and shirt.path == catalogue.image_path(SHIRT_ID)
    assert shirt.baseline == SHIRT_LABELS
    assert store.current([items[SHIRT_ID]]) == {items[SHIRT_ID]: {**SHIRT_LABELS, STATUS: None}}
    assert len(store.dataset_items(catalogue)) == 3


def test_unknown_product_ids_are_refused_by_name(store, catalogue):
    with pytest.raises(ValueError, match=r"not in the catalogue .*: 7, 8$"):
        store.add_catalogue_items(catalogue, [SHIRT_ID, 8, 7], ANN)
    assert store.dataset_items(catalogue) == []
    with pytest.raises(KeyError, match="no item"):
        store.current([12345])


# --- review, mark, undo -----------------------------------------------------------------------


def test_review_kinds_follow_the_prediction_or_the_current_value(store, items):
    shirt = items[SHIRT_ID]
    action = store.review(
        shirt, {"gender": "Men", "articleType": "Tshirts", "baseColour": "Blue", "season": "Fall", "usage": "Party"},
        ANN, run_id="run-1", predicted={"baseColour": ("Blue", 0.75), "season": ("Summer", 0.6)}, new_values=["usage"],
    )
    assert action.kind == "review" and action.reviewer == "ann" and len(action.action) == 32
    assert action.changes == {
        "gender": ("Men", "Men"), "articleType": ("Shirts", "Tshirts"), "baseColour": ("Navy Blue", "Blue"),
        "season": ("Fall", "Fall"), "usage": ("Casual", "Party"), STATUS: (None, REVIEWED),
    }
    # gender: keeps the current value; articleType: changed by the reviewer; baseColour: takes the
    # prediction; season: keeps the catalogue's value although the model said otherwise (no change
    # is no correction); usage: a new value.
    assert kinds(store, shirt) == [
        ("gender", "Men", "Men", "accept"), ("articleType", "Shirts", "Tshirts", "correct"),
        ("baseColour", "Navy Blue", "Blue", "accept"), ("season", "Fall", "Fall", "accept"),
        ("usage", "Casual", "Party", "new_value"), (STATUS, None, REVIEWED, "review"),
    ]
    history = store.history(shirt)
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert history["action"].unique().tolist() == [action.action]
    assert history["run_id"].tolist() == ["run-1"] * 6
    assert history["predicted"].tolist() == [None, None, "Blue", "Summer", None, None]
    assert history["p"].tolist()[2:4] == [0.75, 0.6]
    assert store.current([shirt])[shirt] == {**SHIRT_LABELS, "articleType": "Tshirts", "baseColour": "Blue",
                                             "usage": "Party", STATUS: REVIEWED}
    summary = store.summary([shirt, items[JEANS_ID]])
    assert summary.loc[shirt, "status"] == REVIEWED
    assert summary.loc[shirt, "corrected"] == ["articleType", "baseColour", "usage"]
    assert (summary.loc[shirt, "reviewed_by"], summary.loc[shirt, "reviewed_at"]) == ("ann", action.at)
    assert summary.loc[items[JEANS_ID]].tolist() == [None, [], None, None]


def test_a_partial_review_keeps_the_item_open(store, items):
    shirt = items[SHIRT_ID]
    action = store.review(shirt, {"gender": "Women"}, ANN, predicted={"gender": ("Women", 0.99)}, complete=False)
    assert action.changes == {"gender": ("Men", "Women")}
    assert store.current([shirt])[shirt][STATUS] is None and store.current([shirt])[shirt]["gender"] == "Women"
    assert store.undo_last(ANN).changes == {"gender": ("Women", "Men")}


def test_review_refuses_bad_input_and_writes_nothing(store, items):
    shirt = items[SHIRT_ID]
    with pytest.raises(ValueError, match="unknown head.*'colour'.*heads are gender, masterCategory"):
        store.review(shirt, {"colour": "Red"}, ANN)
    with pytest.raises(ValueError, match="a person.s name must not be empty"):
        store.review(shirt, {"baseColour": "Red"}, Actor("  ", Role.REVIEWER))
    with pytest.raises(ValueError, match="new_values names head.*season"):
        store.review(shirt, {"baseColour": "Red"}, ANN, new_values=["season"])
    with pytest.raises(ValueError, match="the baseColour label must be text"):
        store.review(shirt, {"baseColour": 3}, ANN)
    with pytest.raises(KeyError, match="no item 999"):
        store.review(999, {"baseColour": "Red"}, ANN)
    with pytest.raises(ValueError, match="status must be"):
        store.mark(shirt, REVIEWED, ANN)
    assert store.history(shirt).empty and store.current([shirt])[shirt][STATUS] is None


def test_mark_skipped_then_not_product(store, items):
    jeans = items[JEANS_ID]
    skip = store.mark(jeans, SKIPPED, BOB, run_id="r")
    assert (skip.kind, skip.changes) == ("skip", {STATUS: (None, SKIPPED)})
    store.mark(jeans, NOT_PRODUCT, ANN)
    assert kinds(store, jeans) == [(STATUS, None, SKIPPED, "skip"), (STATUS, SKIPPED, NOT_PRODUCT, "not_product")]
    assert store.summary([jeans]).loc[jeans, ["status", "reviewed_by"]].tolist() == [NOT_PRODUCT, "ann"]
    assert_history_consistent(store, list(items.values()))


def test_values_are_the_labels_reviewers_gave_each_head_on_the_dataset(store, catalogue, items, tmp_path):
    assert store.values(catalogue) == {head: [] for head in HEADS}
    store.review(items[SHIRT_ID], {"baseColour": "Teal", "usage": "Casual"}, ANN, new_values=["baseColour"])
    store.review(items[JEANS_ID], {"baseColour": "Blue"}, BOB)
    given = store.values(catalogue.root)
    assert list(given) == list(HEADS)
    assert given["baseColour"] == ["Blue", "Teal"] and given["usage"] == ["Casual"]
    assert given["gender"] == []  # no reviewer set it
    assert store.values(tmp_path / "another-dataset") == {head: [] for head in HEADS}


def test_undo_walks_back_through_the_reviewers_own_actions(store, items):
    shirt, jeans = items[SHIRT_ID], items[JEANS_ID]
    first = store.review(shirt, {"baseColour": "Red"}, ANN)
    store.review(jeans, {"season": "Winter"}, BOB)
    second = store.review(shirt, {"baseColour": "Green", "usage": "Sports"}, ANN)
    assert store.undoable(ANN).action == second.action

    undo = store.undo_last(ANN)
    assert undo.kind == "undo" and undo.item == shirt
    assert undo.changes == {"baseColour": ("Green", "Red"), "usage": ("Sports", "Casual"), STATUS: (REVIEWED, REVIEWED)}
    assert set(store.history(shirt).query("kind == 'undo'")["undoes"]) == {second.action}
    # Undos are never undone: the next undo takes the action before.
    assert store.undo_last(ANN).changes == {"baseColour": ("Red", "Navy Blue"), STATUS: (REVIEWED, None)}
    assert store.undo_last(ANN) is None
    assert set(store.history(shirt)["undoes"].dropna()) == {first.action, second.action}
    assert store.current([shirt])[shirt] == {**SHIRT_LABELS, STATUS: None}
    assert store.current([jeans])[jeans]["season"] == "Winter"  # bob's work untouched
    assert store.summary([shirt]).loc[shirt, "corrected"] == []
    assert_history_consistent(store, list(items.values()))


def test_undo_conflicts_with_a_later_change_by_someone_else(store, items):
    shirt = items[SHIRT_ID]
    store.review(shirt, {"baseColour": "Red"}, ANN)
    store.review(shirt, {"baseColour": "Blue"}, BOB)
    before = len(store.history(shirt))
    with pytest.raises(UndoConflict, match=r"item \d+: its baseColour was changed since by bob at .*now 'Blue'"):
        store.undo_last(ANN)
    assert len(store.history(shirt)) == before  # nothing written
    store.undo_last(BOB)  # bob's change undone: ann's is the latest again, and can go
    assert store.undo_last(ANN).changes["baseColour"] == ("Red", "Navy Blue")
    assert store.current([shirt])[shirt]["baseColour"] == "Navy Blue"
    assert_history_consistent(store, [shirt])


def test_labels_persist_for_a_new_process(store, db_url, workspace_home, items):
    store.review(items[WATCH_ID], {"baseColour": " Gold ", "usage": ""}, ANN)
    code = (
        "import json, sys; from pathlib import Path; from core.labels.store import LabelStore; "
        "store = LabelStore(workspace=Path(sys.argv[1]), db_url=sys.argv[2]); "
        f"print(json.dumps(store.current([{items[WATCH_ID]}])))"
    )
    command = [sys.executable, "-c", code, str(workspace_home), db_url]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout
    # Blank text is a missing label, like an empty styles.csv field.
    assert pd.read_json(io.StringIO(out), typ="series").iloc[0] == {
        "gender": "Women", "masterCategory": "Accessories", "subCategory": "Watches", "articleType": "Watches",
        "baseColour": "Gold", "season": "Winter", "usage": None, STATUS: REVIEWED,
    }


# --- external images --------------------------------------------------------------------------


def tree(root: Path) -> set[Path]:
    """Every file under root, but the SQLite database (its -wal and -shm files come and go)."""
    return {path.relative_to(root) for path in root.rglob("*")
            if path.is_file() and "fashion_tagger.db" not in path.name}


@pytest.mark.parametrize("data, problem", [
    (b"", "the file is empty"),
    (b"name,colour\nshirt,red\n", "not an image"),
    (image_bytes("GIF"), "a GIF image; accepted formats are JPEG, PNG, WEBP, AVIF"),
    (image_bytes("PNG")[:60], "truncated or corrupt"),
    (png_of_zeros(8_900, 8_900, 16, rows=1), "8900x8900 pixels of 16 bits per sample, more than the 20 megapixel"),
])
def test_bad_images_are_rejected_naming_the_file_and_nothing_is_written(store, catalogue, tmp_path, data, problem):
    before = tree(tmp_path)
    with pytest.raises(ImageRejected) as caught:
        store.add_image(catalogue, data, "../photos/look.png", ANN)
    assert str(caught.value).startswith("look.png: ") and problem in str(caught.value)
    assert tree(tmp_path) == before and store.dataset_items(catalogue) == []


def test_names_never_choose_where_the_copy_goes(store, catalogue, workspace_home, tmp_path):
    names = {
        "../../escape.jpg": ("escape.jpg", "JPEG"), "a/b.png": ("b.png", "PNG"),
        str(tmp_path / "absolute.png"): ("absolute.png", "PNG"), "nul\x00name.png": ("nulname.png", "PNG"),
        "..\\..\\windows.webp": ("windows.webp", "WEBP"), "..": ("upload", "PNG"),
    }
    before = tree(tmp_path)
    added = [
        store.add_image(catalogue, image_bytes(format, colour=(number, 0, 0)), name, ANN)
        for number, (name, (_, format)) in enumerate(names.items())
    ]
    assert [found.name for found in added] == [shown for shown, _ in names.values()]
    created = tree(tmp_path) - before
    assert created == {found.path.relative_to(tmp_path) for found in added}
    assert all(path.parent == Path("workspace") / UPLOADS_FOLDER for path in created)
    # The copy is named by its content and the format detected: a PNG called escape.jpg is stored .jpg only if JPEG.
    assert [found.path.suffix for found in added] == [".jpg", ".png", ".png", ".png", ".webp", ".png"]
    for found in added:
        assert found.kind == "external" and found.product_id == EXTERNAL_ID_BASE + found.item
        assert found.baseline == dict.fromkeys(HEADS) and found.path.parent == workspace_home / UPLOADS_FOLDER


def test_uploads_and_the_default_database_stay_in_the_workspace_given_not_the_current_folder(
    workspace_home, catalogue, tmp_path, monkeypatch,
):
    monkeypatch.delenv(HOME_ENV)  # no workspace from the environment: only the one given may be used
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    data = image_bytes("PNG")
    found = LabelStore(workspace=workspace_home).add_image(catalogue, data, "look.png", ANN)
    assert found.path.parent == workspace_home / UPLOADS_FOLDER and found.path.read_bytes() == data
    assert (workspace_home / DB_FILE).is_file()  # without FASHION_TAGGER_DB_URL, the given workspace's database
    assert list(elsewhere.iterdir()) == []


def test_the_same_bytes_twice_are_one_item_and_one_file(store, catalogue, tmp_path):
    data = image_bytes("JPEG")
    first = store.add_image(catalogue, data, "dress.jpg", ANN)
    assert store.add_image(catalogue.root, data, "again.jpg", BOB) == first
    elsewhere = store.add_image(tmp_path / "other-dataset", data, "dress.jpg", ANN)
    assert elsewhere.item != first.item and elsewhere.path == first.path
    assert first.path.read_bytes() == data and len(list(first.path.parent.iterdir())) == 1
    (tmp_path / "mislabelled.png").write_bytes(image_bytes("WEBP", colour=(1, 2, 3)))
    from_file = store.add_image_file(catalogue, tmp_path / "mislabelled.png", ANN)
    assert (from_file.name, from_file.path.suffix) == ("mislabelled.png", ".webp")
    with pytest.raises(ImageRejected, match="missing.png: cannot read the file"):
        store.add_image_file(catalogue, tmp_path / "missing.png", ANN)


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_reviewing_the_same_items_lose_nothing(store, db_url, tmp_path):
    rows = [f"{number},Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Shirt {number}" for number in range(1, 11)]
    catalogue = load_catalogue(write_dataset(tmp_path / "ten", lines(HEADER, *rows), image_ids=tuple(range(1, 11))))
    item_ids = [found.item for found in store.add_catalogue_items(catalogue, range(1, 11), ANN)]
    writers = [
        subprocess.Popen(
            [sys.executable, str(WRITER), db_url, reviewer, "500", *map(str, item_ids)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for reviewer in ("ann", "bob")
    ]
    try:
        for writer in writers:
            assert writer.stdout.readline().strip() == "ready"
        for writer in writers:  # both start together, so their writes interleave
            writer.stdin.write("go\n")
            writer.stdin.flush()
        outputs = [writer.communicate(timeout=300)[0] for writer in writers]
    finally:
        for writer in writers:
            writer.kill()
    assert [writer.returncode for writer in writers] == [0, 0] and outputs == ["done\n", "done\n"]

    log = store.log_frame(catalogue)
    reviews = log[log["field"] == STATUS]
    assert len(reviews) == 1000 and (reviews["kind"] == "review").all()
    assert log["action"].nunique() == 1000 and len(log) == 3000
    assert reviews["reviewer"].value_counts().to_dict() == {"ann": 500, "bob": 500}
    assert sorted(reviews["run_id"].astype(int)) == sorted([*range(500)] * 2)
    # The writers ran at once: their reviews interleave (hundreds of switches here; one if serial).
    assert (reviews["reviewer"] != reviews["reviewer"].shift()).sum() > 10
    assert_history_consistent(store, item_ids)


@pytest.mark.slow
def test_every_export_taken_while_reviewers_write_is_one_snapshot(store, db_url, workspace_home, tmp_path):
    """styles.csv and corrections.csv of one export come from one read: a product's labels in the
    first are the last decision the second logs for it, however many writes land meanwhile."""
    ids = range(1, 11)
    rows = [f"{number},Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Shirt {number}" for number in ids]
    catalogue = load_catalogue(write_dataset(tmp_path / "ten", lines(HEADER, *rows), image_ids=tuple(ids)))
    item_ids = [found.item for found in store.add_catalogue_items(catalogue, ids, ANN)]
    writers = [
        subprocess.Popen(
            [sys.executable, str(WRITER), db_url, reviewer, "300", *map(str, item_ids)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for reviewer in ("ann", "bob", "cat")
    ]
    exports = []
    try:
        for writer in writers:
            assert writer.stdout.readline().strip() == "ready"
        for writer in writers:
            writer.stdin.write("go\n")
            writer.stdin.flush()
        while any(writer.poll() is None for writer in writers):
            exports.append(export_dataset(catalogue, store, workspace_home / f"export-{len(exports)}", ANN).out)
        assert [writer.wait(timeout=300) for writer in writers] == [0, 0, 0]
    finally:
        for writer in writers:
            writer.kill()
    assert len(exports) >= 5, "the writers finished before a few exports could run beside them"
    disagreeing = []
    for out in exports:
        styles = pd.read_csv(out / "styles.csv").set_index("id")
        log = pd.read_csv(out / CORRECTIONS_FILE)
        for head in ("baseColour", "season"):
            last = log[log["field"] == head].groupby("product_id")["new"].last()
            disagreeing += [(out.name, product_id, head) for product_id, value in last.items()
                            if styles.at[product_id, head] != value]
    assert not disagreeing, f"{len(disagreeing)} labels in styles.csv differ from corrections.csv: {disagreeing[:5]}"


@pytest.fixture()
def short_lock_timeout(db_url, monkeypatch):
    """The store's lock waits cut to 0.5 s (new connections take it), restored after the test."""
    monkeypatch.setattr(database, "LOCK_TIMEOUT_MS", 500)
    db_engine(db_url).dispose()
    yield
    monkeypatch.undo()
    db_engine(db_url).dispose()


def test_a_writer_behind_a_held_lock_is_told_busy_and_writes_nothing(db_url, store, catalogue, items,
                                                                      short_lock_timeout):
    shirt = items[SHIRT_ID]
    with lock_held(db_url, shirt):
        with pytest.raises(DatabaseBusy, match=r"is busy: another process has held its lock for more than 0.5 s "
                                               r"\(a long write, or a stuck one\); try again"):
            finishes_within(30, lambda: store.review(shirt, {"baseColour": "Red"}, ANN))
        # Reads go on meanwhile, without waiting.
        assert finishes_within(30, lambda: store.current([shirt]))[shirt]["baseColour"] == "Navy Blue"
        assert finishes_within(30, lambda: store.history(shirt)).empty
        assert len(finishes_within(30, lambda: store.dataset_state(catalogue))) == 3
    assert store.current([shirt])[shirt]["baseColour"] == "Navy Blue" and store.history(shirt).empty
    store.review(shirt, {"baseColour": "Red"}, ANN)  # the lock is free again
    assert store.current([shirt])[shirt]["baseColour"] == "Red"


def test_postgresql_sessions_have_lock_and_statement_timeouts(db_url, store):
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL settings")
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW lock_timeout").scalar() == "30s"
        assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "5min"


# --- who may write (core.access.roles) ----------------------------------------------------------------


def test_a_viewer_writes_nothing_and_the_refusal_names_who_and_what(store, items, catalogue, tmp_path):
    viewer, shirt = Actor("vic@example.com", Role.VIEWER), items[SHIRT_ID]
    before = store.log_frame(catalogue.root)
    for write in (lambda: store.review(shirt, {"baseColour": "Red"}, viewer),
                  lambda: store.mark(shirt, SKIPPED, viewer),
                  lambda: store.undo_last(viewer),
                  lambda: store.add_catalogue_items(catalogue, [SHIRT_ID], viewer),
                  lambda: store.add_image(catalogue, image_bytes("PNG"), "new.png", viewer)):
        with pytest.raises(AccessDenied, match=r"vic@example.com is a viewer and may not record review decisions"):
            write()
    assert store.log_frame(catalogue.root).equals(before)
    assert not (tmp_path / "workspace" / UPLOADS_FOLDER).exists()


def test_a_reviewer_undoes_their_own_decisions_only_and_an_admin_anyones(store, items, catalogue):
    shirt, jeans = items[SHIRT_ID], items[JEANS_ID]
    bobs = store.review(shirt, {"baseColour": "Red"}, BOB)
    anns = store.review(jeans, {"season": "Winter"}, ANN)
    assert [action.action for action in store.open_actions(shirt)] == [bobs.action]
    with pytest.raises(AccessDenied, match="bob is a reviewer and may not undo another person's decision: "
                                           "that needs the admin role"):
        store.undo_action(anns.action, BOB)
    assert store.current([jeans])[jeans]["season"] == "Winter"  # nothing written
    undone = store.undo_action(bobs.action, ANN)  # an admin undoes bob's decision; the undo is ann's
    assert (undone.reviewer, undone.kind, undone.changes["baseColour"]) == ("ann", "undo", ("Red", "Navy Blue"))
    history = store.history(shirt)
    assert history["reviewer"].tolist()[-2:] == ["ann", "ann"] and history["kind"].iloc[-1] == "undo"
    assert store.open_actions(shirt) == []
    with pytest.raises(ValueError, match="was undone already"):
        store.undo_action(bobs.action, ANN)
    with pytest.raises(KeyError, match="no action 'nope'"):
        store.undo_action("nope", ANN)


def test_a_typed_label_breaking_a_rule_is_refused_naming_it(store, items):
    shirt = items[SHIRT_ID]
    for value, rule in (('=HYPERLINK("http://evil.example","click")', "must not start with = \\+ - @"),
                        ("Red\x1b[31m",
                         "must not hold control or invisible characters \\(it holds U\\+001B\\): 'Red\\\\x1b\\[31m'"),
                        ("x" * 101, "must be at most 100 characters, got 101: 'x{40}'…")):
        with pytest.raises(ValueError, match=f"the baseColour label {rule}"):
            store.review(shirt, {"baseColour": value}, ANN, new_values=["baseColour"])
    assert store.history(shirt).empty


def test_photo_files_on_the_server_need_an_admin_and_a_path_under_their_roots(store, catalogue, tmp_path):
    photo = tmp_path / "outside" / "look.png"
    photo.parent.mkdir()
    photo.write_bytes(image_bytes("PNG"))
    with pytest.raises(AccessDenied, match="bob is a reviewer and may not load photos from a folder"):
        store.add_image_file(catalogue, photo, BOB)
    admin = Actor("ann", Role.ADMIN, roots=(tmp_path / "workspace",))
    with pytest.raises(FolderRefused) as refused:
        store.add_image_file(catalogue, photo, admin)
    with pytest.raises(FolderRefused) as missing:
        store.add_image_file(catalogue, photo.with_name("gone.png"), admin)
    # The same words whether the file exists or not, but for the path typed.
    assert str(refused.value).replace("look.png", "gone.png") == str(missing.value)
    assert store.add_image_file(catalogue, photo, ANN).added_by == "ann"  # no roots: the command line


# --- queues -----------------------------------------------------------------------------------


def test_a_persons_queue_comes_back_for_them_alone_on_each_dataset(store, db_url, workspace_home, items, catalogue,
                                                                    tmp_path):
    queue = SavedQueue("label issues of run r1", (items[WATCH_ID], items[SHIRT_ID]), "unreviewed",
                       ("baseColour",), items[SHIRT_ID])
    assert store.saved_queue(catalogue.root, ANN) is None
    store.keep_queue(catalogue.root, queue, ANN)
    # Another process (a reload, another device) sees it; another person and another dataset do not.
    fresh = LabelStore(workspace=workspace_home, db_url=db_url)
    assert fresh.saved_queue(str(catalogue.root) + "/", ANN) == queue
    assert fresh.saved_queue(catalogue.root, BOB) is None
    assert fresh.saved_queue(tmp_path / "other", ANN) is None
    moved = dataclasses.replace(queue, current=items[WATCH_ID], filter="all", corrected_in=())
    fresh.keep_queue(catalogue.root, moved, ANN)  # replaced whole
    assert store.saved_queue(catalogue.root, ANN) == moved
    bobs = SavedQueue("uploads", (items[JEANS_ID],))
    store.keep_queue(catalogue.root, bobs, BOB)
    assert store.saved_queue(catalogue.root, BOB) == bobs and store.saved_queue(catalogue.root, ANN) == moved


def test_a_queue_that_does_not_hold_together_is_refused_and_unknown_items_are_dropped(store, items, catalogue):
    good = SavedQueue("uploads", (items[WATCH_ID],), current=items[WATCH_ID])
    for bad, says in ((dataclasses.replace(good, current=items[SHIRT_ID]), "not in the queue"),
                      (dataclasses.replace(good, corrected_in=("colour",)), r"unknown head\(s\) colour"),
                      (dataclasses.replace(good, filter=""), "filter"),
                      (dataclasses.replace(good, items=("one",)), "item")):
        with pytest.raises(ValueError, match=says):
            store.keep_queue(catalogue.root, bad, ANN)
    assert store.saved_queue(catalogue.root, ANN) is None
    with pytest.raises(AccessDenied):
        store.keep_queue(catalogue.root, good, Actor("vic", Role.VIEWER))
    store.keep_queue(catalogue.root, dataclasses.replace(good, items=(items[WATCH_ID], 999_999), current=999_999), ANN)
    assert store.saved_queue(catalogue.root, ANN) == SavedQueue("uploads", (items[WATCH_ID],))


# --- bulk edits -------------------------------------------------------------------------------


def test_a_label_set_on_many_items_is_one_batch_undone_as_a_whole(store, items):
    shirt, jeans, watch = items[SHIRT_ID], items[JEANS_ID], items[WATCH_ID]
    store.review(jeans, {"season": "Summer"}, ANN, complete=False)
    batch = store.label_many([shirt, jeans, watch, shirt], "season", " Summer ", ANN)
    assert batch.value == "Summer" and batch.changed == (shirt, watch) and batch.unchanged == (jeans,)
    current = store.current([shirt, jeans, watch])
    assert {item: values["season"] for item, values in current.items()} == dict.fromkeys((shirt, jeans, watch),
                                                                                         "Summer")
    assert current[shirt][STATUS] is None  # one head is not a review
    assert kinds(store, shirt)[-1] == ("season", "Fall", "Summer", "correct")
    store.review(jeans, {"usage": "Sports"}, BOB, complete=False)  # someone else, on another item: no conflict
    undo = store.undo_last(ANN)
    assert undo.kind == "undo"
    current = store.current([shirt, jeans, watch])
    assert (current[shirt]["season"], current[jeans]["season"], current[watch]["season"]) == ("Fall", "Summer",
                                                                                             "Winter")
    assert store.undo_last(ANN).item == jeans  # the review before the batch is next
    assert_history_consistent(store, [shirt, jeans, watch])


def test_a_batch_changed_since_is_not_undone_in_part(store, items):
    shirt, watch = items[SHIRT_ID], items[WATCH_ID]
    batch = store.label_many([shirt, watch], "usage", "Formal", ANN)
    store.review(watch, {"usage": "Casual"}, BOB, complete=False)
    with pytest.raises(UndoConflict, match="bob"):
        store.undo_action(store.open_actions(shirt)[0].action, ANN)
    assert store.current([shirt])[shirt]["usage"] == "Formal"  # nothing undone
    assert batch.changed == (shirt, watch)
    assert store.label_many([shirt], "usage", "Formal", ANN).batch == ""  # nothing to change: nothing written
    with pytest.raises(ValueError, match="formula"):
        store.label_many([shirt], "usage", "=HYPERLINK(1)", ANN)
    with pytest.raises(AccessDenied):
        store.label_many([shirt], "usage", "Casual", Actor("vic", Role.VIEWER))
