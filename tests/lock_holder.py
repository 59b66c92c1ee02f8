"""Another process holding a lock on the workspace database, for the busy-database tests.

python tests/lock_holder.py DB_URL [ITEM]

SQLite: takes the write lock (BEGIN IMMEDIATE). PostgreSQL: locks review_items row ITEM
(SELECT ... FOR UPDATE), as a writer of that item does. Prints "locked", holds the lock until a
line arrives on stdin (or stdin closes), then rolls back and exits.
"""

from __future__ import annotations

import sqlite3
import sys

from sqlalchemy import create_engine, make_url, text


def main(url: str, item: int | None) -> None:
    if make_url(url).get_backend_name() == "sqlite":
        connection = sqlite3.connect(make_url(url).database, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        print("locked", flush=True)
        sys.stdin.readline()
        connection.execute("ROLLBACK")
        return
    with create_engine(url).connect() as connection:  # a plain engine: none of the app's timeouts
        connection.execute(text("SELECT item FROM review_items WHERE item = :item FOR UPDATE"), {"item": item})
        print("locked", flush=True)
        sys.stdin.readline()
        connection.rollback()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)


def lock_held(url: str, item: int | None = None):
    """A context manager: this script, holding the lock, in another process until the block ends."""
    import contextlib
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]

    @contextlib.contextmanager
    def held():
        command = [sys.executable, __file__, url, *([] if item is None else [str(item)])]
        holder = subprocess.Popen(command, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "locked", f"the lock holder exited with {holder.wait()}"
            yield
        finally:
            holder.stdin.close()  # its readline returns: it rolls back and exits
            holder.wait(timeout=60)

    return held()


def finishes_within(seconds: float, work):
    """work() run in a thread; its result, or concurrent.futures' TimeoutError after `seconds` (the
    thread is left to finish once the lock is released: a test that waited forever fails instead)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(work).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)
