"""Shared queues without collisions: while an item is shown to a reviewer it is leased to them for
LEASE_SECONDS (renewed while they look), in the database, so that it holds across processes and
machines; another reviewer working the same queue is given the next item nobody holds. A lease
ends when it runs out or its holder moves on; a decided item is done and offered to nobody, but
a double-review item (drawn at the team's double share by a hash of the item) stays open until
two different people decided it, and a gold item (core.labels.team) stays open to everyone who has
not decided it yet (their answer, LabelStore.answer_gold, is scored for them alone); neither is
ever offered twice to the same person.

The claim is one statement (INSERT ... ON CONFLICT DO UPDATE ... WHERE the lease is free or
already ours), so two reviewers asking at once cannot both win it, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from core.access.database import upsert
from core.access.roles import Actor, Permission, require
from core.data.catalogue import Catalogue, DatasetKey
from core.data.split import id_uniform
from core.labels.checks import check_id
from core.labels.store import LabelStore
from core.labels.tables import (
    PERSON_DECISIONS,
    STATUS,
    current_table,
    gold_answers_table,
    gold_table,
    leases_table,
    log_table,
    team_settings_table,
    undone_actions,
)
from core.trust.sources import check_share

LEASE_SECONDS = 300  # an item shown is held this long unless renewed: a reviewer who walks away frees it
_DOUBLE_SALT = 0x64626c72  # "dblr": double-review draws independent of the audits' and the split's


@dataclass(frozen=True)
class TeamSettings:
    """What a lead set for a dataset's shared queues."""

    gold_share: float = 0.0  # gold items mixed into a queue, per item of it
    double_share: float = 0.0  # items that two reviewers decide


def team_settings(store: LabelStore, dataset: str | Path | Catalogue) -> TeamSettings:
    query = select(team_settings_table.c.gold_share, team_settings_table.c.double_share).where(
        team_settings_table.c.dataset == DatasetKey.of(dataset))
    with store.reader.begin() as connection:
        row = connection.execute(query).first()
    return TeamSettings() if row is None else TeamSettings(float(row.gold_share), float(row.double_share))


def set_team_settings(store: LabelStore, dataset: str | Path | Catalogue, settings: TeamSettings,
                      actor: Actor) -> None:
    """Set the dataset's shares (Permission.LEAD); each a rate in [0, 1]."""
    require(actor, Permission.LEAD)
    row = {"dataset": DatasetKey.of(dataset), "gold_share": check_share(settings.gold_share),
           "double_share": check_share(settings.double_share), "set_by": actor.identity,
           "at": _now().isoformat(timespec="microseconds")}
    with store.engine.begin() as connection:  # one statement: two leads saving a first time at once never clash
        connection.execute(upsert(connection, team_settings_table, row, ("dataset",)))


def double_review(items: Sequence[int], share: float) -> np.ndarray:
    """bool [n]: which of `items` two reviewers decide, at `share` (a hash of the item)."""
    return id_uniform(np.asarray(items, dtype=np.int64), _DOUBLE_SALT) < check_share(share)


def claim(store: LabelStore, item: int, actor: Actor, seconds: int = LEASE_SECONDS) -> bool:
    """Lease `item` to `actor` for `seconds` (or renew their lease); False when someone else holds it."""
    require(actor, Permission.REVIEW)
    item, now = check_id(item, "item"), _now()
    until = (now + timedelta(seconds=seconds)).isoformat(timespec="microseconds")
    with store.engine.begin() as connection:
        statement = upsert(connection, leases_table, {"item": item, "reviewer": actor.identity, "until": until},
                           ("item",), where=(leases_table.c.until < now.isoformat(timespec="microseconds"))
                           | (leases_table.c.reviewer == actor.identity))
        # RETURNING says whether the row was written: rowcount is not reliable for an upsert on every driver.
        return connection.execute(statement.returning(leases_table.c.item)).first() is not None


def release(store: LabelStore, item: int, actor: Actor) -> None:
    """End `actor`'s lease of `item`, if they hold it."""
    with store.engine.begin() as connection:
        connection.execute(delete(leases_table).where(leases_table.c.item == check_id(item, "item"),
                                                      leases_table.c.reviewer == actor.identity))


def holders(store: LabelStore, items: Sequence[int]) -> dict[int, str]:
    """item -> who holds it now, for those of `items` leased and not run out."""
    now = _now().isoformat(timespec="microseconds")
    with store.reader.begin() as connection:
        rows = connection.execute(select(leases_table.c.item, leases_table.c.reviewer)
                                  .where(leases_table.c.item.in_(list(items)), leases_table.c.until >= now)).all()
    return {item: reviewer for item, reviewer in rows}


def open_for(store: LabelStore, items: Sequence[int], actor: Actor, double_share: float) -> list[int]:
    """The items of `items` (in order) still open to `actor`: a gold item they have not decided
    (whoever else did), an unreviewed item, or a double-review item that fewer than two people
    decided and `actor` has not."""
    items = [check_id(item, "item") for item in items]
    double = dict(zip(items, double_review(items, double_share))) if items else {}
    with store.reader.begin() as connection:
        status = dict(connection.execute(
            select(current_table.c.item, current_table.c.value)
            .where(current_table.c.item.in_(items), current_table.c.field == STATUS)).all())
        gold = set(connection.execute(select(gold_table.c.item).where(gold_table.c.item.in_(items))).scalars())
        deciders = _deciders(connection, [item for item in items if double[item] or item in gold])
    mine = {item for item, people in deciders.items() if actor.identity in people}
    return [item for item in items
            if (item not in mine if item in gold else
                (status.get(item) is None and not deciders.get(item))
                or (double[item] and len(deciders.get(item, ())) < 2 and item not in mine))]


def _deciders(connection: Connection, items: list[int]) -> dict[int, set[str]]:
    """item -> who decided it, of `items`: a person's decision in the log (not undone) or a gold answer."""
    undone = undone_actions()
    decided = (select(log_table.c.item, log_table.c.reviewer)
               .where(log_table.c.item.in_(items), log_table.c.kind.in_(PERSON_DECISIONS),
                      log_table.c.action.not_in(undone))
               .union(select(gold_answers_table.c.item, gold_answers_table.c.reviewer)
                      .where(gold_answers_table.c.item.in_(items))))
    deciders: dict[int, set[str]] = {}
    for item, reviewer in connection.execute(decided):
        deciders.setdefault(item, set()).add(reviewer)
    return deciders


def decided_by(store: LabelStore, item: int, actor: Actor) -> bool:
    """Whether `actor` wrote a decision on `item` that is not undone (a review or a mark), or answered
    it as a gold item."""
    item, undone = check_id(item, "item"), undone_actions()
    logged = select(log_table.c.seq).where(log_table.c.item == item, log_table.c.reviewer == actor.identity,
                                           log_table.c.undoes.is_(None), log_table.c.action.not_in(undone)).limit(1)
    answered = select(gold_answers_table.c.seq).where(gold_answers_table.c.item == item,
                                                      gold_answers_table.c.reviewer == actor.identity).limit(1)
    with store.reader.begin() as connection:
        return connection.execute(logged).first() is not None or connection.execute(answered).first() is not None


def next_leased(store: LabelStore, items: Sequence[int], actor: Actor, double_share: float = 0.0,
                start: int | None = None) -> int | None:
    """The first item of `items` from `start` (an item id; the first when None or gone) that is open
    to `actor` (open_for) and that they now hold (claim); their lease of any other item of `items`
    ends. None when every open item is held by someone else."""
    candidates = open_for(store, items, actor, double_share)
    if start in candidates:
        position = candidates.index(start)
        candidates = candidates[position:] + candidates[:position]
    for item in candidates:
        if not claim(store, item, actor):
            continue
        if not open_for(store, [item], actor, double_share):  # decided while we asked: its holder let go
            release(store, item, actor)
            continue
        for other, holder in holders(store, [i for i in items if i != item]).items():
            if holder == actor.identity:
                release(store, other, actor)
        return item
    return None


def _now() -> datetime:
    return datetime.now(timezone.utc)
