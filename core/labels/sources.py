"""The label store's records of trust per source (core.trust.sources): which heads a source's own
reviewed photos certify, its audit share, its audits and their outcomes, and what that makes of
each head's rule for auto-acceptance. Reads and writes the tables core.labels.tables describes
(source_settings, source_calibrations, audits, and the log's person decisions).

A source's decisions for a run are the latest decision a person made on each head of each of the
source's photos (not undone), where the run's proposal and its confidence were logged beside it:
what the Review page logs when a reviewer decides a photo with that run's proposals shown.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import case, func, insert, select

from core.access.database import upsert
from core.access.roles import Actor, Permission, require
from core.data.catalogue import Catalogue, DatasetKey
from core.labels.queues import SourcePolicy, gated_rules
from core.labels.store import LabelStore
from core.labels.tables import (
    DEFAULT_SOURCES,
    PERSON_DECISIONS,
    LogKind,
    audits_table,
    items_table,
    log_table,
    source_calibrations_table,
    source_settings_table,
    undone_actions,
)
from core.trust.abstention import DELTA, Selection
from core.trust.layer import Calibration, Trust
from core.trust.sources import (
    AUDIT_SHARE,
    NEW_SOURCE_AUDIT_SHARE,
    Alarm,
    HeadRule,
    check_share,
    check_source,
    head_rules,
    more_rows_needed,
    reviewed_whole,
    source_selection,
    watch,
)

Dataset = str | Path | Catalogue


def _source_column():
    """An item's source in SQL: its own, else its kind's default."""
    return func.coalesce(items_table.c.source,
                         case(*((items_table.c.kind == kind, name) for kind, name in DEFAULT_SOURCES.items())))


def sources(store: LabelStore, dataset: Dataset) -> dict[str, int]:
    """The sources of `dataset`'s items -> how many items each, largest first."""
    column = _source_column().label("source")
    query = (select(column, func.count()).where(items_table.c.dataset == DatasetKey.of(dataset))
             .group_by(column).order_by(func.count().desc(), column))
    with store.reader.begin() as connection:
        return {name: int(count) for name, count in connection.execute(query)}


def audit_share(store: LabelStore, dataset: Dataset, source: str, certified: bool = False) -> float:
    """The share of a source's accepted photos left for a person as an audit: the admin's, else
    AUDIT_SHARE for a source `certified` on its own photos, NEW_SOURCE_AUDIT_SHARE for one that is not."""
    query = select(source_settings_table.c.audit_share).where(
        source_settings_table.c.dataset == DatasetKey.of(dataset), source_settings_table.c.source == source)
    with store.reader.begin() as connection:
        share = connection.execute(query).scalar_one_or_none()
    if share is not None:
        return float(share)
    return AUDIT_SHARE if certified else NEW_SOURCE_AUDIT_SHARE


def set_audit_share(store: LabelStore, dataset: Dataset, source: str, share: float, actor: Actor) -> None:
    """Set a source's audit share (Permission.CALIBRATE); 0 turns audits off, and with them the alarm."""
    require(actor, Permission.CALIBRATE)
    source, share, dataset = check_source(source), check_share(share), DatasetKey.of(dataset)
    row = {"dataset": dataset, "source": source, "audit_share": share, "set_by": actor.identity, "at": _now()}
    with store.engine.begin() as connection:  # one upsert: two admins' first saves at once do not clash
        connection.execute(upsert(connection, source_settings_table, row, ("dataset", "source")))


def decisions(store: LabelStore, dataset: Dataset, source: str, run_id: str) -> pd.DataFrame:
    """The source's decisions for `run_id` (module docstring): one row per (item, field) with columns
    item, field, predicted, p, new, seq, at, oldest first; correct is new == predicted."""
    undone = undone_actions()
    query = (
        select(log_table.c.item, log_table.c.field, log_table.c.predicted, log_table.c.p, log_table.c.new,
               log_table.c.seq, log_table.c.at, log_table.c.run_id)
        .select_from(log_table.join(items_table, log_table.c.item == items_table.c.item))
        .where(items_table.c.dataset == DatasetKey.of(dataset), _source_column() == source,
               log_table.c.kind.in_(PERSON_DECISIONS), log_table.c.action.not_in(undone))
        .order_by(log_table.c.seq)
    )
    with store.reader.begin() as connection:
        rows = pd.DataFrame(connection.execute(query).all(),
                            columns=["item", "field", "predicted", "p", "new", "seq", "at", "run_id"])
    # The latest decision on each head counts (a later one corrects an earlier), if it saw this run's proposal.
    rows = rows.drop_duplicates(["item", "field"], keep="last")
    rows = rows[(rows["run_id"] == run_id) & rows["predicted"].notna() & rows["p"].notna()]
    rows = rows.assign(correct=rows["new"] == rows["predicted"])
    return rows.drop(columns="run_id").reset_index(drop=True)


def source_selections(store: LabelStore, dataset: Dataset, source: str, run_id: str,
                      run_selections: dict[str, Selection]) -> dict[str, Selection]:
    """Per head the run certifies anything on (`run_selections`, the run's calibration), the
    Selection on the source's decisions (core.trust.sources.source_selection)."""
    rows = decisions(store, dataset, source, run_id)
    selections = {}
    for head, run_selection in run_selections.items():
        decided = rows[rows["field"] == head]
        selections[head] = source_selection(decided["p"].to_numpy(np.float64), decided["correct"].to_numpy(bool),
                                            run_selection)
    return selections


@dataclass(frozen=True)
class SourceCalibration:
    """A source's certification for a run, as an admin recorded it."""

    selections: dict[str, Selection]
    by: str
    at: str  # UTC ISO; audits before it do not count towards the alarm


def calibrate_source(store: LabelStore, dataset: Dataset, source: str, run_id: str,
                     run_selections: dict[str, Selection], actor: Actor) -> SourceCalibration:
    """Certify the source's heads on its decisions so far and record it (Permission.CALIBRATE): its
    thresholds replace the run's for its photos, and its alarms start again."""
    require(actor, Permission.CALIBRATE)
    source = check_source(source)
    selections = source_selections(store, dataset, source, run_id, run_selections)
    at = _now()
    with store.engine.begin() as connection:
        connection.execute(insert(source_calibrations_table).values(
            dataset=DatasetKey.of(dataset), source=source, run_id=run_id, by=actor.identity, at=at,
            selections=json.dumps({head: selection.to_dict() for head, selection in selections.items()})))
    return SourceCalibration(selections, actor.identity, at)


def source_calibration(store: LabelStore, dataset: Dataset, source: str, run_id: str) -> SourceCalibration | None:
    """The source's latest certification for `run_id`, None before any."""
    table = source_calibrations_table
    query = (select(table.c.selections, table.c.by, table.c.at)
             .where(table.c.dataset == DatasetKey.of(dataset), table.c.source == source, table.c.run_id == run_id)
             .order_by(table.c.seq.desc()).limit(1))
    with store.reader.begin() as connection:
        row = connection.execute(query).first()
    if row is None:
        return None
    selections = {head: Selection.from_dict(values) for head, values in json.loads(row.selections).items()}
    return SourceCalibration(selections, row.by, row.at)


def audit_outcomes(store: LabelStore, dataset: Dataset, source: str, run_id: str, since: str | None,
                   target_error: float) -> pd.DataFrame:
    """The source's audits for `run_id` (from `since`, UTC ISO, on) that a person has decided, of
    tags accepted at `target_error` or a stricter one: columns item, field, predicted, p,
    threshold, new, wrong, in the order decided. (A tag accepted at a looser target may be wrong
    more often than `target_error` by design; one accepted at a stricter target may not, so it is
    evidence for a test at this target. Audits whose target was not kept are left out.)"""
    query = (select(audits_table.c.item, audits_table.c.field, audits_table.c.predicted, audits_table.c.p,
                    audits_table.c.threshold, audits_table.c.at)
             .select_from(audits_table.join(items_table, audits_table.c.item == items_table.c.item))
             .where(items_table.c.dataset == DatasetKey.of(dataset), _source_column() == source,
                    audits_table.c.run_id == run_id, audits_table.c.target <= target_error + 1e-12)
             .order_by(audits_table.c.seq))
    if since is not None:
        query = query.where(audits_table.c.at >= since)
    with store.reader.begin() as connection:
        audits = pd.DataFrame(connection.execute(query).all(),
                              columns=["item", "field", "predicted", "p", "threshold", "at"])
    audits = audits.drop_duplicates(["item", "field"], keep="last")
    decided = decisions_any_run(store, audits["item"].unique().tolist())
    joined = audits.drop(columns="at").merge(decided, on=["item", "field"]).sort_values("seq")
    return joined.assign(wrong=joined["new"] != joined["predicted"]).drop(columns="seq").reset_index(drop=True)


def decisions_any_run(store: LabelStore, item_ids: list[int]) -> pd.DataFrame:
    """The latest person decision (not undone) on each head of `item_ids`: columns item, field, new, seq."""
    undone = undone_actions()
    found = []
    with store.reader.begin() as connection:
        for start in range(0, len(item_ids), 5_000):
            query = (select(log_table.c.item, log_table.c.field, log_table.c.new, log_table.c.seq)
                     .where(log_table.c.item.in_(item_ids[start:start + 5_000]),
                            log_table.c.kind.in_(PERSON_DECISIONS), log_table.c.action.not_in(undone))
                     .order_by(log_table.c.seq))
            found.extend(connection.execute(query).all())
    rows = pd.DataFrame(found, columns=["item", "field", "new", "seq"])
    return rows.drop_duplicates(["item", "field"], keep="last")


def alarms(store: LabelStore, dataset: Dataset, source: str, run_id: str, target_error: float,
           since: str | None) -> dict[str, Alarm]:
    """Per head with audits decided since `since`: the alarm on them (core.trust.sources.watch)."""
    outcomes = audit_outcomes(store, dataset, source, run_id, since, target_error)
    return {head: watch(rows["wrong"].to_numpy(bool), target_error) for head, rows in outcomes.groupby("field")}


@dataclass(frozen=True)
class SourceTrust:
    """What a source's photos may be accepted under, for one run at one target error."""

    source: str
    rules: dict[str, HeadRule]
    trial: dict[str, HeadRule]  # while every photo goes to a person: the rules tried on them as audits ({} else)
    alarms: dict[str, Alarm]
    calibration: SourceCalibration | None
    selections: dict[str, Selection]  # on the decisions so far (what a recalibration would certify)
    audit_share: float

    def more_needed(self, head: str, target_error: float) -> int | None:
        """More decided photos of this source that would certify `head` at `target_error` (0: they do now)."""
        return more_rows_needed(self.selections[head], target_error) if head in self.selections else None


def source_trust(store: LabelStore, dataset: Dataset, source: str, run_id: str,
                 run_thresholds: dict[str, float | None], run_selections: dict[str, Selection],
                 target_error: float, delta: float = DELTA) -> SourceTrust:
    """The source's rule per head at `target_error`: its own certification where an admin recorded
    one, else the run's (gated), stopped where its alarm fired since that certification; none at
    all while every photo of the source goes to a person (its audit share is 100 %, the default
    until it is certified), when those rules are its `trial`."""
    calibration = source_calibration(store, dataset, source, run_id)
    certified = None if calibration is None else {
        head: selection.threshold(target_error, delta) for head, selection in calibration.selections.items()}
    fired = alarms(store, dataset, source, run_id, target_error, None if calibration is None else calibration.at)
    rules, trial = head_rules(run_thresholds, certified, fired), {}
    share = audit_share(store, dataset, source, certified=calibration is not None)
    if share >= 1:
        rules, trial = reviewed_whole(rules, calibration is not None), rules
    return SourceTrust(source, rules, trial, fired, calibration,
                       source_selections(store, dataset, source, run_id, run_selections), share)


def auto_accept_batches(store: LabelStore, dataset: Dataset, limit: int = 20) -> pd.DataFrame:
    """The latest auto-acceptance batches of `dataset`: columns batch, at, reviewer, run_id, photos,
    heads (accepted tags), undone (tags since undone), newest first."""
    undone = undone_actions()
    head_rows = log_table.c.field != "status"
    query = (
        select(log_table.c.batch, func.min(log_table.c.at).label("at"),
               func.min(log_table.c.reviewer).label("reviewer"), func.min(log_table.c.run_id).label("run_id"),
               func.count(func.distinct(log_table.c.item)).label("photos"),
               func.sum(case((head_rows, 1), else_=0)).label("heads"),
               func.sum(case((head_rows & log_table.c.action.in_(undone), 1), else_=0)).label("undone"))
        .select_from(log_table.join(items_table, log_table.c.item == items_table.c.item))
        .where(items_table.c.dataset == DatasetKey.of(dataset), log_table.c.batch.is_not(None),
               log_table.c.kind == LogKind.AUTO_ACCEPT)
        .group_by(log_table.c.batch).order_by(func.min(log_table.c.seq).desc()).limit(limit)
    )
    with store.reader.begin() as connection:
        return pd.DataFrame(connection.execute(query).all(),
                            columns=["batch", "at", "reviewer", "run_id", "photos", "heads", "undone"])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def source_policy(store: LabelStore, dataset: Dataset, source_names: Iterable[str], run_id: str, trust: Trust,
                  target_error: float) -> tuple[SourcePolicy, dict[str, SourceTrust]]:
    """How bulk acceptance treats the photos of `source_names` for run `run_id` (its `trust` layer)
    at `target_error`, and each source's standing (for the page to say why a head is stopped)."""
    run_thresholds = trust.thresholds(target_error)
    run_selections = {} if trust.calibration is None else trust.calibration.selections
    delta = DELTA if trust.calibration is None else trust.calibration.delta
    standing = {name: source_trust(store, dataset, name, run_id, run_thresholds, run_selections, target_error, delta)
                for name in dict.fromkeys(source_names)}
    policy = SourcePolicy({name: entry.rules for name, entry in standing.items()}, gated_rules(run_thresholds),
                          {name: entry.audit_share for name, entry in standing.items()},
                          trials={name: entry.trial for name, entry in standing.items() if entry.trial},
                          target_error=target_error)
    return policy, standing


SOURCE_TABLE_COLUMNS = ["source", "photos", "head", "rule", "threshold", "decisions", "more_needed", "audit_share",
                        "audited", "wrong", "error", "error_low", "error_high", "alarm"]


def source_table(store: LabelStore, dataset: Dataset, run_id: str, calibration: Calibration | None,
                 target_error: float) -> pd.DataFrame:
    """The Trust view per source and head of `dataset` for run `run_id` (its `calibration`; None:
    nothing certified) at `target_error`, columns SOURCE_TABLE_COLUMNS: the rule in force and its
    threshold; the source's decisions and how many more would certify the head (0: a
    recalibration would now); its audit share; the audited accepted tags, how many were wrong, the
    realised error with its 95 % Clopper-Pearson interval; and the alarm's verdict."""
    run_selections = {} if calibration is None else calibration.selections
    delta = DELTA if calibration is None else calibration.delta
    run_thresholds = {head: selection.threshold(target_error, delta) for head, selection in run_selections.items()}
    records = []
    for name, photos in sources(store, dataset).items():
        standing = source_trust(store, dataset, name, run_id, run_thresholds, run_selections, target_error, delta)
        for head, rule in standing.rules.items():
            alarm = standing.alarms.get(head)
            low, high = alarm.interval() if alarm is not None else (None, None)
            records.append({
                "source": name, "photos": photos, "head": head, "rule": rule.why, "threshold": rule.threshold,
                "decisions": standing.selections[head].rows, "more_needed": standing.more_needed(head, target_error),
                "audit_share": standing.audit_share, "audited": 0 if alarm is None else alarm.audited,
                "wrong": 0 if alarm is None else alarm.wrong, "error": None if alarm is None else alarm.error,
                "error_low": low, "error_high": high,
                "alarm": ("—" if alarm is None else f"fired after {alarm.fired_at} audits" if alarm.fired
                          else "quiet"),
            })
    return pd.DataFrame(records, columns=SOURCE_TABLE_COLUMNS)
