"""One process writing reviews to a label store, for test_labelstore's concurrency test.

python tests/labelstore_writer.py DB_URL REVIEWER N ITEM [ITEM ...]

Prints "ready", waits for a line on stdin (so that two writers start together), then writes N
reviews cycling over the items (baseColour and season drawn at random, run_id the review's
number), pausing 2 ms after each like a (very fast) reviewer, and prints "done". Without the pause a
SQLite writer would take the lock back before the other's busy handler polls, and run alone.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.access.roles import Actor, Role  # noqa: E402
from core.labels.store import LabelStore  # noqa: E402
from core.workspace import workspace_dir  # noqa: E402

COLOURS = ("Black", "Blue", "Red", "White", "Green")
SEASONS = ("Summer", "Winter", "Fall")


def main(url: str, reviewer: str, n: int, items: list[int]) -> None:
    store = LabelStore(workspace=workspace_dir(), db_url=url)
    draw = random.Random(reviewer)
    print("ready", flush=True)
    sys.stdin.readline()
    for number in range(n):
        labels = {"baseColour": draw.choice(COLOURS), "season": draw.choice(SEASONS)}
        store.review(items[number % len(items)], labels, Actor(reviewer, Role.REVIEWER), run_id=str(number))
        time.sleep(0.002)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(item) for item in sys.argv[4:]])
