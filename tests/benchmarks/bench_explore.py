"""Explore page on the real 44,446-row sample: first render (cold caches) and a cached rerun.

    python tests/benchmarks/bench_explore.py [DATASET_DIR]

Renders through Streamlit's AppTest (script run + element serialisation, no browser), so the
numbers are the server-side time a user waits for. Targets (issue 2): first render <= 3 s,
cached rerun <= 0.5 s. Explore draws its open tab only (Distributions first); the other tabs are
timed as they are first opened. In a browser: bench_explore_browser.py.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "fashion-sample"

FIRST_TARGET_S, RERUN_TARGET_S = 3.0, 0.5


def main() -> None:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DATA
    os.environ.update(FASHION_TAGGER_DATA=str(data), FASHION_TAGGER_HOME=tempfile.mkdtemp(), HF_HUB_OFFLINE="1")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=120)
    start = time.perf_counter()
    at.run()
    home_first = time.perf_counter() - start
    at.switch_page("../pages/explore.py")
    start = time.perf_counter()
    at.run()
    explore_first = time.perf_counter() - start
    assert not at.exception, at.exception
    reruns = []
    for _ in range(5):
        start = time.perf_counter()
        at.run()
        reruns.append(time.perf_counter() - start)
    tabs = {}
    for tab in ("Imbalance", "Taxonomy", "Split & years", "Photos"):
        at.session_state["explore.section"] = tab
        start = time.perf_counter()
        at.run()
        tabs[tab] = time.perf_counter() - start
    start = time.perf_counter()
    at.number_input[0].set_value(2).run()
    page_two = time.perf_counter() - start
    rerun = statistics.median(reruns)
    print(f"dataset: {data} ({os.cpu_count()} cores)")
    print(f"{'step':38s} {'seconds':>8s} {'target':>7s} {'ratio':>6s}")
    print(f"{'Home first render (load + clean)':38s} {home_first:8.2f} {FIRST_TARGET_S:7.1f} "
          f"{home_first / FIRST_TARGET_S:6.2f}")
    print(f"{'Explore first render (after Home)':38s} {explore_first:8.2f} {FIRST_TARGET_S:7.1f} "
          f"{explore_first / FIRST_TARGET_S:6.2f}")
    print(f"{'Home + Explore first, together':38s} {home_first + explore_first:8.2f} {FIRST_TARGET_S:7.1f} "
          f"{(home_first + explore_first) / FIRST_TARGET_S:6.2f}")
    print(f"{'Explore cached rerun (median of 5)':38s} {rerun:8.2f} {RERUN_TARGET_S:7.1f} "
          f"{rerun / RERUN_TARGET_S:6.2f}")
    for tab, seconds in tabs.items():
        print(f"{'Explore tab first open: ' + tab:38s} {seconds:8.2f} {FIRST_TARGET_S:7.1f} "
              f"{seconds / FIRST_TARGET_S:6.2f}")
    print(f"{'Photo grid: next page (24 new thumbs)':38s} {page_two:8.2f} {RERUN_TARGET_S:7.1f} "
          f"{page_two / RERUN_TARGET_S:6.2f}")


if __name__ == "__main__":
    main()
