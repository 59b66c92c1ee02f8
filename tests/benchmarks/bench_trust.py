"""The trust layer on the real sample: is every proposal a valid combination, is its confidence
calibrated, and how much of a catalogue needs no person at a chosen error, on rows that chose nothing.

    python tests/benchmarks/bench_trust.py [--run RUN_ID] [--parts /tmp/fashion-parts] [--epochs 2]
                                           [--image-size 160] [--external DIR]

Without --run it trains the default recipe (offline tf_efficientnet_lite0) on the train part of
the sample (sample_parts.py: 10,701 rows; the run's own validation split calibrates it), then:
  1. the run's validation evaluation, as written after training (each number from the half of
     the validation split that did not fit it);
  2. the untouched test part (1,181 rows, never seen, never chosen on): per head accuracy and
     macro-F1 decoded head by head and jointly, impossible combinations both ways, ECE before and
     after the temperature, coverage and realised error at E = 1 %, 2 %, 5 %, the share of head
     decisions and of whole products needing no person at 2 %, next to the old bulk rule ("every
     head's p >= 0.9");
  3. the external clothing photos (341, outside a studio), whose folder names are a coarse truth
     for masterCategory and articleType: accuracy both ways, and at 2 % how many are accepted and
     how many of those are wrong;
  4. the rules compared on the same checkpoint and the same validation rows (issue 24): thresholds
     certified with Bonferroni over the grid and no gate (the rule before), in a fixed sequence
     and no gate, and in a fixed sequence behind the typicality gate: on the test part, the share
     of head decisions and of products needing no person at 1 / 2 / 5 % and their realised error;
     on the external photos, how many masterCategory tags are accepted, how many wrong, and the
     Clopper-Pearson upper bound (95 %) on that error;
  5. the typicality gate's choices: for K nearest neighbours and refused shares, the AUROC of its
     score between the test part and the external photos, and the share of each it lets through.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from sample_parts import carve  # noqa: E402

from core.data.catalogue import load_catalogue  # noqa: E402
from core.data.schema import IGNORE_INDEX, LabelSchema  # noqa: E402
from core.evaluation.files import load_evaluation, read_features, read_report  # noqa: E402
from core.images.reading import expand_paths  # noqa: E402
from core.trust.abstention import DELTA, error_upper_bound  # noqa: E402
from core.trust.layer import TARGETS, Role, Trust, fit_calibration, roles  # noqa: E402
from core.trust.taxonomy import Taxonomy  # noqa: E402
from core.trust.typicality import Typicality  # noqa: E402
from training.checkpoints import load_predictor  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.evaluate import evaluate_checkpoint  # noqa: E402
from training.registry import RunRegistry  # noqa: E402
from training.run_folder import RunFolder  # noqa: E402
from training.train import train  # noqa: E402

EXTERNAL = REPO.parent / "shared" / "data" / "external" / "clothing"
GATE_SHARES = (0.1, 0.2)  # the refused shares gate_choices compares
OLD_BULK_THRESHOLD = 0.9  # the rule bulk acceptance had before: every head's raw p at least this
# The folder names of the external set as a coarse truth: masterCategory, and the articleTypes
# that count as right (None: any articleType of that masterCategory).
FOLDER_TRUTH = {
    "dress": ("Apparel", {"Dresses"}), "hat": ("Accessories", {"Caps", "Hat"}),
    "longsleeve": ("Apparel", {"Tshirts", "Shirts", "Tops", "Sweatshirts", "Sweaters", "Kurtas", "Tunics"}),
    "outwear": ("Apparel", {"Jackets", "Sweaters", "Sweatshirts", "Blazers", "Rain Jacket", "Nehru Jackets"}),
    "pants": ("Apparel", {"Trousers", "Jeans", "Track Pants", "Lounge Pants", "Capris", "Leggings"}),
    "shirt": ("Apparel", {"Shirts"}), "shoes": ("Footwear", None), "shorts": ("Apparel", {"Shorts", "Lounge Shorts"}),
    "skirt": ("Apparel", {"Skirts"}), "t-shirt": ("Apparel", {"Tshirts"}),
}


def trained_run(train_dir: Path, args) -> str:
    cfg = TrainConfig.from_recipe("default").with_overrides([
        f"data={train_dir}", "pretrained=offline", f"epochs={args.epochs}", f"image_size={args.image_size}",
        "num_workers=2", f"max_samples={args.max_samples or 'none'}"])
    started = time.perf_counter()
    record = train(cfg)
    print(f"run {record.id} ({record.status}) trained in {(time.perf_counter() - started) / 60:.1f} min "
          f"(train {record.metrics['train_rows']:,} rows, validation {record.metrics['val_rows']:,})")
    return record.id


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def print_report(title: str, report: dict) -> None:
    """The trust numbers of one evaluation report, as markdown tables."""
    trust, impossible = report["trust"], report["impossible"]
    print(f"\n### {title}: {report['rows']:,} rows\n")
    print(f"Impossible combinations: {pct(impossible['independent'])} head by head, "
          f"{pct(impossible['consistent'])} decoded jointly. Rows used: ECE {trust['rows']['ece']:,}, "
          f"errors at a target {trust['rows']['targets']:,}.\n")
    print("| head | acc indep. / joint | macro-F1 indep. / joint | T | ECE before / after | "
          + " | ".join(f"E={e:.0%}: accepted, error" for e in TARGETS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(TARGETS))
    for head, entry in report["heads"].items():
        independent, calibrated = report["independent"][head], trust["heads"][head]
        cells = [f"{pct(t['coverage'])}, {pct(t['error'])}" for t in (calibrated["targets"][str(e)] for e in TARGETS)]
        print(f"| {head} | {independent['accuracy']:.3f} / {entry['accuracy']:.3f} | "
              f"{independent['macro_f1']:.3f} / {entry['macro_f1']:.3f} | {calibrated['temperature']:.2f} | "
              f"{calibrated['ece_before']:.3f} / {calibrated['ece_after']:.3f} | " + " | ".join(cells) + " |")
    heads = trust["heads"].values()
    decisions = np.mean([entry["targets"]["0.02"]["coverage"] for entry in heads])
    print(f"\nAt E = 2 %: {decisions:.1%} of head decisions and {pct(trust['products']['0.02'])} of whole "
          "products need no person.")


def old_rule_share(folder: Path, name: str) -> float:
    """Share of the evaluation's rows the old bulk rule took: every head's raw argmax p >= 0.9."""
    import pandas as pd

    predictions = pd.read_parquet(folder / name / "predictions.parquet")
    heads = [column[:-len("_probs")] for column in predictions.columns if column.endswith("_probs")]
    least = np.min([np.stack(predictions[f"{head}_probs"].to_numpy()).max(axis=1) for head in heads], axis=0)
    return float((least >= OLD_BULK_THRESHOLD).mean())


def external(run_folder: Path, folder: Path) -> None:
    """Coarse-truth accuracy and acceptance on the external photos (module docstring, 3)."""
    predictor = load_predictor(run_folder)
    trust, schema = predictor.trust, predictor.schema
    paths = [path for path in expand_paths([folder]) if path.parent.name in FOLDER_TRUTH]
    images = [predictor.read_file(path) for path in paths]
    probs, features = predictor.outputs(images)
    both = {"head by head": trust.propose(probs, consistent=False, features=features),
            "jointly": trust.propose(probs, features=features)}
    accepted = trust.accepted(both["jointly"])
    print(f"\n### External photos ({folder}): {len(paths)} photos, folder name as truth\n")
    print("| head | accuracy head by head | accuracy jointly | accepted at 2 % | wrong among accepted |")
    print("|---|---|---|---|---|")
    for head in ("masterCategory", "articleType"):
        names = np.array(schema.classes[head], dtype=object)
        right = {how: np.array([_right(head, path.parent.name, label)
                                for path, label in zip(paths, names[proposals.labels[head]])])
                 for how, proposals in both.items()}
        taken = accepted[head]
        wrong = (f"{(~right['jointly'][taken]).mean():.1%} ({int((~right['jointly'][taken]).sum())})"
                 if taken.any() else "—")
        print(f"| {head} | {right['head by head'].mean():.3f} | {right['jointly'].mean():.3f} | "
              f"{taken.mean():.1%} ({int(taken.sum())}) | {wrong} |")
    impossible = {how: trust.paths.impossible(proposals.labels).mean() for how, proposals in both.items()}
    print(f"\nImpossible combinations: {impossible['head by head']:.1%} head by head, "
          f"{impossible['jointly']:.1%} jointly.")


def rule_variants(run: RunFolder) -> dict:
    """The run's trust layer refitted on its validation evaluation three ways (module docstring, 4)."""
    schema, taxonomy = LabelSchema.load(run.schema), Taxonomy.load(run.taxonomy)
    predictions = load_evaluation(run.evaluation()).predictions
    ids = predictions["id"].to_numpy()
    probs = {head: np.stack(predictions[f"{head}_probs"].to_numpy()) for head in schema.heads}
    catalogue = load_catalogue(TrainConfig.from_file(run.config).data)
    labels = schema.encode(catalogue.frame.set_index("id").loc[ids].reset_index())
    features = read_features(run.evaluation())
    plain = fit_calibration(schema, taxonomy, ids, labels, probs)
    unguided = {head: dataclasses.replace(selection, guide=None, guide_rows=0)
                for head, selection in plain.selections.items()}
    return {"Bonferroni, no gate (before)": Trust(schema, taxonomy, dataclasses.replace(plain, selections=unguided)),
            "fixed sequence, no gate": Trust(schema, taxonomy, plain),
            "fixed sequence + gate": Trust(schema, taxonomy, fit_calibration(schema, taxonomy, ids, labels, probs,
                                                                               features))}


def rules_compared(run: RunFolder, test_folder: Path, external_folder: Path) -> None:
    variants = rule_variants(run)
    schema = next(iter(variants.values())).schema
    test = load_evaluation(test_folder).predictions
    probs = {head: np.stack(test[f"{head}_probs"].to_numpy()) for head in schema.heads}
    catalogue = load_catalogue(read_report(test_folder)["data"])
    labels = schema.encode(catalogue.frame.set_index("id").loc[test["id"]].reset_index())
    features = read_features(test_folder)
    print(f"\n### The rules on the same checkpoint: the untouched test part ({len(test):,} rows)\n")
    print("| rule | typical | " + " | ".join(f"E={e:.0%}: decisions, error, products, to subCategory"
                                          for e in TARGETS) + " |")
    print("|---|---|" + "---|" * len(TARGETS))
    for name, trust in variants.items():
        proposals = trust.propose(probs, features=features)
        cells = []
        for target in TARGETS:
            accepted = trust.accepted(proposals, target)
            scored = {head: labels[:, column] != IGNORE_INDEX for column, head in enumerate(schema.heads)}
            taken = sum(int((accepted[head] & scored[head]).sum()) for head in schema.heads)
            wrong = sum(int((accepted[head] & scored[head] & (proposals.labels[head] != labels[:, column])).sum())
                        for column, head in enumerate(schema.heads))
            decisions = taken / sum(int(rows.sum()) for rows in scored.values())
            products = np.logical_and.reduce(list(accepted.values())).mean()
            sub = (accepted["masterCategory"] & accepted["subCategory"]).mean()
            cells.append(f"{decisions:.1%}, {pct(wrong / taken if taken else None)}, {products:.1%}, {sub:.1%}")
        print(f"| {name} | {proposals.typical.mean():.1%} | " + " | ".join(cells) + " |")
    if not external_folder.is_dir():
        return
    predictor = load_predictor(run.path)
    paths = [path for path in expand_paths([external_folder]) if path.parent.name in FOLDER_TRUTH]
    probs, features = predictor.outputs([predictor.read_file(path) for path in paths])
    names = np.array(schema.classes["masterCategory"], dtype=object)
    print(f"\n### The rules on the same checkpoint: {len(paths)} external photos, masterCategory at 2 %\n")
    print("| rule | typical | accepted | wrong | error | upper bound (95 %) |")
    print("|---|---|---|---|---|---|")
    for name, trust in variants.items():
        proposals = trust.propose(probs, features=features)
        taken = trust.accepted(proposals)["masterCategory"]
        right = np.array([_right("masterCategory", path.parent.name, label)
                          for path, label in zip(paths, names[proposals.labels["masterCategory"]])])
        wrong = int((taken & ~right).sum())
        bound = error_upper_bound(np.array([wrong]), np.array([int(taken.sum())]), DELTA)[0]
        print(f"| {name} | {proposals.typical.mean():.1%} | {int(taken.sum())} ({taken.mean():.1%}) | {wrong} | "
              f"{pct(wrong / taken.sum() if taken.any() else None)} | {bound:.1%} |")


def gate_choices(run: RunFolder, test_folder: Path, external_folder: Path) -> None:
    """Which K and refused share separate studio photos from external ones (module docstring, 5)."""
    from sklearn.metrics import roc_auc_score

    ids = load_evaluation(run.evaluation()).predictions["id"].to_numpy()
    features = read_features(run.evaluation())
    reference_ids, reference = ids[roles(ids) == Role.CALIBRATION], features[roles(ids) == Role.CALIBRATION]
    predictor = load_predictor(run.path)
    paths = [path for path in expand_paths([external_folder]) if path.parent.name in FOLDER_TRUTH]
    studio, external = read_features(test_folder), predictor.outputs([predictor.read_file(path) for path in paths])[1]
    print(f"\n### The gate's K: {len(reference_ids)} reference rows, the test part against {len(paths)} "
          "external photos\n")
    print("| K | AUROC studio vs external | " + " | ".join(f"refusing {share:.0%}: studio / external let through"
                                                       for share in GATE_SHARES) + " |")
    print("|---|---|" + "---|" * len(GATE_SHARES))
    for neighbours in (1, 3, 10, 50):
        cells = []
        for share in GATE_SHARES:
            gate = Typicality.fit(reference_ids, reference, neighbours, share)
            scores = gate.scores(studio), gate.scores(external)
            cells.append(f"{gate.typical(scores[0]).mean():.0%} / {gate.typical(scores[1]).mean():.0%}")
        auroc = roc_auc_score(np.r_[np.zeros(len(scores[0])), np.ones(len(scores[1]))], np.concatenate(scores))
        print(f"| {neighbours} | {auroc:.3f} | " + " | ".join(cells) + " |")


def _right(head: str, folder: str, label: str) -> bool:
    master, articles = FOLDER_TRUTH[folder]
    if head == "masterCategory":
        return label == master
    return label in articles if articles is not None else True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="a run of the workspace trained on the train part (skips training)")
    parser.add_argument("--parts", type=Path, default=Path("/tmp/fashion-parts"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--max-samples", type=int, help="cap on the train part's rows (a quick run)")
    parser.add_argument("--external", type=Path, default=EXTERNAL)
    args = parser.parse_args()
    train_dir, test_dir = carve(args.parts)
    run_id = args.run or trained_run(train_dir, args)
    run = RunFolder(RunRegistry().get(run_id).folder)
    validation = read_report(run.evaluation())
    print_report("The run's validation split (each number from the half that did not fit it)", validation)
    started = time.perf_counter()
    folder, test = evaluate_checkpoint(run.path, test_dir)
    print(f"\n(test part evaluated in {time.perf_counter() - started:.0f} s)")
    print_report("The untouched test part", test)
    print(f"\nThe old bulk rule (every head's p >= {OLD_BULK_THRESHOLD}) took "
          f"{old_rule_share(run.path, folder.name):.1%} of the test part's products, "
          f"{old_rule_share(run.path, 'evaluation'):.1%} of the validation split's.")
    if args.external.is_dir():
        external(run.path, args.external)
    else:
        print(f"\n{args.external} is absent: no external check")
    rules_compared(run, folder, args.external)
    if args.external.is_dir():
        gate_choices(run, folder, args.external)


if __name__ == "__main__":
    main()
