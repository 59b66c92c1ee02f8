"""The workspace database, shared by the run registry and the label store, through SQLAlchemy Core.

The database is `<workspace>/fashion_tagger.db` (SQLite, WAL, waits for locks instead of
failing), or whatever `FASHION_TAGGER_DB_URL` names (e.g. PostgreSQL through psycopg,
`postgresql+psycopg://user:password@host/db`, shared by a team).
"""

from __future__ import annotations

import functools
import os

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from core.workspace import workspace_dir

DB_URL_ENV = "FASHION_TAGGER_DB_URL"
DB_FILE = "fashion_tagger.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def database_url() -> str:
    """`FASHION_TAGGER_DB_URL`, else the SQLite database in the workspace."""
    return os.environ.get(DB_URL_ENV) or f"sqlite:///{workspace_dir() / DB_FILE}"


@functools.lru_cache(maxsize=None)
def db_engine(url: str) -> Engine:
    """The process's engine for `url` (one pool per database); for SQLite with WAL, a busy timeout,
    and every transaction `BEGIN IMMEDIATE`, so a read-then-write transaction waits for the lock
    instead of failing."""
    engine = create_engine(url)
    if engine.dialect.name != "sqlite":
        return engine

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, connection_record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy, not sqlite3, emits BEGIN (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
