"""Near-duplicates that re-encoding hides: copies of real sample photos, downscaled and saved again at
a low JPEG quality, planted among them; found by embedding similarity alone, and by embeddings plus
perceptual hashes (core.health.hashes), as data health and the grouped split find them.

    python tests/benchmarks/bench_near_duplicates.py [--data DIR] [--home WS] [--photos 2000] [--copies 40]
                                                     [--threshold 0.93] [--seed 0]

Photos: --photos rows of the catalogue whose photo is 224 x 224 (the real sample's most common size),
plus --copies planted copies of as many of them (tests/health_support.REENCODED in turn: 0.8 scale at
quality 55, 0.9 scale at quality 40). Embeddings: the offline pretrained backbone, cached in --home
(a temporary workspace by default). Printed side by side per method: recall (copies in one group with
their original), per kind and overall; groups; groups without a planted copy (false groups, unless
the catalogue itself holds a near-copy: listed so they can be looked at; a copy the hash joins to its
original can take such a group along); the pairs of catalogue photos the hash alone pairs; and the
hash distances that HASH_DISTANCE rests on. No timings: the numbers do not depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.data.catalogue import load_catalogue  # noqa: E402
from core.health.embedder import catalogue_embeddings, pretrained_model  # noqa: E402
from core.health.files import photo_hashes  # noqa: E402
from core.health.hashes import HASH_BITS, HASH_DISTANCE, hash_pairs  # noqa: E402
from core.health.similarity import (  # noqa: E402
    DEFAULT_THRESHOLD,
    SimilarityIndex,
    groups_of_pairs,
    nearest_neighbours,
    similar_pairs,
)

from health_support import REENCODED, planted_catalogue  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "fashion-sample"


def square_ids(folder: Path, side: int = 224) -> list[int]:
    """Ids of the catalogue rows whose photo is side x side (headers only)."""
    catalogue = load_catalogue(folder)
    found = []
    for product_id in catalogue.frame["id"].tolist():
        with Image.open(catalogue.image_path(product_id)) as photo:
            if photo.size == (side, side):
                found.append(product_id)
    return found


def scored(ids: list[int], pairs: np.ndarray, originals: dict[int, int], kinds: dict[int, str]) -> dict:
    """Recall per kind and overall, the groups, and the groups without a planted copy."""
    groups = [sorted(np.asarray(ids)[members].tolist()) for members in groups_of_pairs(len(ids), pairs)]
    group_of = {member: number for number, group in enumerate(groups) for member in group}
    together = {copy: group_of.get(copy, -1) == group_of.get(original, -2) for copy, original in originals.items()}
    recall = {kind: float(np.mean([hit for copy, hit in together.items() if kinds[copy] == kind]))
              for kind in dict.fromkeys(kinds.values())}
    recall["all"] = float(np.mean(list(together.values())))
    unplanted = [group for group in groups if not set(group) & set(originals)]
    return {"recall": recall, "groups": len(groups), "unplanted": unplanted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SAMPLE)
    parser.add_argument("--home", type=Path, default=None, help="workspace for the embeddings (default: temporary)")
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--copies", type=int, default=40)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.data / "styles.csv").is_file():
        raise SystemExit(f"no catalogue at {args.data}")
    with tempfile.TemporaryDirectory() as scratch:
        home = args.home or Path(scratch) / "ws"
        planted = planted_catalogue(args.data, Path(scratch) / "data", rows=args.photos, copies=args.copies,
                                    seed=args.seed, kinds=REENCODED, ids=square_ids(args.data))
        catalogue = load_catalogue(planted.folder)
        model = pretrained_model()
        print(f"{len(catalogue.frame):,} photos: {len(catalogue.frame) - len(planted.originals):,} of {args.data}, "
              f"{len(planted.originals)} planted copies; embeddings: {model.identity.description}", flush=True)
        embeddings = catalogue_embeddings(catalogue, model, home)
        ids = embeddings.ids.tolist()
        neighbours = nearest_neighbours(SimilarityIndex(embeddings.features), embeddings.features)
        by_embedding = similar_pairs(neighbours, args.threshold)
        hashes = photo_hashes(catalogue, ids, home, model.image_size)
        by_hash = hash_pairs(hashes)

    results = {
        f"embedding >= {args.threshold}": scored(ids, by_embedding, planted.originals, planted.kind),
        f"embedding + hash <= {HASH_DISTANCE} bits": scored(ids, np.concatenate([by_embedding, by_hash]),
                                                             planted.originals, planted.kind),
    }
    kinds = list(dict.fromkeys(planted.kind.values()))
    header = f"{'method':34s}" + "".join(f"{kind:>24s}" for kind in [*kinds, "all"]) + f"{'groups':>8s}{'false':>7s}"
    print(header)
    for method, result in results.items():
        print(f"{method:34s}" + "".join(f"{result['recall'][kind]:>24.3f}" for kind in [*kinds, "all"])
              + f"{result['groups']:>8,}{len(result['unplanted']):>7,}")
    for method, result in results.items():
        print(f"groups without a planted copy, {method}: {result['unplanted'][:20]}")

    planted_rows = {index for index, product_id in enumerate(ids) if product_id in planted.originals}
    embedding_pairs = set(map(tuple, by_embedding.tolist()))
    hash_alone = [(ids[a], ids[b]) for a, b in by_hash.tolist()
                  if (a, b) not in embedding_pairs and not {a, b} & planted_rows]
    print(f"pairs of catalogue photos (no planted copy) the hash alone pairs: {len(hash_alone)} {hash_alone[:20]}")
    row = {product_id: index for index, product_id in enumerate(ids)}
    bits = np.unpackbits(hashes, axis=1).astype(bool)
    copy_distance = [int((bits[row[copy]] != bits[row[original]]).sum())
                     for copy, original in planted.originals.items()]
    distinct = [row[i] for i in ids if i not in planted.originals]
    sample = np.random.default_rng(args.seed).permutation(distinct)[:1000]
    nearest = [int(np.delete((bits[distinct] != bits[i]).sum(axis=1), distinct.index(i)).min()) for i in sample]
    print(f"hash distances ({HASH_BITS} bits): copy to original max {max(copy_distance)}, "
          f"median {int(np.median(copy_distance))}; nearest distinct photo (1,000 of them) "
          f"0.5 / 1 / 5 % percentiles {np.percentile(nearest, [0.5, 1, 5]).round(1).tolist()}, "
          f"{sum(d <= HASH_DISTANCE for d in nearest)} within {HASH_DISTANCE} bits")


if __name__ == "__main__":
    main()
