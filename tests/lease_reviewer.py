"""One reviewer working a shared queue, for test_leases' concurrency test.

python tests/lease_reviewer.py DB_URL REVIEWER DOUBLE_SHARE ITEM [ITEM ...]

Prints "ready", waits for a line on stdin (so that all reviewers start together), then until no
item of the queue is open to them: takes the next item nobody holds (core.labels.leases), decides
it (gender: their own name, so every decision says whose it is), and goes on; waits a little when
every open item is held by someone else. Prints "done N" with the number of items it decided.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.access.roles import Actor, Role  # noqa: E402
from core.labels.leases import next_leased, open_for  # noqa: E402
from core.labels.store import LabelStore  # noqa: E402
from core.workspace import workspace_dir  # noqa: E402


def main(url: str, reviewer: str, double_share: float, items: list[int]) -> None:
    store, actor = LabelStore(workspace=workspace_dir(), db_url=url), Actor(reviewer, Role.REVIEWER)
    print("ready", flush=True)
    sys.stdin.readline()
    decided, current = 0, None
    while open_for(store, items, actor, double_share):
        current = next_leased(store, items, actor, double_share, start=current)
        if current is None:  # every open item is someone else's for now
            time.sleep(0.02)
            continue
        store.review(current, {"gender": reviewer}, actor)
        decided += 1
    print(f"done {decided}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), [int(item) for item in sys.argv[4:]])
