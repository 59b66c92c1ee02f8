"""Explore in a real browser on the real sample: the first visit on a fresh dashboard server (a cold
Python process, as after `streamlit run`) and later visits (each a new Streamlit session, as a
reload or a new tab is), from asking for /explore until the script is idle and the chart shown is
drawn. Home the same way, before Explore, on each server. With --before DIR (a checkout of an older
commit, e.g. `git worktree add /tmp/before <commit>`), the two alternate round by round.

    python tests/benchmarks/bench_explore_browser.py [--before DIR] [--rounds 3] [--visits 5] [--data DIR]

Prints each round's seconds, the medians, and the targets (issue 26: first visit < 2.5 s, later
visits < 1.5 s). Time it alone: two cores shared with other work give other numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from browser_support import IDLE, chromium_page, dashboard_server  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "fashion-sample"
DRAWN_CHART = '[data-testid="stPlotlyChart"] .main-svg'
FIRST_TARGET_S, LATER_TARGET_S = 2.5, 1.5


def visit(page, url: str, ready: str) -> float:
    """Seconds from asking for `url` until `ready` is shown and the script is idle."""
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(ready)
    page.wait_for_selector(IDLE)
    return time.perf_counter() - started


def one_round(checkout: Path, data: Path, visits: int) -> dict[str, list[float]]:
    """A fresh server on `checkout`: Home's first visit, Explore's first, then `visits` later visits of each."""
    env = {**os.environ, "FASHION_TAGGER_HOME": tempfile.mkdtemp(), "FASHION_TAGGER_DATA": str(data),
           "HF_HUB_OFFLINE": "1"}
    env.pop("FASHION_TAGGER_DB_URL", None)
    times: dict[str, list[float]] = {"home first": [], "explore first": [], "home later": [], "explore later": []}
    with dashboard_server(env, cwd=checkout) as url, chromium_page() as page:
        times["home first"].append(visit(page, url, "text=Products kept"))
        times["explore first"].append(visit(page, f"{url}/explore", DRAWN_CHART))
        for _ in range(visits):
            times["home later"].append(visit(page, url, "text=Products kept"))
            times["explore later"].append(visit(page, f"{url}/explore", DRAWN_CHART))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout to compare with, round by round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--visits", type=int, default=5, help="later visits per round")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    checkouts = {"this": REPO, **({"before": args.before.resolve()} if args.before else {})}
    results = {name: {} for name in checkouts}
    for number in range(1, args.rounds + 1):
        for name, checkout in checkouts.items():
            times = one_round(checkout, args.data, args.visits)
            for step, seconds in times.items():
                results[name].setdefault(step, []).extend(seconds)
            print(f"round {number} {name:6s} " + "  ".join(f"{step} {statistics.median(seconds):.2f}"
                                                          for step, seconds in times.items()), flush=True)
    print(f"\ndataset: {args.data} ({os.cpu_count()} cores), load average {os.getloadavg()[0]:.1f}")
    print(f"{'median seconds':16s} " + " ".join(f"{name:>8s}" for name in checkouts)
          + (f" {'ratio':>6s}" if args.before else "") + f" {'target':>7s}")
    for step in results["this"]:
        medians = [statistics.median(results[name][step]) for name in checkouts]
        target = FIRST_TARGET_S if "first" in step else LATER_TARGET_S
        print(f"{step:16s} " + " ".join(f"{median:8.2f}" for median in medians)
              + (f" {medians[0] / medians[1]:6.2f}" if args.before else "") + f" {target:7.1f}")


if __name__ == "__main__":
    main()
