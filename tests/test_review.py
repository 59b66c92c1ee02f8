"""core.labels.queues: queue order, what each head offers and starts at, filters and navigation."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.data import HEADS
from core.data.catalogue import load_catalogue
from core.data.demo import generate_demo
from core.data.schema import OTHER_CLASS
from core.labels.queues import (
    BulkPreview,
    PhotoProposal,
    SourcePolicy,
    accept_confident,
    bulk_preview,
    choices,
    disagreement,
    filter_items,
    gated_rules,
    label_issue_ids,
    least_confident_ids,
    next_item,
    open_photos,
    reviewed_count,
    shown_label,
    sure_heads,
    top_proposals,
    with_gold,
)
from core.labels.store import LabelStore
from core.model.predictor import FilePrediction, Guess
from core.trust.sources import HeadRule

from conftest import ANN, BOB


def test_least_confident_orders_by_the_weakest_head():
    predictions = pd.DataFrame({"id": [10, 11, 12, 13], "gender_p": [0.9, 0.2, 0.99, 0.6],
                                "usage_p": [0.5, 0.95, 0.98, 0.1]})
    assert least_confident_ids(predictions, ["gender", "usage"], 10) == [13, 11, 10, 12]
    assert least_confident_ids(predictions, ["gender"], 2) == [11, 13]
    with pytest.raises(ValueError, match="season_p"):
        least_confident_ids(predictions, ["season"], 2)
    with pytest.raises(ValueError, match="limit"):
        least_confident_ids(predictions, ["gender"], 0)


def test_label_issues_keep_each_id_once_at_its_worst_score():
    issues = pd.DataFrame({"id": [1, 2, 1, 3, 4], "head": ["a", "a", "b", "b", "b"],
                           "score": [0.30, 0.10, 0.05, 0.20, 0.01], "is_issue": [True, True, True, True, False],
                           "rank": [3, 1, 1, 2, 9]})
    assert label_issue_ids(issues, 10) == [1, 2, 3]
    assert label_issue_ids(issues, 10, flagged_only=False) == [4, 1, 2, 3]
    assert label_issue_ids(issues, 2) == [1, 2]
    assert label_issue_ids(issues, 10, heads=["a"]) == [2, 1]
    assert label_issue_ids(issues, 10, flagged_only=False, heads={"b"}) == [4, 1, 3]


def test_choices_leave_out_the_rare_bucket_and_keep_the_current_value():
    offered = choices(["Shirts", OTHER_CLASS, "Tshirts"], ["Jeans", "shirts2", "Shirts"], "Kurtas")
    assert offered == ["Jeans", "Kurtas", "Shirts", "shirts2", "Tshirts"]
    assert OTHER_CLASS not in choices([OTHER_CLASS], [], None)


def test_a_head_shows_its_current_value_and_only_an_empty_head_starts_at_the_model():
    offered = ["Shirts", "Tshirts", "Tops"]
    guesses = [(OTHER_CLASS, 0.5), ("Tshirts", 0.3), ("Shirts", 0.2)]
    # A catalogue row shows its catalogue value, whatever the model says: saving changes nothing.
    assert shown_label(guesses, "Shirts", reviewed=False, offered=offered) == "Shirts"
    assert shown_label(guesses, "Shirts", reviewed=True, offered=offered) == "Shirts"
    # A new photo's empty head starts at the model's best offered guess (Other is not a label).
    assert shown_label(guesses, None, reviewed=False, offered=offered) == "Tshirts"
    assert shown_label([(OTHER_CLASS, 1.0)], None, reviewed=False, offered=offered) is None
    assert shown_label(guesses, None, reviewed=True, offered=offered) is None  # decided: left empty on purpose
    assert shown_label([], None, reviewed=False, offered=offered) is None
    assert disagreement([("Tshirts", 0.93)], "Shirts") == ("Tshirts", 0.93)
    assert disagreement([("Shirts", 0.93)], "Shirts") is None
    assert disagreement([(OTHER_CLASS, 0.9)], "Shirts") is None and disagreement([], "Shirts") is None


def summary() -> pd.DataFrame:
    return pd.DataFrame({"status": [None, "reviewed", "reviewed", "skipped", "not_product"],
                         "corrected": [[], ["usage"], [], [], ["gender"]]}, index=[5, 6, 7, 8, 9])


def test_filters_keep_the_items_they_name_in_queue_order():
    frame = summary()
    assert filter_items(frame, "all") == [5, 6, 7, 8, 9]
    assert filter_items(frame, "unreviewed") == [5]
    assert filter_items(frame, "reviewed") == [6, 7]
    assert filter_items(frame, "corrected") == [6, 9]
    assert filter_items(frame, "all", corrected_in=["gender"]) == [9]
    assert filter_items(frame, "skipped") == [8] and filter_items(frame, "not a product") == [9]
    assert reviewed_count(frame) == 4
    with pytest.raises(ValueError, match="unreviewed"):
        filter_items(frame, "todo")


def test_next_item_walks_the_order_and_stops_at_the_ends():
    order = [4, 8, 15]
    assert next_item(order, 4) == 8 and next_item(order, 8, -1) == 4
    assert next_item(order, 15) is None and next_item(order, 4, -1) is None
    assert next_item(order, 99) == 4 and next_item([], 4) is None


# --- accepting confident proposals in bulk


class ScriptedPredictor:
    """Stands in for core.model.predictor.Predictor: fixed top labels per photo file name."""

    def __init__(self, by_name: dict[str, dict[str, tuple[str, float]]]) -> None:
        self.by_name = by_name

    def iter_predict_files(self, paths, top_k=3, batch_size=32):
        for path in paths:
            if not Path(path).is_file():
                yield FilePrediction(str(path), error=f"{path}: no such file or folder")
            else:
                yield FilePrediction(str(path), predictions={
                    head: [Guess(label, p)] for head, (label, p) in self.by_name[Path(path).name].items()})


@pytest.fixture
def bulk(tmp_path):
    catalogue = load_catalogue(generate_demo(tmp_path / "demo", n=50, seed=4))
    store = LabelStore(workspace=tmp_path / "workspace", db_url=f"sqlite:///{tmp_path / 'labels.db'}")
    photos = sorted((catalogue.root / "images").glob("*.jpg"))
    for index, photo in enumerate(photos[:5]):  # new photos: the same bytes would be the same item
        (tmp_path / f"new{index}.jpg").write_bytes(photo.read_bytes() + bytes([index]))
    new = [store.add_image_file(catalogue.root, tmp_path / f"new{index}.jpg", ANN) for index in range(5)]
    [row] = store.add_catalogue_items(catalogue, [int(catalogue.frame["id"].iloc[0])], ANN)
    return store, new, row


def test_top_proposals_give_each_heads_top_label_or_the_reason_in_order(bulk):
    _, (sure, unsure, other, gone, _), _ = bulk
    gone.path.unlink()
    predictor = ScriptedPredictor({sure.path.name: {"gender": ("Men", 0.97), "usage": ("Casual", 0.5)},
                                   unsure.path.name: {"gender": ("Women", 0.6)}})
    photos = {gone.item: gone.path, sure.item: sure.path, unsure.item: unsure.path}
    proposals = top_proposals(predictor, photos)
    assert list(proposals) == [gone.item, sure.item, unsure.item]
    assert proposals[sure.item] == PhotoProposal({"gender": ("Men", 0.97), "usage": ("Casual", 0.5)})
    assert proposals[gone.item] == f"{gone.path}: no such file or folder"
    rules = gated_rules({"gender": 0.95, "usage": None})
    assert sure_heads(proposals[sure.item], rules) == {"gender": ("Men", 0.97, 0.95)}  # usage: never accepted
    assert sure_heads(proposals[unsure.item], rules) == {}
    bucket = PhotoProposal({"gender": (OTHER_CLASS, 0.99)})
    assert sure_heads(bucket, gated_rules({"gender": 0.0})) == {}  # the rare-class bucket is never a label to accept
    unlike = PhotoProposal({"gender": ("Men", 0.99)}, typical=False)
    assert sure_heads(unlike, gated_rules({"gender": 0.0})) == {}  # unlike the calibration photos: a person decides
    # ... unless the source's own reviewed photos certified the head: no gate then.
    assert sure_heads(unlike, {"gender": HeadRule(0.9, False, "")}) == {"gender": ("Men", 0.99, 0.9)}


def test_accept_confident_takes_the_sure_heads_of_unreviewed_new_photos_and_leaves_the_rest(bulk):
    store, (complete, partly, other, gone, decided), row = bulk
    store.review(decided.item, {"gender": "Women"}, BOB)  # already decided: left alone
    store.review(partly.item, {"usage": "Sports"}, BOB, complete=False)  # a head decided by a person earlier
    thresholds = SourcePolicy.everywhere({"gender": 0.9, "baseColour": 0.9, "usage": 0.5}, audit_share=0.0)
    proposals = {
        complete.item: PhotoProposal({"gender": ("Men", 0.97), "baseColour": ("Blue", 0.91), "usage": ("Casual", 0.6)}),
        partly.item: PhotoProposal({"gender": ("Men", 0.99), "baseColour": ("Blue", 0.89), "usage": ("Casual", 0.99)}),
        other.item: PhotoProposal({"gender": ("Men", 0.5), "baseColour": (OTHER_CLASS, 0.95),
                                   "usage": ("Casual", 0.1)}),
        gone.item: f"{gone.path}: no such file or folder",
        decided.item: PhotoProposal({"gender": ("Men", 0.99)}),
        row.item: PhotoProposal({"gender": ("Men", 0.99)}),  # a catalogue row: never accepted in bulk
    }
    everything = [row, complete, partly, other, gone, decided]
    assert [photo.item.item for photo in open_photos(store, everything, proposals)] == [
        complete.item, partly.item, other.item, gone.item]
    undecided = {photo.item.item: photo.undecided for photo in open_photos(store, everything, proposals)}
    assert "usage" not in undecided[partly.item] and "usage" in undecided[complete.item]
    seven = len(undecided[complete.item])  # every head of a new photo starts undecided
    # What the page shows before accepting: head decisions, not only photos.
    preview = bulk_preview(store, everything, proposals, thresholds)
    assert preview == BulkPreview(heads_accepted=3 + 1, heads_open=seven + (seven - 1) + seven, photos_complete=0,
                                  photos_open=3, photos_unlike=0)
    # A photo unlike the calibration photos gives nothing, however sure; it is counted as such.
    unlike = {**proposals, complete.item: dataclasses.replace(proposals[complete.item], typical=False)}
    assert bulk_preview(store, everything, unlike, thresholds) == dataclasses.replace(
        preview, heads_accepted=1, photos_unlike=1)

    result = accept_confident(store, everything, proposals, thresholds, ANN, run_id="run-1")
    assert (result.completed, result.partial, result.untouched, result.unreadable) == (
        [], [complete.item, partly.item], [other.item], [gone.item])
    assert result.heads_accepted == 4 and result.heads_left == preview.heads_open - 4
    current = store.current([complete.item, partly.item, other.item, decided.item, row.item])
    assert [current[complete.item][h] for h in ("gender", "baseColour", "usage", "status")] == [
        "Men", "Blue", "Casual", None]  # the four other heads still wait for a person
    assert [current[partly.item][h] for h in ("gender", "baseColour", "usage")] == ["Men", None, "Sports"]
    assert current[other.item]["gender"] is None and current[decided.item]["gender"] == "Women"
    assert current[row.item]["status"] is None
    history = store.history(complete.item)
    assert history["kind"].tolist() == ["auto_accept"] * 3 and set(history["run_id"]) == {"run-1"}
    assert sorted(history["p"].tolist()) == pytest.approx([0.6, 0.91, 0.97])
    assert store.undo_last(ANN).item == partly.item  # undoable like any decision


def test_a_photo_whose_every_head_is_sure_is_reviewed(bulk):
    store, new, _ = bulk
    sure = PhotoProposal({head: ("Casual" if head == "usage" else "x", 0.99) for head in HEADS})
    result = accept_confident(store, new[:1], {new[0].item: sure}, SourcePolicy.everywhere(dict.fromkeys(HEADS, 0.9)),
                              ANN)
    assert result.completed == [new[0].item] and result.heads_left == 0
    assert store.current([new[0].item])[new[0].item]["status"] == "reviewed"


def test_an_auto_acceptance_is_undone_as_a_whole_after_the_decisions_made_since(bulk):
    store, new, _ = bulk
    first, second, third, fourth, _ = new
    store.review(first.item, {"gender": "Women"}, ANN)  # by hand, before
    proposals = {item.item: PhotoProposal({"gender": ("Men", 0.95)}) for item in (second, third, fourth)}
    result = accept_confident(store, [second, third, fourth], proposals,
                              SourcePolicy.everywhere({"gender": 0.9}, audit_share=0.0), ANN)
    assert result.partial == [second.item, third.item, fourth.item]
    store.review(fourth.item, {"gender": "Boys"}, ANN)  # a later decision by hand, on an accepted one

    assert store.undo_last(ANN).item == fourth.item  # the later decision comes first
    store.undo_last(ANN)  # then the whole acceptance at once
    current = store.current([item.item for item in new])
    assert [current[item.item]["gender"] for item in (second, third, fourth)] == [None, None, None]
    assert current[first.item]["status"] == "reviewed" and current[first.item]["gender"] == "Women"
    assert store.undo_batch(result.batch, ANN) == ([], [])  # nothing of it is left to undo


def test_gold_items_are_mixed_into_a_queue_at_the_share_set_each_once_and_never_one_already_seen():
    items, gold = list(range(1, 201)), list(range(1000, 1100))
    for share in (0.05, 0.1, 0.25, 0.3, 0.4):  # 1 / share not a whole number: the share still holds
        mixed = with_gold(items, gold, share)
        added = [item for item in mixed if item >= 1000]
        assert len(added) == round(len(items) * share) and len(set(added)) == len(added)
        assert [item for item in mixed if item < 1000] == items  # the queue's own order is kept
        positions = [mixed.index(item) for item in added]
        assert max(positions) > len(mixed) / 2  # spread through the queue, not bunched at its start
    seen = set(gold[:50])
    assert not set(with_gold(items, gold, 0.5, seen)) & seen  # a gold item this reviewer decided is not shown again
    assert with_gold(items, gold, 0.0) == items and with_gold(items, [], 0.3) == items
    assert with_gold(items, [5, 1000], 1.0).count(5) == 1  # an item already in the queue is not added twice


def test_short_queues_get_gold_items_at_the_share_on_average_not_one_each():
    """A queue shorter than 1 / share gets a gold item with the chance its length allows (3 items at
    10 %: 0.3 of one), not one every time: rounded up, short queues would be a quarter gold."""
    gold = list(range(10_000, 10_100))
    counts = [sum(item >= 10_000 for item in with_gold([first, first + 1, first + 2], gold, 0.1))
              for first in range(1, 3_001, 3)]  # a thousand queues of 3
    assert set(counts) <= {0, 1}
    assert 0.25 < np.mean(counts) < 0.35
    assert all(len(with_gold(list(range(first, first + 25)), gold, 0.1)) - 25 in (2, 3) for first in range(1, 500))
