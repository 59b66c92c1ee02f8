"""How fast the demo catalogue is generated: 1,500 photos against the 30 s target.

Run: python tests/benchmarks/bench_demo.py [n]
"""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.data.demo import generate_demo, render, sample_rows  # noqa: E402

TARGET_S = 30.0


def main(n: int = 1500) -> None:
    rows = sample_rows(n, seed=0).to_dict("records")[:200]
    start = time.perf_counter()
    for row in rows:
        render(row, seed=0)
    per_image = (time.perf_counter() - start) / len(rows)
    print(f"render alone, one thread: {per_image * 1e3:.1f} ms/image")

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_demo(Path(tmp) / "demo", n=n, seed=0)
        seconds = time.perf_counter() - start
    print(f"generate_demo n={n} on {os.cpu_count()} cores: {seconds:.1f} s, "
          f"{n / seconds:.0f} images/s; target {TARGET_S:.0f} s for 1,500 "
          f"-> {seconds / TARGET_S:.2f} of the target "
          f"(serial estimate {per_image * n:.1f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1500)
