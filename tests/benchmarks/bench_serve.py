"""The prediction server (`python -m training serve`) under a bounded load on 127.0.0.1, side by side
with `predict` on the same photos.

    python tests/benchmarks/bench_serve.py [RUN_ID] [--data DIR] [--requests 500] [--concurrency 1 8 32]
                                           [--device auto|cpu|cuda] [--max-batch-size 32] [--batch-timeout 0.01]
                                           [--body multipart|json] [--timeout 30]

RUN_ID: a run of the workspace (FASHION_TAGGER_HOME); without one, a tiny real run (the default recipe,
offline ImageNet backbone, 224 px, 1 epoch on 64 rows) is trained in a temporary workspace first:
the time per photo does not depend on what the heads learned. Photos: the real sample's (--data,
default ../shared/data/fashion-sample), a generated demo's when it is missing; the requests go
through them in turn.

For each concurrency c, `--requests` POST /predict requests (one photo each, multipart or base64
JSON) are sent by c client threads, each with its own keep-alive connection; the server is started
once, in a subprocess, and warmed up first. Printed per level: requests answered 200, refused early
with 503 (more waiting than --timeout can serve) and timed out with 504, throughput, p50 and p99
latency (of all answers; a 503 comes at once), and the batches the server formed (size: count, from
the X-Batch-Size header of each answer: requests answered in batches of n / n). To see load shed,
give a concurrency the model cannot serve within a short timeout, e.g. `--concurrency 64 --timeout 2`
on a CPU: 503s instead of 504s, the 200s' latency within the timeout. Then `predict`'s batch path on the same
photos in this process (load_predictor + Predictor.predict_files, batch 32, warm): images/s, the
server's throughput over it, and how far the server's answers (the first per photo) are from predict's.
The client threads share the machine with the server: on a small CPU they take a visible part of it.
"""

from __future__ import annotations

import argparse
import base64
import collections
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_DATA = REPO.parent / "shared" / "data" / "fashion-sample"
TOP_K, PREDICT_BATCH, WARMUP = 3, 32, 8


def tiny_run(data: Path, home: Path) -> str:
    """Train a tiny real run in workspace `home` (this process's FASHION_TAGGER_HOME from now on); its id."""
    from training.config import TrainConfig
    from training.train import train

    os.environ["FASHION_TAGGER_HOME"] = str(home)
    cfg = TrainConfig.from_recipe("default").with_overrides([
        f"data={data}", "pretrained=offline", "image_size=224", "epochs=1", "max_samples=64", "rare_policy=keep",
        "batch_size=16", "num_workers=0"])  # keep: 64 rows would leave a head one class
    started = time.perf_counter()
    record = train(cfg)
    print(f"tiny run {record.id} ({record.status}) trained in {time.perf_counter() - started:.0f} s")
    return record.id


def photos_of(data: Path, scratch: Path, n: int) -> list[Path]:
    """Up to `n` photos of `data` (a generated demo's when it has no styles.csv), sorted by name."""
    if not (data / "styles.csv").is_file():
        from core.data.demo import generate_demo

        print(f"{data} has no styles.csv: generating a demo catalogue instead")
        data = generate_demo(scratch / "demo", n=max(n, 60), seed=0)
    return sorted((data / "images").glob("*.jpg"))[:n]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run_id: str, args, log: Path) -> tuple[subprocess.Popen, str]:
    from training.processes import start_detached

    port = free_port()
    command = [sys.executable, "-m", "training", "serve", run_id, "--port", str(port), "--device", args.device,
               "--max-batch-size", str(args.max_batch_size), "--batch-timeout", str(args.batch_timeout),
               "--timeout", str(args.timeout)]
    process = start_detached(command, log, os.environ, append=False)
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    while True:
        if process.poll() is not None:
            sys.exit(f"the server ended ({process.returncode}):\n{log.read_text()}")
        try:
            if requests.get(f"{url}/health", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    print(f"server ready in {time.perf_counter() - started:.1f} s (model loaded): {' '.join(command[1:])}")
    return process, url


def request_body(path: Path, body: str) -> dict:
    data = path.read_bytes()
    if body == "json":
        return {"json": {"image": base64.b64encode(data).decode(), "name": path.name}}
    return {"files": {"file": (path.name, data, "image/jpeg")}}


def load(url: str, bodies: list[dict], n: int, concurrency: int) -> dict:
    """`n` requests, bodies in turn, from `concurrency` threads; wall time, latencies, statuses, batch sizes."""
    local = threading.local()

    def one(index: int) -> tuple[float, int, int, dict | None]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        started = time.perf_counter()
        response = local.session.post(f"{url}/predict", timeout=300, **bodies[index % len(bodies)])
        elapsed = time.perf_counter() - started
        answer = response.json() if response.status_code == 200 and index < len(bodies) else None
        return elapsed, response.status_code, int(response.headers.get("X-Batch-Size", 0)), answer

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(n)))
    return {"wall_s": time.perf_counter() - started, "latencies": [r[0] for r in results],
            "ok": sum(r[1] == 200 for r in results), "shed": sum(r[1] == 503 for r in results),
            "timed_out": sum(r[1] == 504 for r in results), "sizes": [r[2] for r in results if r[1] == 200],
            "answers": {index: r[3] for index, r in enumerate(results) if r[3] is not None}}


def disagreement(answers: dict[int, dict], expected: list[dict]) -> tuple[int, float]:
    """Answers whose labels differ from `expected[index]`'s (predict's, path as the server names it),
    and the largest |p - p_predict| over the others."""
    differ, largest = 0, 0.0
    for index, answer in answers.items():
        want = expected[index]["predictions"]
        got = answer["predictions"]
        if {head: [g["label"] for g in guesses] for head, guesses in got.items()} != {
                head: [g["label"] for g in guesses] for head, guesses in want.items()}:
            differ += 1
            continue
        largest = max([largest] + [abs(g["p"] - w["p"]) for head in want for g, w in zip(got[head], want[head])])
    return differ, largest


def batches_formed(sizes: list[int]) -> dict[int, int]:
    """Batch size -> batches of that size, from each answer's X-Batch-Size (n answers per batch of n)."""
    return {size: count // size for size, count in sorted(collections.Counter(sizes).items())}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def predict_rate(run_id: str, photos: list[Path], n: int, device: str) -> tuple[float, str, list[dict]]:
    """Images/s of predict's batch path (Predictor.predict_files, batch 32) over the same `n` photos,
    warm; the device; its answers to the photos (as_json)."""
    from training.checkpoints import load_predictor
    from training.registry import RunRegistry

    record = RunRegistry().get(run_id)
    predictor = load_predictor(record.folder, run_id=run_id, device=device)
    paths = [photos[index % len(photos)] for index in range(n)]
    predictor.predict_files(paths[:PREDICT_BATCH], TOP_K, PREDICT_BATCH)  # warm-up
    started = time.perf_counter()
    results = predictor.predict_files(paths, TOP_K, PREDICT_BATCH)
    elapsed = time.perf_counter() - started
    assert all(result.error is None for result in results)
    return n / elapsed, predictor.device.type, [result.as_json() for result in results[:len(photos)]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_id", nargs="?", help="a run of the workspace; default: train a tiny one")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="photos: <data>/images/*.jpg")
    parser.add_argument("--photos", type=int, default=200, help="distinct photos the requests go through")
    parser.add_argument("--requests", type=int, default=500, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.01)
    parser.add_argument("--body", choices=("multipart", "json"), default="multipart")
    parser.add_argument("--timeout", type=float, default=30.0, help="the server's --timeout (503 and 504)")
    args = parser.parse_args()

    from training.processes import end

    scratch = tempfile.TemporaryDirectory(prefix="bench-serve-")
    photos = photos_of(Path(args.data), Path(scratch.name), args.photos)
    run_id = args.run_id or tiny_run(photos[0].parents[1], Path(scratch.name) / "workspace")
    bodies = [request_body(path, args.body) for path in photos]
    print(f"{len(photos)} photos of {photos[0].parents[1]}, sent as {args.body}; {os.cpu_count()} cores")

    process, url = start_server(run_id, args, Path(scratch.name) / "server.log")
    try:
        load(url, bodies, WARMUP, 1)
        levels = {c: load(url, bodies, args.requests, c) for c in args.concurrency}
    finally:
        end(process.pid, timeout=60, group=True)  # SIGTERM: the server stops its HTTP and model processes itself
    rate, device, expected = predict_rate(run_id, photos, args.requests, args.device)
    scratch.cleanup()

    print(f"\nserve, run {run_id} on {device}: max batch {args.max_batch_size}, batch timeout {args.batch_timeout} s, "
          f"{args.requests} requests per level, timeout {args.timeout:g} s")
    print(f"{'concurrency':>11s} {'ok':>5s} {'503':>5s} {'504':>5s} {'req/s':>7s} {'p50 ms':>7s} {'p99 ms':>7s} "
          f"{'vs predict':>10s}  batches formed (size: count)")
    for concurrency, result in levels.items():
        throughput = result["ok"] / result["wall_s"]  # answered (200) per second
        formed = ", ".join(f"{size}: {count}" for size, count in batches_formed(result["sizes"]).items())
        print(f"{concurrency:11d} {result['ok']:5d} {result['shed']:5d} {result['timed_out']:5d} {throughput:7.1f} "
              f"{1000 * percentile(result['latencies'], 50):7.1f} "
              f"{1000 * percentile(result['latencies'], 99):7.1f} {throughput / rate:10.2f}  {formed}")
    print(f"\npredict (Predictor.predict_files, batch {PREDICT_BATCH}, same photos, in-process, warm): "
          f"{rate:.1f} images/s on {device}")
    for concurrency, result in levels.items():
        differ, largest = disagreement(result["answers"], expected)
        print(f"answers at concurrency {concurrency}: {len(result['answers'])} compared with predict's, "
              f"{differ} with other labels, max |p - p_predict| {largest:.1e} over the rest")


if __name__ == "__main__":
    main()
