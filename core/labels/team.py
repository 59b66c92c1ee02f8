"""A review team's numbers, from the label store's log: effort (decisions, seconds per decision,
what share kept the proposal, changed it or typed a new value), accuracy on gold items, agreement
between reviewers on items two of them decided, the disagreements left to settle, and what the
trust layer saved (tags accepted with no person, in reviewer-hours at the team's own pace).

A person's decision on a head is their latest log row of kind ACCEPT (kept the proposal or the
current value), CORRECT (changed it) or NEW_VALUE (typed a value the schema did not know) on
that item and head, not undone, or their latest answer on a gold item (below). Its seconds are
those of its action: from the item shown to the decision, measured on the server
(LabelStore.review's `seconds`).

Gold items are catalogue rows a lead trusts (`set_gold`), mixed into shared queues: a reviewer's
decision on one is scored against its trusted value. Every reviewer who gets a gold item decides
it, and in a shared queue their decision is an answer (LabelStore.answer_gold) that leaves the
catalogue as it was: a wrong answer is never applied, the next reviewer is shown the same values,
and two reviewers who answer differently leave nothing to settle (the right value is known).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import delete, false, insert, select, true

from core.access.roles import Actor, Permission, require
from core.data import HEADS
from core.data.catalogue import Catalogue, DatasetKey
from core.labels.checks import check_heads, check_id
from core.labels.store import LabelStore
from core.labels.tables import (
    PERSON_DECISIONS,
    STATUS,
    ItemKind,
    LogKind,
    ReviewStatus,
    gold_answers_table,
    gold_table,
    items_table,
    log_table,
    undone_actions,
)
from core.trust.abstention import clopper_pearson

Dataset = str | Path | Catalogue
MIN_SHARED = 5  # pairs of reviewers with fewer items in common get no kappa: it would be noise
DECISION_COLUMNS = ["action", "seq", "at", "reviewer", "item", "field", "new", "kind", "seconds", "gold"]
EFFORT_COLUMNS = ["reviewer", "day", "decisions", "head_decisions", "seconds_per_decision", "kept", "changed",
                  "typed", "gold_decisions", "gold_accuracy", "shared_decisions", "agreement"]


def decisions(store: LabelStore, dataset: Dataset) -> pd.DataFrame:
    """Every person's decision on a head of `dataset`'s items (module docstring), oldest first;
    columns DECISION_COLUMNS, gold True for a gold item's answer (its seq is the answers' own)."""
    undone, of_dataset = undone_actions(), items_table.c.dataset == DatasetKey.of(dataset)
    columns = [column for column in DECISION_COLUMNS if column != "gold"]  # the log's and the answers' alike
    logged = (
        select(*(log_table.c[column] for column in columns), false().label("gold"))
        .select_from(log_table.join(items_table, log_table.c.item == items_table.c.item))
        .where(of_dataset, log_table.c.kind.in_(PERSON_DECISIONS), log_table.c.action.not_in(undone),
               log_table.c.batch.is_(None))  # a bulk edit is no look at a photo
    )
    answered = (
        select(*(gold_answers_table.c[column] for column in columns), true().label("gold"))
        .select_from(gold_answers_table.join(items_table, gold_answers_table.c.item == items_table.c.item))
        .where(of_dataset)
    )
    with store.reader.begin() as connection:
        rows = pd.DataFrame([*connection.execute(logged), *connection.execute(answered)], columns=DECISION_COLUMNS)
    rows = rows.astype({"gold": bool}).sort_values(["at", "seq"], kind="stable")
    return rows.drop_duplicates(["reviewer", "item", "field"], keep="last").reset_index(drop=True)


def set_gold(store: LabelStore, items: Iterable[int], actor: Actor,
             labels: Mapping[int, Mapping[str, str]] | None = None) -> int:
    """Make `items` gold (Permission.LEAD): their trusted labels are `labels[item]` where given,
    else their current values in the store (the catalogue's, as corrected: what a reviewer is shown),
    kept as they are now: a later edit of the item does not change them, making it gold again does.
    An item already gold takes the new labels. Returns how many items are gold now of those given."""
    require(actor, Permission.LEAD)
    current = store.current(sorted({check_id(item, "item") for item in items}))
    rows = []
    for item, values in current.items():
        trusted = dict(check_heads((labels or {}).get(item, {}), "labels")) or {
            head: values[head] for head in HEADS if values[head] is not None}
        if trusted:
            rows.append({"item": item, "labels": json.dumps(trusted), "set_by": actor.identity, "at": _now()})
    with store.engine.begin() as connection:
        if rows:
            connection.execute(delete(gold_table).where(gold_table.c.item.in_([row["item"] for row in rows])))
            connection.execute(insert(gold_table), rows)
    return len(rows)


def add_gold_rows(store: LabelStore, catalogue: Catalogue, count: int, actor: Actor) -> int:
    """Make `count` catalogue rows gold that are not yet (Permission.LEAD), drawn at random (seeded
    by how many there are, so a retried draw is the same), none a reviewer dropped as not a product;
    their labels are trusted as the store holds them (set_gold: the catalogue's, as corrected).
    Returns how many were added (fewer when the catalogue runs out)."""
    require(actor, Permission.LEAD)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"the number of gold items must be a positive whole number, got {count!r}")
    gold = gold_labels(store, catalogue)
    rows = np.random.default_rng(len(gold)).permutation(catalogue.frame["id"].to_numpy())
    taken = {item.product_id for item, values in store.dataset_state(catalogue)
             if item.kind == ItemKind.CATALOGUE and (item.item in gold or values[STATUS] == ReviewStatus.NOT_PRODUCT)}
    fresh = [int(product_id) for product_id in rows if int(product_id) not in taken][:count]
    return set_gold(store, [item.item for item in store.add_catalogue_items(catalogue, fresh, actor)], actor)


def gold_labels(store: LabelStore, dataset: Dataset) -> dict[int, dict[str, str]]:
    """item -> its trusted labels, for `dataset`'s gold items."""
    query = (select(gold_table.c.item, gold_table.c.labels)
             .select_from(gold_table.join(items_table, gold_table.c.item == items_table.c.item))
             .where(items_table.c.dataset == DatasetKey.of(dataset)))
    with store.reader.begin() as connection:
        return {item: json.loads(labels) for item, labels in connection.execute(query)}


def gold_scores(decided: pd.DataFrame, gold: Mapping[int, Mapping[str, str]]) -> pd.DataFrame:
    """Each decision (decisions()) on a gold item's trusted head, with right: it equals the trusted value."""
    trusted = pd.DataFrame([(item, head, value) for item, values in gold.items() for head, value in values.items()],
                           columns=["item", "field", "trusted"])
    scored = decided.merge(trusted, on=["item", "field"])
    return scored.assign(right=scored["new"] == scored["trusted"])


def gold_accuracy(decided: pd.DataFrame, gold: Mapping[int, Mapping[str, str]]) -> pd.DataFrame:
    """Per reviewer and head: gold decisions, right, accuracy and its 95 % Clopper-Pearson interval."""
    scored = gold_scores(decided, gold)
    records = []
    for (reviewer, head), rows in scored.groupby(["reviewer", "field"], sort=True):
        right, total = int(rows["right"].sum()), len(rows)
        low, high = clopper_pearson(right, total)
        records.append({"reviewer": reviewer, "head": head, "gold_decisions": total, "right": right,
                        "accuracy": right / total, "accuracy_low": low, "accuracy_high": high})
    return pd.DataFrame(records, columns=["reviewer", "head", "gold_decisions", "right", "accuracy", "accuracy_low",
                                          "accuracy_high"])


def effort(decided: pd.DataFrame, gold: Mapping[int, Mapping[str, str]]) -> pd.DataFrame:
    """Per reviewer and day (UTC): photos decided, head decisions, median seconds per photo decided
    (actions with seconds; NaN without), the shares kept / changed / typed, gold decisions with the
    share right, and head decisions someone else also made with the share that agrees with every
    other's; columns EFFORT_COLUMNS."""
    if decided.empty:
        return pd.DataFrame(columns=EFFORT_COLUMNS)
    decided = decided.assign(day=decided["at"].str[:10])
    values = decided.groupby(["item", "field"])["new"].agg(list)
    others = decided.apply(lambda row: _others(values[(row["item"], row["field"])], row["new"]), axis=1)
    decided = decided.assign(shared=others.map(bool), agrees=[all(value == mine for value in rest) and bool(rest)
                                                             for rest, mine in zip(others, decided["new"])])
    scored = gold_scores(decided, gold).assign(day=lambda frame: frame["at"].str[:10])
    records = []
    for (reviewer, day), rows in decided.groupby(["reviewer", "day"], sort=True):
        actions = rows.drop_duplicates("action")
        gold_rows = scored[(scored["reviewer"] == reviewer) & (scored["day"] == day)]
        records.append({
            "reviewer": reviewer, "day": day, "decisions": len(actions), "head_decisions": len(rows),
            "seconds_per_decision": float(actions["seconds"].median()) if actions["seconds"].notna().any() else np.nan,
            "kept": float((rows["kind"] == LogKind.ACCEPT).mean()),
            "changed": float((rows["kind"] == LogKind.CORRECT).mean()),
            "typed": float((rows["kind"] == LogKind.NEW_VALUE).mean()),
            "gold_decisions": len(gold_rows),
            "gold_accuracy": float(gold_rows["right"].mean()) if len(gold_rows) else np.nan,
            "shared_decisions": int(rows["shared"].sum()),
            "agreement": float(rows.loc[rows["shared"], "agrees"].mean()) if rows["shared"].any() else np.nan,
        })
    return pd.DataFrame(records, columns=EFFORT_COLUMNS)


def _others(values: list, mine) -> list:
    """The other reviewers' values of an (item, head): `values` less one `mine`."""
    rest = list(values)
    rest.remove(mine)
    return rest


def agreement(decided: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float | None]]:
    """On items two or more reviewers decided: per head and pair of reviewers, the items both
    decided, the share they agree on and Cohen's kappa (scikit-learn; None under MIN_SHARED items
    or where kappa is undefined); and per head over all reviewers, Krippendorff's alpha (nominal;
    None where fewer than two reviewers share an item)."""
    import krippendorff
    from sklearn.metrics import cohen_kappa_score

    pairs, alphas = [], {}
    for head, rows in decided.groupby("field", sort=False):
        table = rows.pivot_table(index="reviewer", columns="item", values="new", aggfunc="last")
        table = table.loc[:, table.notna().sum() >= 2]
        if table.empty:
            continue
        for first, second in combinations(table.index, 2):
            both = table.loc[[first, second]].dropna(axis=1)
            if both.empty:
                continue
            a, b = both.loc[first].tolist(), both.loc[second].tolist()
            defined = len(a) >= MIN_SHARED and len(set(a) | set(b)) > 1
            pairs.append({"head": head, "reviewer_a": first, "reviewer_b": second, "items": len(a),
                          "agree": float(np.mean([x == y for x, y in zip(a, b)])),
                          "kappa": float(cohen_kappa_score(a, b)) if defined else None})
        codes = {value: code for code, value in enumerate(pd.unique(table.stack().dropna()))}  # pandas 3 keeps NaN
        data = table.map(lambda value: codes.get(value, np.nan) if isinstance(value, str) else np.nan)
        alphas[head] = (float(krippendorff.alpha(reliability_data=data.to_numpy(dtype=float),
                                                 level_of_measurement="nominal")) if len(codes) > 1 else None)
    return pd.DataFrame(pairs, columns=["head", "reviewer_a", "reviewer_b", "items", "agree", "kappa"]), alphas


def disagreements(decided: pd.DataFrame) -> pd.DataFrame:
    """The (item, head) that two reviewers decided differently and nobody has settled since (a
    decision by a third person settles it, and the catalogue takes it): columns item, field,
    values ({reviewer: value} of the two), in item order. An admin's queue to settle. Answers on a
    gold item are left out: its right value is known, and the catalogue holds it."""
    records = []
    for (item, head), rows in decided[~decided["gold"]].groupby(["item", "field"], sort=True):
        first_two = rows.drop_duplicates("reviewer").head(2)
        if len(first_two) < 2 or first_two["new"].nunique(dropna=False) < 2:
            continue
        settled = rows[~rows["reviewer"].isin(first_two["reviewer"])]
        if settled.empty or settled["seq"].max() < first_two["seq"].max():
            records.append({"item": int(item), "field": head, "values": dict(zip(first_two["reviewer"],
                                                                                   first_two["new"]))})
    return pd.DataFrame(records, columns=["item", "field", "values"])


def team_totals(store: LabelStore, dataset: Dataset, decided: pd.DataFrame) -> dict:
    """{"auto_accepted": tags accepted with no person (not undone), "people": tags people decided,
    "seconds_per_tag": the team's measured pace (seconds of the actions that have them over their
    head decisions; None before any), "hours_saved": auto_accepted at that pace, in hours (None
    without a pace)}."""
    undone = undone_actions()
    query = (select(log_table.c.item).select_from(log_table.join(items_table, log_table.c.item == items_table.c.item))
             .where(items_table.c.dataset == DatasetKey.of(dataset), log_table.c.kind == LogKind.AUTO_ACCEPT,
                    log_table.c.field.in_(HEADS), log_table.c.action.not_in(undone)))
    with store.reader.begin() as connection:
        automatic = len(connection.execute(query).all())
    timed = decided[decided["seconds"].notna()]
    seconds = timed.drop_duplicates("action")["seconds"].sum()
    pace = float(seconds / len(timed)) if len(timed) else None
    return {"auto_accepted": automatic, "people": len(decided), "seconds_per_tag": pace,
            "hours_saved": None if pace is None else automatic * pace / 3600}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")
