"""core.review: queue order, what each head offers and starts at, filters and navigation."""

import pandas as pd
import pytest

from core.data.schema import OTHER_CLASS
from core.review import (
    choices, filter_items, label_issue_ids, least_confident_ids, next_item, proposed_label, reviewed_count,
)


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


def test_proposed_label_prefers_the_decision_then_the_model_then_the_catalogue():
    offered = ["Shirts", "Tshirts"]
    guesses = [(OTHER_CLASS, 0.7), ("Tshirts", 0.2), ("Shirts", 0.1)]
    assert proposed_label(guesses, "Shirts", reviewed=False, offered=offered) == "Tshirts"  # Other is not a label
    assert proposed_label(guesses, "Shirts", reviewed=True, offered=offered) == "Shirts"
    assert proposed_label([(OTHER_CLASS, 1.0)], "Shirts", reviewed=False, offered=offered) == "Shirts"
    assert proposed_label([], None, reviewed=False, offered=offered) is None


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
