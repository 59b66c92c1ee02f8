"""The workspace database, shared by the run registry and the label store, through SQLAlchemy Core.

The database is `<workspace>/fashion_tagger.db` (SQLite, WAL), or whatever `FASHION_TAGGER_DB_URL`
names (e.g. PostgreSQL through psycopg, `postgresql+psycopg://user:password@host/db`, shared by a team).

Waiting for a lock is bounded: a writer waits up to LOCK_TIMEOUT_MS for another's lock (SQLite's
busy timeout; PostgreSQL's lock_timeout, with statement_timeout as a backstop), then gets
`DatabaseBusy`, which says to try again. On SQLite a writing transaction begins IMMEDIATE (it takes
the write lock first, so a read-then-write never fails halfway); a transaction begun through
`read_only(engine)` is a plain deferred BEGIN, which never takes nor waits for the write lock (WAL
readers see the last commit), so reads go on while another process writes.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Insert, Table, create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.schema import MetaData

from core.workspace import workspace_dir

DB_URL_ENV = "FASHION_TAGGER_DB_URL"
DB_FILE = "fashion_tagger.db"
LOCK_TIMEOUT_MS = 30_000
# PostgreSQL: no statement of ours runs this long unless it is stuck; cancelled, it reads as busy.
STATEMENT_TIMEOUT_MS = 300_000
_READ_ONLY = "fashion_tagger_read_only"  # execution option: begin a transaction that only reads
# PostgreSQL SQLSTATEs: lock_not_available (lock_timeout), query_canceled (statement_timeout).
_PG_LOCK_TIMEOUT, _PG_CANCELED = "55P03", "57014"


class DatabaseBusy(TimeoutError):
    """Another process held a lock on the workspace database longer than the timeouts allow; the
    transaction was rolled back. An OSError (TimeoutError), so callers that report OSErrors say so."""


def database_url(workspace: Path | None = None) -> str:
    """`FASHION_TAGGER_DB_URL`, else the SQLite database in `workspace` (default: core.workspace.workspace_dir())."""
    return os.environ.get(DB_URL_ENV) or f"sqlite:///{(workspace or workspace_dir()) / DB_FILE}"


@functools.lru_cache(maxsize=None)
def db_engine(url: str) -> Engine:
    """The process's engine for `url` (one pool per database), with the lock waits of the module
    docstring and their timeouts raised as DatabaseBusy."""
    engine = create_engine(url)

    @event.listens_for(engine, "handle_error")
    def _busy(context) -> None:
        if _is_lock_timeout(context.original_exception):
            raise DatabaseBusy(
                "the workspace database (labels and runs) is busy: another process has held its lock for more "
                f"than {LOCK_TIMEOUT_MS / 1000:g} s (a long write, or a stuck one); try again"
            ) from context.original_exception

    if engine.dialect.name == "postgresql":
        @event.listens_for(engine, "connect")
        def _pg_timeouts(dbapi_connection, connection_record) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET lock_timeout = {int(LOCK_TIMEOUT_MS)}")
                cursor.execute(f"SET statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")
            dbapi_connection.commit()  # a SET rolled back with its transaction would be undone

    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_setup(dbapi_connection, connection_record) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy, not sqlite3, emits BEGIN (below)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(LOCK_TIMEOUT_MS)}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection) -> None:
            connection.exec_driver_sql("BEGIN" if connection.get_execution_options().get(_READ_ONLY)
                                       else "BEGIN IMMEDIATE")

    return engine


def read_only(engine: Engine) -> Engine:
    """`engine` (same pool) for transactions that only read: they never wait for a writer's lock."""
    return engine.execution_options(**{_READ_ONLY: True})


def create_tables(engine: Engine, metadata: MetaData) -> None:
    """Create `metadata`'s missing tables, and add the missing columns of tables an older version
    created (the migration: new columns are nullable, so older rows read as None); when nothing
    is missing, without taking the write lock."""
    with read_only(engine).begin() as connection:
        if not _missing(connection, metadata):
            return
    with engine.begin() as connection:  # looked at again under the write lock: another process may have done it
        metadata.create_all(connection)
        for table, columns in _missing(connection, metadata).items():
            for column in columns:
                if not column.nullable:
                    raise RuntimeError(f"cannot add the required column {table.name}.{column.name} "
                                       "to an existing table")
                kind = column.type.compile(dialect=connection.dialect)
                exists = " IF NOT EXISTS" if connection.dialect.name == "postgresql" else ""
                connection.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN{exists} {column.name} {kind}')


def dialect_insert(connection: Connection) -> Callable[[Table], Insert] | None:
    """SQLite's or PostgreSQL's own insert (with ON CONFLICT), None for another database."""
    name = connection.dialect.name
    return import_module(f"sqlalchemy.dialects.{name}").insert if name in ("sqlite", "postgresql") else None


def upsert(connection: Connection, table: Table, row: Mapping[str, Any], keys: Sequence[str],
           where: ColumnElement[bool] | None = None) -> Insert:
    """The statement that inserts `row` into `table` or, where a row with the same `keys` (its
    primary key or a unique constraint) is there already, sets that row's other columns to `row`'s
    (only where `where` holds, when given): one INSERT ... ON CONFLICT DO UPDATE, so two writers
    saving the same new key at once never clash, as an update-then-insert lets them (both find
    nothing to update, the second insert raises IntegrityError). Returned unexecuted, so a caller
    may add RETURNING. SQLite and PostgreSQL; ValueError naming another database."""
    insert = dialect_insert(connection)
    if insert is None:
        raise ValueError(f"the workspace database must be SQLite or PostgreSQL, not {connection.dialect.name}")
    statement = insert(table).values(**row)
    return statement.on_conflict_do_update(
        index_elements=list(keys), set_={key: statement.excluded[key] for key in row if key not in keys}, where=where)


def _missing(connection, metadata: MetaData) -> dict:
    """{table: [its columns the database lacks]} for `metadata`'s tables (all of them for a missing table)."""
    present, missing = inspect(connection), {}
    for table in metadata.sorted_tables:
        known = ({column["name"] for column in present.get_columns(table.name)} if present.has_table(table.name)
                 else set())
        lacking = [column for column in table.columns if column.name not in known]
        if lacking:
            missing[table] = lacking
    return missing


def _is_lock_timeout(error: BaseException) -> bool:
    if isinstance(error, sqlite3.OperationalError):
        return (getattr(error, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY  # "database is locked"
    state = getattr(error, "sqlstate", None)
    return state == _PG_LOCK_TIMEOUT or (state == _PG_CANCELED and "statement timeout" in str(error))
