"""Shared queues (core.labels.leases) on SQLite and PostgreSQL: one item to one reviewer at a time,
a double-review item to two, and four reviewer processes working one queue of 400 items decide
each exactly once (twice for double-review items, by two people), none lost."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from sqlalchemy import insert

from core.access.roles import AccessDenied
from core.data.catalogue import DatasetKey, load_catalogue
from core.data.demo import generate_demo
from core.labels.leases import (
    TeamSettings,
    claim,
    decided_by,
    double_review,
    holders,
    next_leased,
    open_for,
    release,
    set_team_settings,
    team_settings,
)
from core.labels.tables import team_settings_table
from core.labels.team import gold_labels, set_gold

from conftest import ANA, ANN, BEN, BOB, REPO, save_beside_an_uncommitted_first_save
from test_labelstore import db_url, store  # noqa: F401  (the store on both databases)

REVIEWER = REPO / "tests" / "lease_reviewer.py"


@pytest.fixture()
def queue(store, tmp_path):
    catalogue = load_catalogue(generate_demo(tmp_path / "demo", n=50, seed=8))
    return catalogue, [item.item for item in store.add_catalogue_items(catalogue, catalogue.frame["id"].tolist(), ANN)]


def test_an_item_shown_to_one_reviewer_is_given_to_the_next_one_only_when_free(store, queue):
    _, items = queue
    assert next_leased(store, items, ANA) == items[0]
    assert next_leased(store, items, BEN) == items[1]  # ana holds the first
    assert holders(store, items[:2]) == {items[0]: "ana", items[1]: "ben"}
    assert claim(store, items[0], ANA) and not claim(store, items[0], BEN)  # renewed; still ana's
    assert next_leased(store, items, ANA, start=items[2]) == items[2]  # moving on frees the first
    assert holders(store, items[:3]) == {items[1]: "ben", items[2]: "ana"}
    assert claim(store, items[2], BEN, seconds=-1) is False  # a lease that ran out frees it ...
    assert claim(store, items[3], BOB, seconds=-1) and claim(store, items[3], BEN)  # ... for anyone
    store.review(items[1], {"gender": "Men"}, BEN)
    release(store, items[1], BEN)
    assert items[1] not in open_for(store, items, ANA, 0.0)  # decided: offered to nobody


def test_a_double_review_item_goes_to_two_different_people(store, queue):
    _, items = queue
    double = [item for item, twice in zip(items, double_review(items, 0.3)) if twice]
    single = [item for item, twice in zip(items, double_review(items, 0.3)) if not twice]
    assert 0.1 < len(double) / len(items) < 0.5
    store.review(double[0], {"gender": "Men"}, ANA)
    store.review(single[0], {"gender": "Men"}, ANA)
    assert double[0] in open_for(store, items, BEN, 0.3) and double[0] not in open_for(store, items, ANA, 0.3)
    assert single[0] not in open_for(store, items, BEN, 0.3)
    store.review(double[0], {"gender": "Women"}, BEN)
    assert double[0] not in open_for(store, items, BOB, 0.3)  # two people decided it: done


def test_a_gold_item_stays_open_to_every_reviewer_until_they_decided_it(store, queue):
    """Each reviewer who gets a gold item decides it (their answer is scored for them): one person's
    answer closes it for them alone, and leaves the catalogue as it was, for the next one to be shown."""
    catalogue, items = queue
    gold = items[0]
    set_gold(store, [gold], ANN)
    trusted = gold_labels(store, catalogue.root)[gold]["gender"]
    before = store.current([gold])[gold]
    store.answer_gold(gold, {"gender": "Women" if trusted != "Women" else "Men"}, ANA, seconds=4.0)
    assert gold not in open_for(store, items, ANA, 0.0) and decided_by(store, gold, ANA)
    assert gold in open_for(store, items, BEN, 0.0) and not decided_by(store, gold, BEN)
    assert next_leased(store, [gold], BEN) == gold
    assert store.current([gold])[gold] == before  # her wrong answer is not the catalogue's
    store.answer_gold(gold, {"gender": trusted}, BEN)
    assert gold not in open_for(store, items, BEN, 0.0) and gold in open_for(store, items, BOB, 0.0)
    store.review(items[1], {"gender": "Men"}, ANA)
    assert items[1] not in open_for(store, items, BOB, 0.0)  # any other item is done once decided
    with pytest.raises(ValueError, match=f"item {items[1]} is not a gold item"):
        store.answer_gold(items[1], {"gender": "Men"}, BOB)


def test_a_lead_sets_the_shares(store, queue):
    catalogue, _ = queue
    assert team_settings(store, catalogue.root) == TeamSettings(0.0, 0.0)
    with pytest.raises(AccessDenied):
        set_team_settings(store, catalogue.root, TeamSettings(0.1, 0.1), BOB)
    set_team_settings(store, catalogue.root, TeamSettings(0.05, 0.2), ANN)
    assert team_settings(store, catalogue.root) == TeamSettings(0.05, 0.2)
    with pytest.raises(ValueError, match="rate between 0 and 1"):
        set_team_settings(store, catalogue.root, TeamSettings(5, 0.2), ANN)


def test_two_first_saves_of_the_shares_at_once_both_succeed(store, queue):
    """A lead's first save meets another's, not yet committed: it waits for it, then updates it (an
    update-then-insert found nothing to update and its insert failed on the key, on PostgreSQL)."""
    catalogue, _ = queue
    first = insert(team_settings_table).values(dataset=DatasetKey.of(catalogue.root), gold_share=0.1,
                                               double_share=0.1, set_by="ada", at="2026-01-01")
    failures = save_beside_an_uncommitted_first_save(
        store, first, lambda: set_team_settings(store, catalogue.root, TeamSettings(0.05, 0.2), ANN))
    assert not failures, failures
    assert team_settings(store, catalogue.root) == TeamSettings(0.05, 0.2)


@pytest.mark.slow
def test_four_reviewers_on_one_queue_of_400_decide_each_item_once_and_lose_none(store, db_url, tmp_path):
    catalogue = load_catalogue(generate_demo(tmp_path / "big", n=400, seed=9))
    items = [item.item for item in store.add_catalogue_items(catalogue, catalogue.frame["id"].tolist(), ANN)]
    share = 0.1
    names = ["r1", "r2", "r3", "r4"]
    processes = [subprocess.Popen([sys.executable, str(REVIEWER), db_url, name, str(share), *map(str, items)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for name in names]
    for process in processes:
        assert process.stdout.readline().strip() == "ready"
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    counts = [int(output.split()[-1]) for output in outputs]
    log = store.log_frame(catalogue.root)
    decisions = log[log["field"] == "gender"]
    per_item = decisions.groupby("product_id")["reviewer"].agg(list)
    twice = set(pd.Series(items)[double_review(items, share)].tolist())
    by_item = {item.product_id: item.item for item in store.dataset_items(catalogue.root)}
    assert len(per_item) == 400  # none lost
    for product_id, reviewers in per_item.items():
        expected = 2 if by_item[product_id] in twice else 1
        assert len(reviewers) == expected and len(set(reviewers)) == expected, (product_id, reviewers)
    assert sum(counts) == len(decisions) == 400 + len(twice)
    assert all(count > 0 for count in counts)  # the work was shared
