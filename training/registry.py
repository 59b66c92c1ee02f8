"""The run registry: one row per training run in the workspace database, through SQLAlchemy Core.

The database is the workspace's (`core.access.database`: SQLite in the workspace, or whatever
`FASHION_TAGGER_DB_URL` names, e.g. PostgreSQL shared by a team).

A run moves queued -> running -> finished | failed, or to cancelled from queued or running
(`RunState`); a failed or cancelled run can be reopened (queued again) to resume from its last
checkpoint. The first end reported wins: ending an ended run (a cancel racing the end of
training) leaves it as it is. A run's record holds the process responsible for it: the one that
registered it, then the training process the dashboard launched (`hand_over`), then the one
training it. A run can die without reporting (SIGKILL, out of memory, a closed terminal), so
reading the registry reconciles liveness first: a queued or running run of this host whose
process is gone, or whose pid now belongs to another process, is marked failed, with how its
process ended when this process started it, and the end of its run.log.

Who asked is recorded with the person's identity (core.access.roles.Actor.identity): who launched a run
(`create`), who cancelled it and who resumed it last. These columns came after the first version
of the table: opening an older database adds them (core.access.database.create_tables), empty for the
runs it already holds.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import re
import secrets
import socket
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Column, Float, Integer, MetaData, String, Table, Text, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from core.access.database import DatabaseBusy, create_tables, database_url, db_engine, read_only
from core.data.catalogue import same_dataset
from core.workspace import workspace_dir
from training.processes import describe_exit, is_alive, log_tail, process_start, reap, reap_ended
from training.run_folder import RunFolder

RUNS_FOLDER = "runs"
LOST_PROCESS_ERROR = "the training process ended without reporting (killed?)"
_ID_ATTEMPTS = 5


class RunState(enum.StrEnum):
    """A run's status in the registry."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (RunState.QUEUED, RunState.RUNNING)
ENDED = (RunState.FINISHED, RunState.FAILED, RunState.CANCELLED)
RESUMABLE = (RunState.FAILED, RunState.CANCELLED)  # can be reopened to resume

metadata = MetaData()
runs_table = Table(
    "runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("config", Text, nullable=False),  # JSON: TrainConfig.to_dict()
    Column("status", String(16), nullable=False),
    Column("created", String(40), nullable=False),  # UTC ISO 8601, microseconds: sorts as text
    Column("started", String(40)),
    Column("finished", String(40)),
    Column("pid", Integer),
    Column("pid_start", BigInteger),  # the process's start time (/proc/<pid>/stat), telling a reused pid apart
    Column("host", String(255)),
    Column("folder", Text),
    Column("device", String(255)),
    Column("weights", Text),
    Column("best_metric", Float),
    Column("best_metric_name", String(64)),
    Column("error", Text),
    Column("metrics", Text),  # JSON: final per-head numbers
    Column("timings", Text),  # JSON
    Column("launched_by", String(255)),  # the identity of who launched it (None: a run from before this column)
    Column("cancelled_by", String(255)),
    Column("resumed_by", String(255)),  # who resumed it last
)


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One run as the registry holds it; the fields are the `runs` table's columns, JSON decoded."""

    id: str  # "<UTC yyyymmdd-hhmmss>-<backbone>-<4 hex>": sorts by creation, reads at a glance
    config: dict[str, Any]
    status: RunState
    created: str  # UTC ISO 8601 times
    started: str | None
    finished: str | None
    pid: int | None  # the process responsible for the run (module docstring)
    pid_start: int | None
    host: str | None
    folder: str | None  # the run folder
    device: str | None
    weights: str | None  # which pretrained weights the backbone got
    best_metric: float | None
    best_metric_name: str | None
    error: str | None
    metrics: dict[str, Any] | None
    timings: dict[str, Any] | None
    launched_by: str | None = None  # identities of the people who asked (module docstring)
    cancelled_by: str | None = None
    resumed_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return dataclasses.asdict(self)


class ScoreBasis(enum.StrEnum):
    """The rows a run's `dataset_score` was measured on."""

    TEST_PART = "test part"  # the dataset's fixed test part (training.rows): the same rows for every run of it
    VALIDATION = "validation rows"  # the run's own validation split: a run without a test part


@dataclasses.dataclass(frozen=True)
class Score:
    """A run's mean macro-F1 and the rows it was measured on."""

    value: float
    basis: ScoreBasis

    def __str__(self) -> str:
        return f"{self.value:.3f} on its {self.basis}"


# What `dataset_score` is and how `best_first` ranks by it, said for a person.
DATASET_SCORE = ("mean macro-F1 on the dataset's fixed test part (a run without one: on its validation rows, ranked "
                 "after)")


def dataset_score(record: RunRecord) -> Score | None:
    """What the runs of one dataset are ranked by: every head's macro-F1 averaged over the run's
    proposals on the dataset's fixed test part (metrics["test_mean_macro_f1"], its evaluation when it
    finished), else on its validation rows (metrics["mean_macro_f1"]: a run without a test part);
    None for a run with neither."""
    metrics = record.metrics or {}
    for key, basis in (("test_mean_macro_f1", ScoreBasis.TEST_PART), ("mean_macro_f1", ScoreBasis.VALIDATION)):
        value = metrics.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return Score(float(value), basis)
    return None


def trained_on(record: RunRecord, dataset: str | Path) -> bool:
    """Whether the run was trained on catalogue `dataset`."""
    return bool(record.config.get("data")) and same_dataset(record.config["data"], dataset)


def best_first(records: list[RunRecord], dataset: str | Path) -> list[RunRecord]:
    """`records` trained on `dataset`, best first: those with a test-part score by it, then those scored
    on their validation rows by theirs, then those without a score, then the others; each part in the
    order given (the registry lists newest first).

    Scores on the test part are like for like (the same rows for every run of the dataset); a score
    on a run's own validation rows is on other rows, and optimistic (they chose its best epoch), so it
    never outranks a test-part score: a run with a test part is preferred to one without."""
    own = [record for record in records if trained_on(record, dataset)]
    others = [record for record in records if record not in own]
    scores = {record.id: dataset_score(record) for record in own}
    scored = sorted((record for record in own if scores[record.id] is not None),
                    key=lambda record: (scores[record.id].basis != ScoreBasis.TEST_PART, -scores[record.id].value))
    return [*scored, *(record for record in own if scores[record.id] is None), *others]


class RunRegistry:
    """The `runs` table. Every method is one transaction; one that writes raises
    core.access.database.DatabaseBusy when another process holds the lock too long, and reading (get,
    list, running) takes the write lock only to mark lost runs failed."""

    def __init__(self, db_url: str | None = None) -> None:
        self.engine = db_engine(db_url or database_url())
        self.reader = read_only(self.engine)  # reads never wait for a writer
        create_tables(self.engine, metadata)

    def create(self, config: Mapping[str, Any], launched_by: str, folder: str | Path | None = None) -> RunRecord:
        """Register a queued run of `config` (`TrainConfig.to_dict()`), owned by this process,
        launched by the person `launched_by` (an identity, core.access.roles.Actor.identity).

        folder: the run folder; default `<workspace>/runs/<run id>` (not created here).
        """
        now = datetime.now(timezone.utc)
        pid = os.getpid()
        for _ in range(_ID_ATTEMPTS):
            run_id = _new_run_id(str(config.get("backbone", "")), now)
            run_folder = Path(folder) if folder is not None else workspace_dir() / RUNS_FOLDER / run_id
            row = {
                "id": run_id, "config": json.dumps(dict(config)), "status": RunState.QUEUED, "created": _iso(now),
                "pid": pid, "pid_start": process_start(pid), "host": socket.gethostname(),
                "folder": str(run_folder.resolve()), "launched_by": _check_identity(launched_by),
            }
            try:
                with self.engine.begin() as connection:
                    connection.execute(insert(runs_table).values(row))
                    return _record(_select_row(connection, run_id))
            except IntegrityError:  # the same id drawn twice in one second: draw again
                continue
        raise RuntimeError(f"could not draw a free run id in {_ID_ATTEMPTS} attempts")

    def hand_over(self, run_id: str, pid: int) -> RunRecord:
        """A queued run is now the responsibility of process `pid` of this host (the training
        process the dashboard launched for it)."""
        _check_pid(pid)
        return self._move(run_id, RunState.QUEUED, (RunState.QUEUED,), pid=pid, pid_start=process_start(pid),
                          host=socket.gethostname())

    def mark_running(self, run_id: str, pid: int, device: str, weights: str) -> RunRecord:
        """A queued run is now trained by process `pid` of this host, on `device`, from `weights`."""
        _check_pid(pid)
        return self._move(
            run_id, RunState.RUNNING, (RunState.QUEUED,),
            started=_now(), pid=pid, pid_start=process_start(pid),
            host=socket.gethostname(), device=device, weights=weights,
        )

    def mark_finished(
        self,
        run_id: str,
        best_metric: float | None,
        best_metric_name: str,
        metrics: Mapping[str, Any],
        timings: Mapping[str, Any],
    ) -> RunRecord:
        """A running run ended well. Non-finite numbers are stored as null (JSON has no NaN)."""
        return self._move(
            run_id, RunState.FINISHED, (RunState.RUNNING,),
            finished=_now(), best_metric=_finite(best_metric),
            best_metric_name=best_metric_name, metrics=json.dumps(_finite(dict(metrics))),
            timings=json.dumps(_finite(dict(timings))),
        )

    def mark_failed(self, run_id: str, error: str) -> RunRecord:
        """A queued or running run failed with `error` (a message or a traceback)."""
        return self._move(run_id, RunState.FAILED, ACTIVE, finished=_now(), error=error)

    def mark_cancelled(self, run_id: str, by: str | None = None) -> RunRecord:
        """A queued or running run was cancelled, by the person `by` (None: by its own process,
        which ends on a cancel signal); an ended run stays as it is."""
        who = {} if by is None else {"cancelled_by": _check_identity(by)}
        return self._move(run_id, RunState.CANCELLED, ACTIVE, finished=_now(), **who)

    def reopen(self, run_id: str, by: str) -> RunRecord:
        """A failed or cancelled run is queued again, owned by this process, by the person `by`
        (to resume it)."""
        pid = os.getpid()
        return self._move(
            run_id, RunState.QUEUED, RESUMABLE, finished=None, error=None, pid=pid, pid_start=process_start(pid),
            host=socket.gethostname(), resumed_by=_check_identity(by),
        )

    def get(self, run_id: str) -> RunRecord:
        """The run `run_id`; KeyError listing recent ids when there is none."""
        self._reconcile()
        with self.reader.begin() as connection:
            return _record(_select_row(connection, run_id))

    def list(self, limit: int | None = None) -> list[RunRecord]:
        """Runs, newest first; at most `limit` of them."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a positive int or None, got {limit!r}")
        self._reconcile()
        query = select(runs_table).order_by(runs_table.c.created.desc(), runs_table.c.id.desc()).limit(limit)
        with self.reader.begin() as connection:
            return [_record(row) for row in connection.execute(query)]

    def running(self) -> RunRecord | None:
        """The newest run still queued or running (its process alive), or None."""
        self._reconcile()
        query = (
            select(runs_table).where(runs_table.c.status.in_(ACTIVE))
            .order_by(runs_table.c.created.desc(), runs_table.c.id.desc()).limit(1)
        )
        with self.reader.begin() as connection:
            row = connection.execute(query).first()
        return None if row is None else _record(row)

    def _move(self, run_id: str, status: RunState, sources: tuple[RunState, ...], **values: Any) -> RunRecord:
        """Set `status` and `values` if the run is in one of `sources`; an end on an ended run is a no-op."""
        with self.engine.begin() as connection:
            current = RunState(_select_row(connection, run_id).status)
            if current in sources:
                connection.execute(
                    update(runs_table)
                    .where(runs_table.c.id == run_id, runs_table.c.status == current)
                    .values(status=status, **values)
                )
            elif not (current in ENDED and status in ENDED):
                raise ValueError(f"run {run_id} is {current}; only a {' or '.join(sources)} run can become {status}")
            return _record(_select_row(connection, run_id))

    def _reconcile(self) -> None:
        """Mark failed the queued or running runs of this host whose process is gone. Only reads
        unless there is such a run; when another process holds the write lock too long, the runs
        are left for the next read to mark (DatabaseBusy is not raised to a reader)."""
        with self.reader.begin() as connection:
            active = connection.execute(
                select(runs_table.c.id, runs_table.c.pid, runs_table.c.pid_start, runs_table.c.folder)
                .where(runs_table.c.status.in_(ACTIVE), runs_table.c.host == socket.gethostname())
            ).all()
        lost = [(run_id, pid, folder) for run_id, pid, pid_start, folder in active
                if pid is None or not is_alive(pid, pid_start)]
        if lost:
            try:
                with self.engine.begin() as connection:
                    for run_id, pid, folder in lost:
                        connection.execute(
                            update(runs_table)
                            # Unchanged since read: not taken over by another process meanwhile.
                            .where(runs_table.c.id == run_id, runs_table.c.pid == pid,
                                   runs_table.c.status.in_(ACTIVE))
                            .values(status=RunState.FAILED, error=_lost_process_error(pid, folder), finished=_now())
                        )
            except DatabaseBusy:
                pass
        reap_ended()  # this process's other ended children (evaluations, runs that reported their end)


def _lost_process_error(pid: int | None, folder: str | None) -> str:
    """LOST_PROCESS_ERROR, with how the process ended when this process started it, and the end
    of the run's log when it has one."""
    code = None if pid is None else reap(pid)
    error = LOST_PROCESS_ERROR if code is None else f"{LOST_PROCESS_ERROR}: it {describe_exit(code)}"
    tail = log_tail(RunFolder(folder).log) if folder else ""
    return f"{error}\n\n{tail}" if tail else error


def _check_identity(identity: str) -> str:
    if not isinstance(identity, str) or not identity.strip():
        raise ValueError(f"who asked must be a person's identity, got {identity!r}")
    return identity.strip()


def _check_pid(pid: int) -> None:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ValueError(f"pid must be a positive int, got {pid!r}")


def _new_run_id(backbone: str, now: datetime) -> str:
    """An id like 20261127-131502-lite0-3f2a: UTC time, a short backbone name, 4 random hex digits."""
    short = re.sub(r"^(tf_)?efficientnet_", "", backbone.lower())
    short = re.sub(r"[^a-z0-9]+", "-", short).strip("-")[:24] or "model"
    return f"{now:%Y%m%d-%H%M%S}-{short}-{secrets.token_hex(2)}"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _now() -> str:
    """The UTC time now, ISO 8601 with microseconds."""
    return _iso(datetime.now(timezone.utc))


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities, at any depth, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _select_row(connection, run_id: str) -> Row:
    row = connection.execute(select(runs_table).where(runs_table.c.id == run_id)).first()
    if row is None:
        recent = connection.execute(
            select(runs_table.c.id).order_by(runs_table.c.created.desc(), runs_table.c.id.desc()).limit(5)
        ).scalars().all()
        raise KeyError(f"unknown run {run_id!r}; recent runs: {', '.join(recent) or 'none yet'}")
    return row


def _record(row: Row) -> RunRecord:
    values = row._asdict()
    for key in ("config", "metrics", "timings"):
        values[key] = None if values[key] is None else json.loads(values[key])
    return RunRecord(**{**values, "status": RunState(values["status"])})
