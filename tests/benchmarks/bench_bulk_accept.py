"""How long "Accept the sure ones" takes on a folder of new arrivals, and where the time goes.

    python tests/benchmarks/bench_bulk_accept.py --home WORKSPACE --run RUN_ID [--photos DIR] [--target-error 0.02]

Uses a finished run of workspace WORKSPACE (its best checkpoint, on the CPU as the dashboard
does) and a fresh label store in a temporary folder. Times, side by side, the page's three
steps: adding the folder's photos to the store ("Load folder"), the model's top proposals for
every photo ("Check the new photos", batch 32), and writing one review per accepted photo
("Accept") at the run's thresholds for the target error; then how many head decisions each target
would accept, and how many photos the typicality gate refused.
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
from core.images.reading import expand_paths  # noqa: E402
from core.labels.queues import accept_confident, sure_heads, top_proposals  # noqa: E402
from core.labels.store import LabelStore  # noqa: E402
from training.checkpoints import load_predictor  # noqa: E402
from training.registry import RunRegistry  # noqa: E402

DEFAULT_PHOTOS = REPO.parent / "shared" / "data" / "external" / "clothing"


BENCH = Actor("bench", Role.ADMIN)  # loads a folder of photos: an admin, no folder limits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True, help="the workspace holding the run")
    parser.add_argument("--run", required=True)
    parser.add_argument("--photos", default=str(DEFAULT_PHOTOS))
    parser.add_argument("--target-error", type=float, default=0.02)
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
    thresholds = predictor.trust.thresholds(args.target_error)
    result = accept_confident(store, items, proposals, thresholds, BENCH, run_id=record.id)
    accept_s = time.perf_counter() - started

    read = [proposal for proposal in proposals.values() if not isinstance(proposal, str)]
    print(f"\nrun {record.id} ({record.config['backbone']}, {predictor.image_size} px); {len(items):,} photos "
          f"from {args.photos}; {len(read):,} read; {torch.get_num_threads()} torch threads")
    print(f"target error {args.target_error:.0%}: {result.heads_accepted:,} head decisions accepted "
          f"({len(result.completed):,} photos complete, {len(result.partial):,} in part), {result.heads_left:,} left; "
          f"{len(result.unreadable):,} unreadable, {sum(not proposal.typical for proposal in read):,} unlike the "
          "calibration photos\n")
    print(f"{'step':52s} {'total s':>8s} {'ms/photo':>9s}")
    for name, seconds in (("Load folder: photos checked, copied, added", add_s),
                          ("Check the new photos: top proposals, batch 32", propose_s),
                          ("Accept: one review per photo with an accepted head", accept_s)):
        print(f"{name:52s} {seconds:8.2f} {1000 * seconds / len(items):9.1f}")
    if result.actions:
        print(f"\naccepting: {1000 * accept_s / len(result.actions):.1f} ms per photo written; "
              f"checking takes {propose_s / accept_s:.1f}x as long as accepting")
    print("head decisions each target error would accept:")
    for target in (0.01, 0.02, 0.05, 0.1):
        taken = sum(len(sure_heads(proposal, predictor.trust.thresholds(target))) for proposal in read)
        print(f"  {target:.0%}: {taken:,}")


if __name__ == "__main__":
    main()
