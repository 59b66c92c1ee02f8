"""Images/s of `predict --out` on the local engine against the Ray engine with 1 and 2 workers, on the
same N real sample photos, and the cost per million photos projected from them.

    python tests/benchmarks/bench_scale.py [N] [--data DIR] [--run-folder DIR] [--part-size 100]
                                           [--node-cores 16] [--node-price 0.80] [--gpu-node-price 4.00]

The model: a run's folder (--run-folder), or a real run trained here first (the default recipe,
tf_efficientnet_lite0 at 224 px, 1 epoch on 64 rows: speed does not depend on what it learned), in a
temporary workspace. Every engine writes the same records (training.scale.predict_to_parts) into a
fresh folder: files decoded (draft()), top-3 through the trust layer, Parquet parts. The local engine
uses torch's threads over every core; Ray workers share the cores (1 worker: all of them, 2 workers:
half each). Ray's cluster start is timed apart; each Ray time includes its actors' start (loading the
model), as a job pays it.

Projection for a CPU node of --node-cores cores at --node-price $/hour: the best rate per core here
times the node's cores (decoding and the forward pass both scale with cores; this is an upper bound
where a node's cores share memory bandwidth). With a CUDA GPU here, the local engine is timed on it
too and projected at --gpu-node-price. No timed assertions: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_DATA = REPO.parent / "shared" / "data" / "fashion-sample"


def train_model(home: Path, data: Path) -> str:
    """A real run's folder (lite0, 224 px, 1 epoch on 64 rows) in the workspace `home`."""
    os.environ["FASHION_TAGGER_HOME"] = str(home)
    from training.config import TrainConfig
    from training.train import train

    cfg = TrainConfig.from_recipe("default").with_overrides(
        [f"data={data}", "epochs=1", "max_samples=64", "image_size=224", "batch_size=16", "num_workers=0",
         "rare_policy=keep"])
    record = train(cfg)
    if record.status != "finished":
        raise SystemExit(f"the benchmark's run did not finish: {record.error}")
    return record.folder


def timed(job, paths, out: Path, **engine) -> dict:
    from training.scale import predict_to_parts

    start = time.perf_counter()
    summary = predict_to_parts(job, paths, out, **engine)
    seconds = time.perf_counter() - start
    assert summary["records"] == len(paths) and len(summary["written"]) == summary["parts"]
    return {"seconds": seconds, "images_per_s": len(paths) / seconds, "read": summary["read"],
            "engine": summary["engine"]}


def per_million(images_per_s: float, price_per_hour: float) -> float:
    return price_per_hour / (images_per_s * 3600) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("photos", nargs="?", type=int, default=2000, help="sample photos (default 2000)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--run-folder", help="a finished run's folder (default: train one here)")
    parser.add_argument("--part-size", type=int, default=100)
    parser.add_argument("--node-cores", type=int, default=16)
    parser.add_argument("--node-price", type=float, default=0.80, help="$/hour of a CPU node (default 0.80)")
    parser.add_argument("--gpu-node-price", type=float, default=4.00, help="$/hour of a GPU node (default 4.00)")
    args = parser.parse_args()

    import ray
    import torch

    from training.scale import PredictJob, RayCluster, job_runtime_env

    photos = sorted((args.data / "images").glob("*.jpg"))[:args.photos]
    if len(photos) < args.photos:
        raise SystemExit(f"{args.data}/images holds {len(photos)} photos, fewer than {args.photos}")
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = args.run_folder or train_model(scratch / "workspace", args.data)
        job = PredictJob("bench", folder, "best.ckpt", top_k=3, batch_size=32, target_error=0.02)
        results = {"local cpu": timed(job, photos, scratch / "local", device="cpu", part_size=args.part_size)}
        if torch.cuda.is_available():
            results["local cuda"] = timed(job, photos, scratch / "cuda", device="cuda", part_size=args.part_size)
        start = time.perf_counter()
        ray.init(num_cpus=cores, num_gpus=0, runtime_env=job_runtime_env(), include_dashboard=False,
                 logging_level="WARNING", log_to_driver=False)
        cluster_start = time.perf_counter() - start
        for workers in (1, 2):
            cluster = RayCluster(workers=workers, cpus_per_worker=max(1, cores // workers))
            results[f"ray {workers} worker{'s' * (workers > 1)}"] = timed(
                job, photos, scratch / f"ray{workers}", cluster=cluster, part_size=args.part_size)
        ray.shutdown()

    base = results["local cpu"]["images_per_s"]
    print(f"{len(photos):,} sample photos, parts of {args.part_size}, {cores} cores here; "
          f"Ray cluster start {cluster_start:.1f} s (not counted)")
    print(f"{'engine':16s} {'seconds':>8s} {'images/s':>9s} {'x local':>8s}  $/million photos")
    cpu_rates = {name: result["images_per_s"] for name, result in results.items() if "cuda" not in name}
    for name, result in results.items():
        rate = result["images_per_s"]
        node_rate = rate * (args.node_cores / cores) if "cuda" not in name else rate
        price = args.gpu_node_price if "cuda" in name else args.node_price
        node = "GPU node" if "cuda" in name else f"{args.node_cores}-core node"
        print(f"{name:16s} {result['seconds']:8.1f} {rate:9.1f} {rate / base:8.2f}  "
              f"{per_million(node_rate, price):.2f} on a {node} (${price:.2f}/h, {node_rate:,.0f} images/s)")
    needed = 1e7 / (8 * 3600)
    nodes = needed / (max(cpu_rates.values()) * args.node_cores / cores)
    print(f"10 million photos in 8 hours need {needed:,.0f} images/s: {nodes:.1f} {args.node_cores}-core nodes "
          "at the best CPU rate")
    print(json.dumps({"photos": len(photos), "cores": cores, "cluster_start_s": cluster_start, "results": results}))


if __name__ == "__main__":
    main()
