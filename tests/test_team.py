"""A review team's numbers (core.labels.team) on a real store (SQLite, and PostgreSQL when
configured): effort per reviewer and day, gold accuracy, Cohen's kappa against a hand-computed
case, Krippendorff's alpha, disagreements and their settling, and the reviewer-hours saved."""

from __future__ import annotations

import pytest

from core.access.roles import AccessDenied
from core.data.catalogue import load_catalogue
from core.data.demo import generate_demo
from core.labels.queues import PhotoProposal, SourcePolicy, accept_confident
from core.labels.store import LabelStore
from core.labels.tables import ReviewStatus
from core.labels.team import (
    add_gold_rows,
    agreement,
    decisions,
    disagreements,
    effort,
    gold_accuracy,
    gold_labels,
    set_gold,
    team_totals,
)

from conftest import ANA, ANN, BEN, BOB
from test_labelstore import db_url, store  # noqa: F401  (the store on both databases)


@pytest.fixture()
def rows(store, tmp_path):
    catalogue = load_catalogue(generate_demo(tmp_path / "demo", n=50, seed=6))
    items = store.add_catalogue_items(catalogue, [int(i) for i in catalogue.frame["id"].iloc[:8]], ANN)
    return catalogue, items


def test_kappa_equals_the_hand_computed_case_and_alpha_is_reported(store, rows):
    _, items = rows
    ana = ["Men", "Men", "Women", "Women", "Men", "Women"]
    ben = ["Men", "Women", "Women", "Women", "Men", "Women"]
    for item, a, b in zip(items, ana, ben):
        store.review(item.item, {"gender": a}, ANA, seconds=12.0)
        store.review(item.item, {"gender": b}, BEN, seconds=8.0)
    pairs, alphas = agreement(decisions(store, rows[0].root))
    # Each reviewer's day: 6 decisions another person also made, 5 of them the same value.
    days = effort(decisions(store, rows[0].root), {}).set_index("reviewer")
    assert days.loc["ana", "shared_decisions"] == days.loc["ben", "shared_decisions"] == 6
    assert days.loc["ana", "agreement"] == pytest.approx(5 / 6)
    [pair] = pairs.to_dict("records")
    # observed 5/6; chance (3/6 * 2/6) + (3/6 * 4/6) = 1/2; kappa = (5/6 - 1/2) / (1 - 1/2) = 2/3
    assert (pair["reviewer_a"], pair["reviewer_b"], pair["items"]) == ("ana", "ben", 6)
    assert pair["agree"] == pytest.approx(5 / 6) and pair["kappa"] == pytest.approx(2 / 3)
    # Krippendorff's alpha, nominal, two coders, no missing value: 12 values (7 Women, 5 Men), one
    # unit disagreeing; observed disagreement 2/12, expected 2 * 7 * 5 / (12 * 11); alpha = 1 - Do / De.
    assert alphas["gender"] == pytest.approx(1 - (2 / 12) / (70 / 132))


def test_agreement_where_everyone_gave_one_value_and_some_skipped_items_does_not_fail(store, rows):
    _, items = rows
    for index, item in enumerate(items[:6]):
        for reviewer in (ANA, BEN) + ((BOB,) if index < 2 else ()):
            store.review(item.item, {"baseColour": "Red"}, reviewer)
    pairs, alphas = agreement(decisions(store, rows[0].root))
    assert set(pairs["agree"]) == {1.0} and alphas["baseColour"] is None  # one value: alpha is undefined


def test_disagreements_wait_for_a_third_person_whose_decision_the_catalogue_takes(store, rows):
    catalogue, items = rows
    first, second = items[:2]
    store.review(first.item, {"baseColour": "Red"}, ANA)
    store.review(first.item, {"baseColour": "Blue"}, BEN)
    store.review(second.item, {"baseColour": "Red"}, ANA)
    store.review(second.item, {"baseColour": "Red"}, BEN)  # they agree: nothing to settle
    open_ = disagreements(decisions(store, catalogue.root))
    assert open_.to_dict("records") == [{"item": first.item, "field": "baseColour",
                                        "values": {"ana": "Red", "ben": "Blue"}}]
    store.review(first.item, {"baseColour": "Navy Blue"}, ANN)  # the admin settles it
    assert disagreements(decisions(store, catalogue.root)).empty
    assert store.current([first.item])[first.item]["baseColour"] == "Navy Blue"


def test_effort_gold_accuracy_and_hours_saved(store, rows, tmp_path):
    catalogue, items = rows
    with pytest.raises(AccessDenied):
        set_gold(store, [items[0].item], BOB)
    assert set_gold(store, [item.item for item in items[:4]], ANN) == 4
    gold = gold_labels(store, catalogue.root)
    assert gold[items[0].item]["gender"] == items[0].baseline["gender"]
    for index, item in enumerate(items[:4]):  # bob gets 3 of 4 gold genders right, in 10 s each
        value = item.baseline["gender"] if index else ("Women" if item.baseline["gender"] != "Women" else "Men")
        store.review(item.item, {"gender": value}, BOB, seconds=10.0,
                     predicted={"gender": (item.baseline["gender"], 0.9)})
    store.review(items[4].item, {"gender": items[4].baseline["gender"]}, ANA, seconds=30.0)
    decided = decisions(store, catalogue.root)
    table = effort(decided, gold).set_index("reviewer")
    assert table.loc["bob", "decisions"] == 4 and table.loc["bob", "head_decisions"] == 4
    assert table.loc["bob", "seconds_per_decision"] == 10.0 and table.loc["ana", "seconds_per_decision"] == 30.0
    assert table.loc["bob", "gold_decisions"] == 4 and table.loc["bob", "gold_accuracy"] == 0.75
    assert (table.loc["bob", "kept"], table.loc["bob", "changed"]) == (0.75, 0.25)  # 3 took the proposal
    accuracy = gold_accuracy(decided, gold).set_index(["reviewer", "head"]).loc[("bob", "gender")]
    assert (accuracy["gold_decisions"], accuracy["right"]) == (4, 3)
    assert accuracy["accuracy_low"] < 0.75 < accuracy["accuracy_high"]

    photo = tmp_path / "new.png"
    photo.write_bytes(catalogue.image_path(int(catalogue.frame["id"].iloc[-1])).read_bytes())
    new = store.add_image_file(catalogue.root, photo, ANN)
    accept_confident(store, [new], {new.item: PhotoProposal({"gender": ("Men", 0.99), "usage": ("Casual", 0.99)})},
                     SourcePolicy.everywhere({"gender": 0.5, "usage": 0.5}, audit_share=0.0), ANN, run_id="r")
    totals = team_totals(store, catalogue.root, decided)
    # 4 x 10 s + 30 s over 5 head decisions; two tags accepted with no person at that pace.
    assert totals["auto_accepted"] == 2 and totals["people"] == 5
    assert totals["seconds_per_tag"] == pytest.approx(70 / 5)
    assert totals["hours_saved"] == pytest.approx(2 * 70 / 5 / 3600)


def test_a_gold_items_trusted_labels_are_the_catalogues_as_corrected_when_it_was_made_gold(store, rows):
    """A row corrected before it was made gold is trusted with its correction, the value a reviewer
    is shown, not the raw catalogue value; later edits leave the trusted labels as they were."""
    catalogue, items = rows
    first, second = items[:2]
    corrected = "Women" if first.baseline["gender"] != "Women" else "Men"
    store.review(first.item, {"gender": corrected}, ANA)
    assert set_gold(store, [first.item, second.item], ANN) == 2
    gold = gold_labels(store, catalogue.root)
    assert gold[first.item] == {**{head: value for head, value in first.baseline.items() if value is not None},
                                "gender": corrected}
    assert gold[second.item] == {head: value for head, value in second.baseline.items() if value is not None}
    store.label_many([first.item], "gender", first.baseline["gender"], ANN)  # a later bulk edit
    assert gold_labels(store, catalogue.root) == gold


def test_gold_rows_drawn_from_the_catalogue_take_its_corrected_labels_and_never_a_dropped_row(store, rows):
    catalogue, _ = rows
    items = store.add_catalogue_items(catalogue, catalogue.frame["id"].tolist(), ANN)
    dropped = {item.item for item in items[:10]}
    for item in items[:10]:
        store.mark(item.item, ReviewStatus.NOT_PRODUCT, ANA)
    for item in items[10:]:
        store.review(item.item, {"usage": "Travel"}, ANA)
    assert add_gold_rows(store, catalogue, len(items), ANN) == len(items) - 10  # the rows not dropped
    gold = gold_labels(store, catalogue.root)
    assert not set(gold) & dropped
    assert {labels["usage"] for labels in gold.values()} == {"Travel"}


def test_each_reviewers_gold_answer_is_scored_for_them_and_leaves_the_catalogue_as_it_was(store, rows):
    catalogue, items = rows
    item = items[0]
    set_gold(store, [item.item], ANN)
    gold = gold_labels(store, catalogue.root)
    trusted = gold[item.item]["gender"]
    wrong = "Women" if trusted != "Women" else "Men"
    store.answer_gold(item.item, {"gender": wrong}, ANA, seconds=5.0)
    store.answer_gold(item.item, {"gender": trusted}, BEN, seconds=7.0, predicted={"gender": (wrong, 0.8)})
    decided = decisions(store, catalogue.root)
    assert decided[["reviewer", "new", "kind", "seconds", "gold"]].values.tolist() == [
        ["ana", wrong, "correct", 5.0, True], ["ben", trusted, "accept", 7.0, True]]
    accuracy = gold_accuracy(decided, gold).set_index("reviewer")
    assert accuracy["accuracy"].to_dict() == {"ana": 0.0, "ben": 1.0}
    days = effort(decided, gold).set_index("reviewer")
    assert (days.loc["ana", "gold_decisions"], days.loc["ana", "gold_accuracy"]) == (1, 0.0)
    assert store.current([item.item])[item.item]["gender"] == item.baseline["gender"]  # nobody's answer applied
    assert store.current([item.item])[item.item]["status"] is None
    assert store.log_frame(catalogue.root).empty  # nor in the catalogue's log (and its export)
    assert disagreements(decided).empty  # nothing for a third person to settle: the right value is known


def test_seconds_must_be_a_duration(store, rows):
    _, items = rows
    with pytest.raises(ValueError, match="seconds must be a duration"):
        store.review(items[0].item, {"gender": "Men"}, BOB, seconds=-1)


def test_the_team_page_shows_the_numbers_and_a_lead_adds_gold_items(tmp_path, monkeypatch):
    """Local mode (the person is an admin, a lead): totals, effort with its CSV, agreement, the
    disagreements to settle, and gold items drawn from the catalogue."""
    from streamlit.testing.v1 import AppTest

    from conftest import REPO, point_at_workspace

    demo = generate_demo(tmp_path / "demo", n=50, seed=7)
    home = point_at_workspace(monkeypatch, tmp_path / "workspace", demo)
    catalogue = load_catalogue(demo)
    store = LabelStore(workspace=home)
    items = store.add_catalogue_items(catalogue, [int(i) for i in catalogue.frame["id"].iloc[:6]], ANN)
    for index, item in enumerate(items):
        store.review(item.item, {"gender": "Men"}, ANA, seconds=6.0)
        store.review(item.item, {"gender": "Men" if index else "Women"}, BEN, seconds=9.0)
    at = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=60)
    at.run()
    at.switch_page("../pages/team.py").run()
    assert not at.exception, at.exception
    assert [metric.value for metric in at.metric] == ["0", "12", "7.5", "0.0"]
    effort_table = next(frame.value for frame in at.dataframe if "seconds_per_decision" in frame.value.columns)
    assert sorted(effort_table["reviewer"]) == ["ana", "ben"]
    assert set(effort_table["decisions"]) == {6}
    pairs = next(frame.value for frame in at.dataframe if "kappa" in frame.value.columns)
    assert pairs[["reviewer_a", "reviewer_b", "items"]].values.tolist() == [["ana", "ben", 6]]
    assert any("1 head decisions on 1 photos were decided differently" in w.value for w in at.warning)
    at.number_input(key="team.gold_count").set_value(5)
    next(button for button in at.button if button.label == "Add gold items from the catalogue").click().run()
    assert not at.exception, at.exception
    assert [s.value for s in at.success] == ["5 catalogue rows are gold items now (5 in all)."]
    assert len(gold_labels(store, catalogue.root)) == 5
    at.button(key="team.settle").click().run()
    assert not at.exception, at.exception
    assert at.session_state["review.queue"] == [items[0].item]
