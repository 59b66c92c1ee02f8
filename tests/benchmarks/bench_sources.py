"""Trust per source on real photos (issue 24): a mixed stream, studio photos then external ones
arriving in the same source, with audits and the alarm; and an external source certified on its
own reviewed photos.

    FASHION_TAGGER_HOME=/tmp/bench-trust-home python tests/benchmarks/bench_sources.py --run RUN_ID
                                     [--parts /tmp/fashion-parts] [--replays 500] [--target 0.02]

Takes a run of bench_trust.py (trained on the sample's train part, evaluated on its test part:
evaluation-test/) and the external photos (folder names as a coarse truth for masterCategory).
  1. The stream: the test part's studio photos in a random order, then the external photos, all
     as one source, each accepted at the target under two rules: the run's thresholds behind the
     typicality gate (the product's rule), and the same thresholds with no gate (a gate that lets
     a new kind of photo through). A share of the accepted photos is audited (a person decides;
     their decision is the truth). Per rule and audit share, over `--replays` random orders and
     audit draws: how often the alarm fires during the studio part (a false alarm: their error is
     within the target), how many external photos and audits it takes to fire, and how many
     wrong masterCategory tags reached the catalogue before it did, against none stopping them.
  2. The external photos as their own source: a person reviews the first half (in a random
     order); the source is certified on those decisions (core.trust.sources.source_selection);
     on the second half, how many masterCategory tags are accepted, how many wrong, and the
     Clopper-Pearson bound; and how many more reviewed photos would certify it where it is not.
  3. The price of the default (a new source reviewed whole until certified) on a source of studio
     photos (the test part): certified on its first n reviewed photos, over 20 random orders, how
     often it is certified and what it then accepts of the other half, with the errors.
Only the heads with a truth are scored: every head on studio photos, masterCategory on external ones.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from bench_trust import EXTERNAL, FOLDER_TRUTH, _right, rule_variants  # noqa: E402
from sample_parts import carve  # noqa: E402

from core.data.catalogue import load_catalogue  # noqa: E402
from core.evaluation.files import load_evaluation, read_features, read_report  # noqa: E402
from core.images.reading import expand_paths  # noqa: E402
from core.trust.abstention import DELTA, error_upper_bound  # noqa: E402
from core.trust.sources import ALARM_FALSE_RATE, more_rows_needed, source_selection, watch  # noqa: E402
from training.checkpoints import load_predictor  # noqa: E402
from training.registry import RunRegistry  # noqa: E402
from training.run_folder import RunFolder  # noqa: E402

HEAD = "masterCategory"  # the head with a truth on both kinds of photo
AUDIT_SHARES = (0.05, 0.2, 1.0)  # 1.0: the default until a source is certified (every photo to a person)


def scored_stream(run: RunFolder, test_folder: Path, external: Path):
    """Per rule: (accepted bool [n], right bool [n]) for HEAD over the studio photos then the
    external ones; and n_studio, the proposals' confidence [n] (joint, calibrated) per rule."""
    variants = rule_variants(run)
    rules = {"gate (the product's rule)": variants["fixed sequence + gate"],
             "no gate (a gate that fails)": variants["fixed sequence, no gate"]}
    schema = next(iter(rules.values())).schema
    test = load_evaluation(test_folder).predictions
    catalogue = load_catalogue(read_report(test_folder)["data"])
    truth = catalogue.frame.set_index("id").loc[test["id"], HEAD].to_numpy()
    studio_probs = {head: np.stack(test[f"{head}_probs"].to_numpy()) for head in schema.heads}
    studio_features = read_features(test_folder)
    predictor = load_predictor(run.path)
    paths = [path for path in expand_paths([external]) if path.parent.name in FOLDER_TRUTH]
    external_probs, external_features = predictor.outputs([predictor.read_file(path) for path in paths])
    names = np.array(schema.classes[HEAD], dtype=object)
    out = {}
    for name, trust in rules.items():
        studio = trust.propose(studio_probs, features=studio_features, ids=test["id"].to_numpy())
        outside = trust.propose(external_probs, features=external_features)
        accepted = np.r_[trust.accepted(studio)[HEAD], trust.accepted(outside)[HEAD]]
        outside_labels = names[outside.labels[HEAD]]
        right = np.r_[names[studio.labels[HEAD]] == truth,
                      [_right(HEAD, path.parent.name, label) for path, label in zip(paths, outside_labels)]]
        confidence = np.r_[studio.confidence[HEAD], outside.confidence[HEAD]]
        out[name] = (accepted, right, confidence, trust)
    return out, len(test), paths


def replay_stream(accepted, right, n_studio: int, share: float, target: float, replays: int, rng) -> dict:
    """The alarm over random orders (studio first, external after) and audit draws (module docstring, 1)."""
    false_alarms, fired_external, audits_to_fire, wrong_before, wrong_unstopped = 0, [], [], [], []
    studio, outside = np.arange(n_studio), np.arange(n_studio, len(accepted))
    for _ in range(replays):
        order = np.r_[rng.permutation(studio), rng.permutation(outside)]
        taken, good = accepted[order], right[order]
        audited = taken & (rng.random(len(order)) < share)
        alarm = watch(~good[audited], target)
        wrong_unstopped.append(int((taken & ~audited & ~good)[n_studio:].sum()))
        if not alarm.fired:
            wrong_before.append(wrong_unstopped[-1])
            continue
        at = np.flatnonzero(audited)[alarm.fired_at - 1]  # the photo whose audit fired it
        if at < n_studio:
            false_alarms += 1
            continue
        fired_external.append(at - n_studio + 1)
        audits_to_fire.append(int(audited[n_studio:at + 1].sum()))
        wrong_before.append(int((taken & ~audited & ~good)[n_studio:at + 1].sum()))
    return {"false_alarms": false_alarms / replays, "fired": len(fired_external) / replays,
            "photos": np.median(fired_external) if fired_external else None,
            "audits": np.median(audits_to_fire) if audits_to_fire else None,
            "wrong_before": float(np.mean(wrong_before)), "wrong_unstopped": float(np.mean(wrong_unstopped))}


def own_source(accepted, right, confidence, trust, n_studio: int, target: float, rng) -> None:
    """The external photos as a source of their own, certified on half of them (module docstring, 2)."""
    outside = rng.permutation(np.arange(n_studio, len(accepted)))
    reviewed, later = outside[:len(outside) // 2], outside[len(outside) // 2:]
    run_selection = trust.calibration.selections[HEAD]
    selection = source_selection(confidence[reviewed], right[reviewed], run_selection)
    for error in (target, 0.05):
        threshold = selection.threshold(error, trust.calibration.delta)
        needed = more_rows_needed(selection, error, trust.calibration.delta)
        if threshold is None:
            print(f"| {error:.0%} | {len(reviewed)} | not certified ("
                  + ("its decisions' error is above it" if needed is None else f"{needed:,} more reviewed photos")
                  + ") | 0 | 0 | — |")
            continue
        taken = confidence[later] >= threshold
        wrong = int((taken & ~right[later]).sum())
        bound = error_upper_bound(np.array([wrong]), np.array([int(taken.sum())]), DELTA)[0]
        print(f"| {error:.0%} | {len(reviewed)} | p ≥ {threshold:.4f} | {int(taken.sum())} of {len(later)} | "
              f"{wrong} | {bound:.1%} |")


def studio_source(right, confidence, trust, n_studio: int, target: float, rng, orders: int = 20) -> None:
    """The price of reviewing a new source whole until it is certified, on a source of studio
    photos: certified on its first n reviewed photos (random orders), what it accepts of the
    other half (module docstring, 3)."""
    run_selection = trust.calibration.selections[HEAD]
    for reviewed_count in (25, 50, 100, 200, 400, n_studio // 2):
        certified, taken, wrong = 0, [], []
        for _ in range(orders):
            order = rng.permutation(n_studio)
            reviewed, later = order[:reviewed_count], order[n_studio // 2:] if reviewed_count <= n_studio // 2 else []
            selection = source_selection(confidence[reviewed], right[reviewed], run_selection)
            threshold = selection.threshold(target, trust.calibration.delta)
            if threshold is None:
                taken.append(0), wrong.append(0)
                continue
            certified += 1
            accepted = confidence[later] >= threshold
            taken.append(int(accepted.sum())), wrong.append(int((accepted & ~right[later]).sum()))
        print(f"| {reviewed_count} | {certified} of {orders} | {np.median(taken):.0f} of {n_studio - n_studio // 2} "
              f"({np.median(taken) / (n_studio - n_studio // 2):.0%}) | {np.sum(wrong)} of {np.sum(taken)} "
              f"({np.sum(wrong) / max(np.sum(taken), 1):.1%}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a bench_trust.py run of the workspace")
    parser.add_argument("--parts", type=Path, default=Path("/tmp/fashion-parts"))
    parser.add_argument("--external", type=Path, default=EXTERNAL)
    parser.add_argument("--replays", type=int, default=500)
    parser.add_argument("--target", type=float, default=0.02)
    args = parser.parse_args()
    carve(args.parts)
    run = RunFolder(RunRegistry().get(args.run).folder)
    test_folder = run.evaluation("evaluation-test")
    if not test_folder.is_dir():
        sys.exit(f"{test_folder} is missing: run bench_trust.py --run {args.run} first (it evaluates the test part)")
    streams, n_studio, paths = scored_stream(run, test_folder, args.external)
    rng = np.random.default_rng(0)
    print(f"\n### 1. One source: {n_studio:,} studio photos, then {len(paths)} external ones; {HEAD} at "
          f"{args.target:.0%}; {args.replays} replays (alarm's false-alarm rate {ALARM_FALSE_RATE:.0%})\n")
    print("| rule | accepted studio / external (wrong) | audit share | false alarms on studio | fired on external | "
          "external photos to fire (median) | audits to fire | wrong tags accepted before the stop / never stopped |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (accepted, right, _, _) in streams.items():
        counts = (f"{int(accepted[:n_studio].sum())} ({int((accepted & ~right)[:n_studio].sum())}) / "
                  f"{int(accepted[n_studio:].sum())} ({int((accepted & ~right)[n_studio:].sum())})")
        for share in AUDIT_SHARES:
            result = replay_stream(accepted, right, n_studio, share, args.target, args.replays, rng)
            photos = "—" if result["photos"] is None else f"{result['photos']:.0f}"
            audits = "—" if result["audits"] is None else f"{result['audits']:.0f}"
            print(f"| {name} | {counts} | {share:.0%} | {result['false_alarms']:.1%} | {result['fired']:.0%} | "
                  f"{photos} | {audits} | {result['wrong_before']:.1f} / {result['wrong_unstopped']:.1f} |")
    print(f"\n### 2. The external photos as their own source, certified on half of them ({HEAD})\n")
    print("| target | reviewed | certified | accepted of the other half | wrong | upper bound (95 %) |")
    print("|---|---|---|---|---|---|")
    accepted, right, confidence, trust = streams["gate (the product's rule)"]
    own_source(accepted, right, confidence, trust, n_studio, args.target, rng)
    print(f"\n### 3. A new source of studio photos, reviewed whole until certified ({HEAD} at {args.target:.0%})\n")
    print("| reviewed photos | orders certified | accepted of the other half (median) | wrong of accepted (all "
          "orders) |")
    print("|---|---|---|---|")
    studio_source(right, confidence, trust, n_studio, args.target, rng)


if __name__ == "__main__":
    main()
