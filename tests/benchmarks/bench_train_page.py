"""The Train page's first open in a real browser: a fresh dashboard server (a cold Python process, as
after `streamlit run`), then Chromium opens /train and waits until the form, the estimate and Start
are shown and the script is idle. Against another checkout (--before, e.g. a git worktree of an
older commit), the two alternate round by round on the same demo catalogue.

    python tests/benchmarks/bench_train_page.py [--before DIR] [--rounds 5] [--data DIR]

Prints each round's seconds, the medians and their ratio. Time it alone: two cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from browser_support import IDLE, chromium_page, dashboard_server  # noqa: E402

START = 'button:has-text("Start training")'
ESTIMATE = 'text=/Per epoch:/'


def first_open(checkout: Path, data: Path, workspace: Path) -> float:
    """Seconds from asking for /train on a server that has served nothing yet until the page is ready."""
    env = {**os.environ, "FASHION_TAGGER_HOME": str(workspace), "FASHION_TAGGER_DATA": str(data), "HF_HUB_OFFLINE": "1"}
    env.pop("FASHION_TAGGER_DB_URL", None)
    with dashboard_server(env, cwd=checkout) as url, chromium_page() as page:
        started = time.perf_counter()
        page.goto(f"{url}/train")
        page.wait_for_selector(START)
        page.wait_for_selector(ESTIMATE)
        page.wait_for_selector(IDLE)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout to compare against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", type=Path, help="a catalogue folder (default: a 300-photo demo, made once)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-train-page-"))
    data = args.data
    if data is None:
        data = scratch / "demo"
        subprocess.run([sys.executable, "-m", "core.data", "demo", str(data), "--n", "300"], cwd=REPO, check=True,
                       capture_output=True)
    checkouts = {"this": REPO, **({"before": args.before.resolve()} if args.before else {})}
    seconds: dict[str, list[float]] = {name: [] for name in checkouts}
    for round_number in range(1, args.rounds + 1):
        for name, checkout in checkouts.items():
            seconds[name].append(first_open(checkout, data, scratch / f"workspace-{name}"))
        print(f"round {round_number}: " + ", ".join(f"{name} {values[-1]:.2f} s" for name, values in seconds.items()),
              flush=True)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print("median first open of /train: " + ", ".join(f"{name} {value:.2f} s" for name, value in medians.items()))
    if "before" in medians:
        print(f"before / this: {medians['before'] / medians['this']:.2f}x")


if __name__ == "__main__":
    main()
