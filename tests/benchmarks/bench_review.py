"""How long a reviewer waits on the Review page, per action, in a long catalogue queue (AppTest).

    python tests/benchmarks/bench_review.py --home WORKSPACE --run RUN_ID [--data DIR] [--queue 500] [--actions 20]

Uses a finished run of workspace WORKSPACE that has predictions on DIR (default: the real sample),
with a copy of its database, so the reviews written here never reach the real label store.
Times, each the page's full rerun: loading a least-confident queue of --queue rows, then
--actions times "Save & next" (a decision written, the next photo shown with the model's proposal
computed), then "Next" and "Undo". Prints the median and the slowest of each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_DATA = REPO.parent / "shared" / "data" / "fashion-sample"


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True, help="the workspace holding the run")
    parser.add_argument("--run", required=True)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--queue", type=int, default=500)
    parser.add_argument("--actions", type=int, default=20)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-review-"))
    shutil.copyfile(Path(args.home) / "fashion_tagger.db", scratch / "fashion_tagger.db")
    os.environ.update({"FASHION_TAGGER_HOME": args.home, "FASHION_TAGGER_DATA": args.data,
                       "FASHION_TAGGER_DB_URL": f"sqlite:///{scratch / 'fashion_tagger.db'}"})
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=300)
    first_load = timed(at.run)
    at.switch_page("../pages/review.py").run()
    at.text_input(key="review.reviewer").set_value("bench").run()
    at.selectbox(key="review.run").set_value(args.run).run()
    at.segmented_control(key="review.source").set_value("Catalogue: least confident first").run()
    at.number_input(key="review.limit").set_value(args.queue).run()
    load = timed(lambda: at.button(key="review.load_confident").click().run())
    assert not at.exception, at.exception
    queue = len(at.session_state["review.queue"])
    saves = [timed(lambda: at.button(key="review_save").click().run()) for _ in range(args.actions)]
    nexts = [timed(lambda: at.button(key="review_next").click().run()) for _ in range(5)]
    undos = [timed(lambda: at.button(key="review_undo").click().run()) for _ in range(5)]
    assert not at.exception, at.exception
    shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nrun {args.run} on {args.data}; queue of {queue:,} rows; {os.cpu_count()} cores")
    print(f"{'step':44s} {'median s':>9s} {'slowest s':>10s}")
    print(f"{'app start (first script run, imports)':44s} {first_load:9.2f}")
    print(f"{'load the least-confident queue':44s} {load:9.2f}")
    for name, times in ((f"save & next (x{len(saves)})", saves), (f"next (x{len(nexts)})", nexts),
                        (f"undo (x{len(undos)})", undos)):
        print(f"{name:44s} {statistics.median(times):9.2f} {max(times):10.2f}")


if __name__ == "__main__":
    main()
