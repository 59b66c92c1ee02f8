"""How long "Accept the sure ones" takes on a folder of new arrivals, and where the time goes.

    python tests/benchmarks/bench_bulk_accept.py --home WORKSPACE --run RUN_ID [--photos DIR] [--threshold 0.9]

Uses a finished run of workspace WORKSPACE (its best checkpoint, on the CPU as the dashboard
does) and a fresh label store in a temporary folder. Times, side by side, the page's three
steps: adding the folder's photos to the store ("Load folder"), the model's top proposals for
every photo ("Check the new photos", batch 32), and writing one review per accepted photo
("Accept"); then how many photos each threshold would accept.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from core.access.roles import Actor, Role  # noqa: E402
from core.data.catalogue import load_catalogue  # noqa: E402
from core.labels.queues import accept_confident, sure_enough, top_proposals  # noqa: E402
from core.labels.store import LabelStore  # noqa: E402
from core.model.predictor import expand_paths  # noqa: E402
from training.checkpoints import load_predictor  # noqa: E402
from training.registry import RunRegistry  # noqa: E402

DEFAULT_PHOTOS = REPO.parent / "shared" / "data" / "external" / "clothing"


BENCH = Actor("bench", Role.ADMIN)  # loads a folder of photos: an admin, no folder limits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True, help="the workspace holding the run")
    parser.add_argument("--run", required=True)
    parser.add_argument("--photos", default=str(DEFAULT_PHOTOS))
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args()

    os.environ["FASHION_TAGGER_HOME"] = args.home
    record = RunRegistry().get(args.run)
    catalogue = load_catalogue(record.config["data"])
    scratch = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    os.environ["FASHION_TAGGER_HOME"] = str(scratch)  # uploads and the store land in the scratch folder
    store = LabelStore(workspace=scratch, db_url=f"sqlite:///{scratch / 'labels.db'}")
    predictor = load_predictor(record.folder, "best")
    paths = expand_paths([args.photos])

    started = time.perf_counter()
    items = [store.add_image_file(catalogue.root, path, BENCH) for path in paths]
    add_s = time.perf_counter() - started
    started = time.perf_counter()
    proposals = top_proposals(predictor, {item.item: item.path for item in items})
    propose_s = time.perf_counter() - started
    started = time.perf_counter()
    result = accept_confident(store, items, proposals, args.threshold, BENCH, run_id=record.id)
    accept_s = time.perf_counter() - started

    read = [proposal for proposal in proposals.values() if not isinstance(proposal, str)]
    print(f"\nrun {record.id} ({record.config['backbone']}, {predictor.image_size} px); {len(items):,} photos "
          f"from {args.photos}; {len(read):,} read; {torch.get_num_threads()} torch threads")
    print(f"threshold {args.threshold}: {len(result.accepted):,} accepted, {len(result.unsure):,} left, "
          f"{len(result.unreadable):,} unreadable\n")
    print(f"{'step':52s} {'total s':>8s} {'ms/photo':>9s}")
    for name, seconds in (("Load folder: photos checked, copied, added", add_s),
                          ("Check the new photos: top proposals, batch 32", propose_s),
                          ("Accept: one review per accepted photo", accept_s)):
        print(f"{name:52s} {seconds:8.2f} {1000 * seconds / len(items):9.1f}")
    if result.accepted:
        print(f"\naccepting: {1000 * accept_s / len(result.accepted):.1f} ms per accepted photo; "
              f"checking takes {propose_s / accept_s:.1f}x as long as accepting")
    print("photos each threshold would accept (every head's top label a real label, at least that sure):")
    print("  " + "  ".join(f"{t:.1f}: {sum(sure_enough(proposal, t) for proposal in read):,}"
                           for t in (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)))


if __name__ == "__main__":
    main()
