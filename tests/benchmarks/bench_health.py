"""Data health on the real sample (or any catalogue): what each step costs, how the page feels, how
similarity search scales, and whether planted copies are found.

    python tests/benchmarks/bench_health.py pipeline [--data DIR] [--home WS] [--device auto] [--agreement 2000]
    python tests/benchmarks/bench_health.py page     [--data DIR] [--home WS]
    python tests/benchmarks/bench_health.py search   [--sizes 10000,44000,100000,300000,1000000] [--dim 1280]
                                                     [--queries 500]
    python tests/benchmarks/bench_health.py planted  [--data DIR] [--home WS] [--copies 400] [--bad 100]

pipeline  `compute_health` with the pretrained backbone, each step timed (embeddings with their image
          cache, neighbours, the UMAP map, the image-quality pass, exact duplicates) in a fresh
          workspace unless --home names one; the near-duplicate groups at a few thresholds and the
          leakage of the default split; then the image-quality pass's agreement with cleanvision run
          on the source photos themselves, on --agreement photos.
page      the Data health page in AppTest on WS's computed health: its first render and each section's,
          then the same once cached (reruns), and a threshold change.
search    synthetic clustered unit vectors at growing n: exact (IndexFlatIP) and approximate (HNSW)
          build time, time per query (k=20, queries in one batch), the all-photos neighbour search that
          time implies, memory (the index's vectors and graph) and the approximate index's recall@20
          against the exact one. 1M x 1280 floats are 5 GB per index; HNSW's build at 1M takes long on few cores.
planted   --copies altered copies of sample photos (resized, re-compressed, slightly cropped, flipped,
          in turn) and --bad blurred or darkened ones, under new ids, in a copy of the catalogue in a
          temporary folder (photos linked; the sample's cached embeddings reused where the photo is the
          same file). Per threshold: recall (copies in their original's group), direct recall (copy and
          original a pair themselves), precision (pairs found with a copy that join it to its original
          or to a near-duplicate of it); and how many bad photos the image issues find.

The lead runs these on a quiet machine; RESULTS.md keeps the numbers with the command.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core import workspace  # noqa: E402
from core.data.catalogue import load_catalogue  # noqa: E402
from core.health.embedder import pretrained_model  # noqa: E402
from core.health.embeddings import embeddings_file, pretrained_identity  # noqa: E402
from core.health.files import compute_health, leaked_ids, leaking_groups  # noqa: E402
from core.health.image_quality import BLURRY_PARAMS, PIXEL_ISSUES  # noqa: E402
from core.health.similarity import (  # noqa: E402
    IndexKind,
    SimilarityIndex,
    groups_of_pairs,
    similar_pairs,
)
from training.health import default_split  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "fashion-sample"
THRESHOLDS = (0.90, 0.92, 0.93, 0.94, 0.95, 0.96)
SECTIONS = ("Map", "Similar photos", "Near-duplicates & leakage", "Label disagreements", "Outliers", "Image quality")


def use_workspace(home: str | None, prefix: str) -> Path:
    folder = Path(home) if home else Path(tempfile.mkdtemp(prefix=prefix))
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[workspace.HOME_ENV] = str(folder)
    return folder


def progress_lines():
    state = {"step": None, "shown": 0.0}

    def report(step: str, done: int, total: int) -> None:
        if step != state["step"] or done >= total or time.monotonic() - state["shown"] > 30:
            state.update(step=step, shown=time.monotonic())
            print(f"  {step}: {done:,} of {total:,}", flush=True)
    return report


# --- pipeline


def pipeline(args) -> None:
    home = use_workspace(args.home, "bench-health-")
    catalogue = load_catalogue(args.data)
    print(f"{catalogue.root}: {len(catalogue.frame):,} photos; workspace {home}; device {args.device}")
    started = time.perf_counter()
    health = compute_health(catalogue, pretrained_model(), home, device=args.device, progress=progress_lines())
    total = time.perf_counter() - started
    seconds = health.info["seconds"]
    photos = health.info["photos"]
    print(f"\n{'step':22s} {'seconds':>9s} {'photos/s':>9s}")
    for step, spent in seconds.items():
        print(f"{step:22s} {spent:9.1f} {photos / spent if spent else float('inf'):9.0f}")
    print(f"{'total':22s} {total:9.1f}   (index: {health.info['index']})")

    split = default_split(catalogue)
    print(f"\n{'threshold':>9s} {'groups':>7s} {'photos':>7s} {'largest':>8s} {'leaking':>8s} {'val leaked':>10s} "
          f"{'seconds':>8s}")
    for threshold in THRESHOLDS:
        started = time.perf_counter()
        groups = health.near_duplicates(threshold)
        spent = time.perf_counter() - started
        print(f"{threshold:9.2f} {len(groups):7,} {sum(map(len, groups)):7,} {max(map(len, groups), default=0):8,} "
              f"{len(leaking_groups(groups, split)):8,} {len(leaked_ids(groups, split)):10,} {spent:8.2f}")
    print(f"exact duplicates: {len(health.exact_duplicates):,} groups "
          f"({sum(map(len, health.exact_duplicates)):,} photos); "
          f"outliers: {len(health.outliers()):,}; image issues: "
          + ", ".join(f"{name} {int(health.issues[name].sum()):,}" for name in health.issues.columns
                      if not name.endswith("_score") and name != "id"))
    if args.agreement:
        agreement(catalogue, health, args.agreement)


def agreement(catalogue, health, photos: int) -> None:
    """The cache-based pixel checks against cleanvision on the source photos, on `photos` of them."""
    from cleanvision import Imagelab
    from PIL import Image, ImageOps

    class Sources:  # cleanvision's torchvision-dataset form: (image,) per item
        def __init__(self, paths, invert):
            self.paths, self.invert = paths, invert

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, index):
            with Image.open(self.paths[index]) as image:
                image = image.convert("RGB")
            return (ImageOps.invert(image) if self.invert else image,)

    chosen = health.issues.sample(min(photos, len(health.issues)), random_state=0)
    paths = [catalogue.image_path(i) for i in chosen["id"]]
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        plain = Imagelab(torchvision_dataset=Sources(paths, False), verbose=False)
        plain.find_issues({name: {} for name in PIXEL_ISSUES if name != "blurry"}, verbose=False)
        inverted = Imagelab(torchvision_dataset=Sources(paths, True), verbose=False)
        inverted.find_issues({"blurry": BLURRY_PARAMS}, verbose=False)
    spent = time.perf_counter() - started
    on_sources = plain.issues.join(inverted.issues)
    print(f"\nimage quality on the cached copies vs on the source photos ({len(paths):,} photos; sources took "
          f"{spent:.1f} s, {len(paths) / spent:.0f} photos/s):")
    print(f"{'issue':18s} {'flagged (cache)':>15s} {'flagged (source)':>16s} {'agree':>7s} {'score corr.':>11s}")
    for name in PIXEL_ISSUES:
        cache, source = chosen[name].to_numpy(), on_sources[f"is_{name}_issue"].to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):  # nan when one side's scores are all equal
            correlation = np.corrcoef(chosen[f"{name}_score"], on_sources[f"{name}_score"])[0, 1]
        print(f"{name:18s} {cache.sum():15,} {source.sum():16,} {np.mean(cache == source):7.3f} {correlation:11.3f}")


# --- page


def page(args) -> None:
    use_workspace(args.home, "bench-health-page-")
    os.environ[workspace.DATA_ENV] = str(args.data)
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=600)
    at.run()

    def timed(action) -> float:
        started = time.perf_counter()
        action()
        assert not at.exception, at.exception
        return time.perf_counter() - started

    first = {"page (Map)": timed(lambda: at.switch_page("../pages/health.py").run())}
    for section in SECTIONS[1:]:
        at.session_state["health.section"] = section
        first[section] = timed(at.run)
    again = {}
    for section in SECTIONS:
        at.session_state["health.section"] = section
        spent = [timed(at.run) for _ in range(3)]
        again["page (Map)" if section == "Map" else section] = statistics.median(spent)
    at.session_state["health.section"] = "Near-duplicates & leakage"
    at.run()
    threshold = timed(lambda: at.slider(key="health.threshold").set_value(0.95).run())
    threshold_again = timed(lambda: at.slider(key="health.threshold").set_value(0.95).run())
    print(f"{'render':28s} {'first (s)':>10s} {'cached (s)':>11s} {'ratio':>7s}")
    for name, spent in first.items():
        print(f"{name:28s} {spent:10.2f} {again[name]:11.3f} {spent / again[name]:7.0f}x")
    print(f"{'threshold 0.93 -> 0.95':28s} {threshold:10.2f} {threshold_again:11.3f}")


# --- search


def index_bytes(index: SimilarityIndex) -> int:
    """What the faiss index holds in memory: its vectors, plus HNSW's graph (links, offsets, levels)."""
    inner = index.index
    size = inner.ntotal * inner.d * 4
    if index.kind == IndexKind.APPROXIMATE:
        graph = inner.hnsw
        size += graph.neighbors.size() * 4 + graph.offsets.size() * 8 + graph.levels.size() * 4
    return size


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around n / 20 random centres: neighbours mean something, as in a catalogue."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 20), dim), dtype=np.float32)
    vectors = centres[rng.integers(0, len(centres), n)]
    vectors += 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def search(args) -> None:
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"dim {args.dim}, {args.queries} queries of k=20 per size; all-photos = per-query time x n")
    print(f"{'n':>9s} {'index':>12s} {'build s':>8s} {'ms/query':>9s} {'all-photos s':>12s} {'memory MB':>10s} "
          f"{'recall@20':>9s}")
    for n in sizes:
        vectors = clustered(n, args.dim)
        queries = vectors[np.random.default_rng(1).choice(n, min(args.queries, n), replace=False)]
        truth = None
        for kind in (IndexKind.EXACT, IndexKind.APPROXIMATE):
            started = time.perf_counter()
            index = SimilarityIndex(vectors, kind)
            build = time.perf_counter() - started
            memory = index_bytes(index) / 2**20
            started = time.perf_counter()
            _, found = index.search(queries, 20)
            per_query = (time.perf_counter() - started) / len(queries)
            if kind == IndexKind.EXACT:
                truth, recall = found, 1.0
            else:
                recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(truth, found)])
            print(f"{n:9,} {kind:>12s} {build:8.1f} {per_query * 1e3:9.2f} {per_query * n:12.1f} {memory:10.0f} "
                  f"{recall:9.3f}", flush=True)
            del index
        del vectors


# --- planted


def planted(args) -> None:
    from health_support import BAD_PHOTOS, COPIES, planted_catalogue

    home = use_workspace(args.home, "bench-health-planted-")
    sample = load_catalogue(args.data)
    folder = Path(tempfile.mkdtemp(prefix="planted-", dir=home))
    started = time.perf_counter()
    plant = planted_catalogue(sample.root, folder / "data", rows=len(sample.frame), copies=args.copies, bad=args.bad,
                              seed=args.seed)
    catalogue = load_catalogue(plant.folder)
    identity = pretrained_identity()
    cached = embeddings_file(home, sample.root, identity.key)
    if cached.is_file():  # the sample's own photos, linked: their cached embeddings are theirs
        target = embeddings_file(home, catalogue.root, identity.key)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, target)
    print(f"{catalogue.root}: {len(catalogue.frame):,} photos, {args.copies} copies and {args.bad} bad photos planted "
          f"({time.perf_counter() - started:.0f} s); workspace {home}")
    health = compute_health(catalogue, pretrained_model(), home, device=args.device, progress=progress_lines())
    row = {int(product_id): index for index, product_id in enumerate(health.ids.tolist())}
    copies = {copy: original for copy, original in plant.originals.items() if plant.kind[copy] in COPIES}
    print(f"\n{'threshold':>9s} {'recall':>7s} {'direct':>7s} {'precision':>9s} {'pairs with a copy':>17s}   "
          "recall by alteration")
    for threshold in THRESHOLDS:
        pairs = similar_pairs(health.neighbours, threshold)
        groups = groups_of_pairs(len(health.ids), pairs)
        group_of = {int(member): number for number, group in enumerate(groups) for member in group}
        found = {copy: group_of.get(row[copy], -1) == group_of.get(row[original], -2)
                 for copy, original in copies.items()}
        pair_set = {tuple(pair) for pair in pairs.tolist()}
        direct = np.mean([tuple(sorted((row[copy], row[original]))) in pair_set for copy, original in copies.items()])
        with_copy = [(a, b) for a, b in pairs.tolist() if health.ids[a] in copies or health.ids[b] in copies]
        right = 0
        for a, b in with_copy:
            copy, other = (a, b) if health.ids[a] in copies else (b, a)
            original = row[copies[int(health.ids[copy])]]
            right += other == original or other in set(health.neighbours.rows[original][
                health.neighbours.similarities[original] >= threshold].tolist())
        by_kind = {kind: np.mean([found[copy] for copy in copies if plant.kind[copy] == kind]) for kind in COPIES}
        print(f"{threshold:9.2f} {np.mean(list(found.values())):7.3f} {direct:7.3f} "
              f"{right / max(len(with_copy), 1):9.3f} "
              f"{len(with_copy):17,}   " + ", ".join(f"{kind} {share:.2f}" for kind, share in by_kind.items()))
    flagged = {name: set(health.issues.loc[health.issues[name], "id"].tolist()) for name in BAD_PHOTOS}
    for name in BAD_PHOTOS:
        bad = set(plant.planted(name))
        print(f"{name}: {len(bad & flagged[name])} of {len(bad)} planted found; {len(flagged[name]):,} flagged in all "
              f"({len(flagged[name] - bad):,} of them not planted)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("pipeline", "page", "planted"):
        command = commands.add_parser(name)
        command.add_argument("--data", type=Path, default=SAMPLE)
        command.add_argument("--home", help="workspace (default: a fresh temporary one)")
        command.add_argument("--device", default="cpu")
    commands.choices["pipeline"].add_argument("--agreement", type=int, default=2000,
                                              help="photos compared with cleanvision on their sources (0: none)")
    commands.choices["planted"].add_argument("--copies", type=int, default=400)
    commands.choices["planted"].add_argument("--bad", type=int, default=100)
    commands.choices["planted"].add_argument("--seed", type=int, default=0)
    search_command = commands.add_parser("search")
    search_command.add_argument("--sizes", default="10000,44000,100000,300000,1000000")
    search_command.add_argument("--dim", type=int, default=1280, help="lite0's pooled features have 1280")
    search_command.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    {"pipeline": pipeline, "page": page, "search": search, "planted": planted}[args.command](args)


if __name__ == "__main__":
    main()
