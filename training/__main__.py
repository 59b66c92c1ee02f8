"""`python -m training fit|runs|show|evaluate|predict|calibrate|serve|crossval|health`: train, list runs, show,
evaluate or calibrate one, tag photos, serve them over HTTP, rank label issues, check a catalogue's data health.

    python -m training fit --data DIR [--recipe default|seed|gpu] [--config FILE] [--set key=value ...] [--json]
    python -m training fit --resume RUN_ID [--json]
    python -m training runs [--json]
    python -m training show RUN_ID [--json]
    python -m training evaluate RUN_ID [--data DIR | --test-part] [--checkpoint best|last|FILE] [--engine local|ray]
                                  [--json]
    python -m training predict RUN_ID SRC... [--checkpoint best|last|FILE] [--top-k 3] [--batch-size 32]
                                         [--device auto|cpu|cuda] [--target-error 0.02] [--json] [--csv FILE]
                                         [--out DIR [--part-size 1000]] [--engine local|ray]
                                         [--source NAME [--dataset DIR]]
    python -m training calibrate RUN_ID [--source NAME [--dataset DIR]] [--json]
    python -m training serve RUN_ID [--checkpoint best|last|FILE] [--host 127.0.0.1] [--port 8000]
                                [--device auto|cpu|cuda] [--top-k 3] [--target-error 0.02] [--max-batch-size 32]
                                [--batch-timeout 0.01] [--api-key-env NAME] [--max-request-mb 20] [--timeout 30]
                                [--source NAME [--dataset DIR]]
    python -m training crossval --data DIR --folds K [--recipe seed] [--config FILE] [--set key=value ...] [--json]
    python -m training health DIR [--run RUN_ID] [--threshold 0.93] [--device auto|cpu|cuda] [--engine local|ray]
                                  [--json]
    --engine ray [--address ADDR] [--workers N] [--cpus-per-worker 1]: on a Ray cluster (training.scale).

With --json the last line printed is JSON: the run record (fit, show), a list of them (runs), or
the per-head summary {head: {accuracy, macro_f1, weighted_f1, support, excluded, unknown}} (evaluate,
core.evaluation.files.head_summary).
`health --json` ends with core.health.files.health_summary: {"near_duplicates": [[ids]], "leakage": [[ids]],
"outliers": [ids], "image_issues": {type: [ids]}, "unreadable": {id: why}, ...}; its progress goes to stderr.
`predict --json` prints only JSON lines, one per input image: {"path", "predictions": {head:
[{"label", "p"}, ...]}, "accepted": {head: label or null}, "source", "rules"} or {"path", "error"}; it
exits 0 when at least one image was read, else 1. The first label of a head is its proposal (consistent
with the taxonomy, calibrated: core.trust.layer); "accepted" holds it where the head needs no person at
--target-error, null where a person must decide, under the rules of --source in the label store (its
own certification, its alarms), else the run's gated rule ("source": null); "rules" says per head
which rule applied and why (training.acceptance); with the run's typicality gate also "typicality"
(the score), "typical" and, for a photo unlike the calibration photos, "note". `predict --csv FILE`
also writes a row per image, line by line: path, <head>, <head>_p, <head>_accepted for each head,
error; a cell a spreadsheet would run as a formula (a label or path starting with = + - @) starts
with a single quote.
`predict --out DIR` writes the same records as Parquet parts (one per --part-size inputs; a job
started again skips the parts already there) and DIR/summary.json, whose JSON `--json` then prints;
`--engine ray` needs --out. SRC: image files, folders, catalogue folders (styles.csv + images/), or
.txt/.lst files listing paths one a line (training.scale.source_paths).
The command line acts as the machine's user, an admin (core.access.roles.command_line_actor).
`serve` answers POST /predict with the object one line of `predict --json` holds (training.serve).
User errors (bad config value, unknown run, bad dataset), and a workspace database kept busy by
another process, print `error: ...` and exit 2; a run that fails exits 1 after recording the error
in the registry; `serve` exits 1 after one `error: ...` line when its model worker dies (for a
supervisor to restart it).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import time
from pathlib import Path

from core.access.database import DatabaseBusy
from core.data import CatalogueError
from core.health.similarity import DEFAULT_THRESHOLD
from core.images.reading import ACCEPTED_EXTENSIONS
from core.trust.abstention import TARGET_ERROR
from core.trust.typicality import UNLIKE_CALIBRATION
from training.registry import RunState
from training.scale import PART_SIZE, PATH_LISTS, Engine
from training.status import format_duration, summary_frame, summary_of_test_part

UNREADABLE_SHOWN = 10  # unreadable photos `health` names in its text; --json lists every one


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="train a model (a new run, or --resume one)")
    fit.add_argument("--data", help="dataset folder (styles.csv + images/); default FASHION_TAGGER_DATA, else the demo")
    fit.add_argument("--recipe", help="preset to start from: default (ours), seed (the seed notebook) or gpu "
                                      "(EfficientNet-B3 for one GPU); the README's Recipes say what each measured")
    fit.add_argument("--config", help="a JSON or TOML file of TrainConfig fields (may name its recipe)")
    fit.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config fields")
    fit.add_argument("--resume", metavar="RUN_ID", help="continue a failed or cancelled run from its last checkpoint")
    fit.add_argument("--run-id", help=argparse.SUPPRESS)  # adopt a run the dashboard registered (or requeued) as queued
    fit.add_argument("--json", action="store_true", help="print the run record as JSON on the last line")
    runs = commands.add_parser("runs", help="list runs, newest first")
    runs.add_argument("--json", action="store_true")
    show = commands.add_parser("show", help="one run's record")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    evaluate = commands.add_parser(
        "evaluate", help="evaluate a run's checkpoint on its validation split, its dataset's fixed test part, or "
                         "every row of another catalogue")
    evaluate.add_argument("run_id")
    where = evaluate.add_mutually_exclusive_group()
    where.add_argument("--data", help="catalogue folder (reports go to <run>/evaluation-<folder name>/); "
                                      "default: the run's validation split (<run>/evaluation/)")
    where.add_argument("--test-part", action="store_true",
                       help="the dataset's fixed test part, rows the run never trained or validated on "
                            "(<run>/evaluation.test-part/)")
    evaluate.add_argument("--checkpoint", default="best",
                          help="best (default), last, or a file in the run's checkpoints/")
    evaluate.add_argument("--json", action="store_true", help="print the per-head summary as JSON on the last line")
    add_engine_options(evaluate)
    predict = commands.add_parser("predict", help="tag image files (or folders of them) with a run's model")
    predict.add_argument("run_id")
    predict.add_argument("paths", nargs="+", metavar="SRC",
                         help="image files, folders searched recursively for ." + ", .".join(ACCEPTED_EXTENSIONS)
                         + ", catalogue folders (styles.csv + images/), or ." + "/.".join(PATH_LISTS)
                         + " files listing paths, one a line")
    predict.add_argument("--checkpoint", default="best",
                         help="best (default), last, or a file in the run's checkpoints/")
    predict.add_argument("--top-k", type=int, default=3, help="labels per head (default 3)")
    predict.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    predict.add_argument("--device", default="auto", help="auto (default: a CUDA GPU when there is one, else the CPU), "
                                                          "cpu or cuda")
    predict.add_argument("--target-error", type=float, default=TARGET_ERROR,
                         help="accept a head's proposal where its error rate is at most this (default 0.02)")
    predict.add_argument("--json", action="store_true", help="one JSON object per image, one per line, nothing else")
    predict.add_argument("--csv", metavar="FILE", help="also write one row per image to FILE: path, each head's top "
                                                       "label and p, error (written as batches finish)")
    predict.add_argument("--out", metavar="DIR", help="write the records as Parquet parts and summary.json in DIR; a "
                                                      "job started again skips the parts already there")
    predict.add_argument("--part-size", type=int, default=PART_SIZE,
                         help=f"input photos per Parquet part (default {PART_SIZE})")
    add_source_options(predict, "accept each photo's heads")
    add_engine_options(predict)
    calibrate = commands.add_parser(
        "calibrate", help="fit (or refit) a run's trust layer from its validation evaluation: taxonomy, "
                          "temperatures, thresholds")
    calibrate.add_argument("run_id")
    calibrate.add_argument("--source", help="certify this source's heads on the decisions people made on its photos "
                                            "(a folder's name, 'uploads', 'catalogue') instead")
    calibrate.add_argument("--dataset", help="with --source: the dataset the photos were reviewed in (default: "
                                             "the run's)")
    calibrate.add_argument("--json", action="store_true", help="print the trust assessment as JSON on the last line")
    serve = commands.add_parser("serve", help="serve a run's model over HTTP (LitServe): POST /predict, one photo "
                                              "per request, batched")
    serve.add_argument("run_id")
    serve.add_argument("--checkpoint", default="best", help="best (default), last, or a file in the run's checkpoints/")
    serve.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default: this machine only), 0.0.0.0 or ::")
    serve.add_argument("--port", type=int, default=8000, help="default 8000")
    serve.add_argument("--device", default="auto", help="auto (default: every CUDA GPU, one model copy each, when "
                                                        "there is one; else the CPU), cpu or cuda")
    serve.add_argument("--top-k", type=int, default=3, help="labels per head (default 3)")
    serve.add_argument("--target-error", type=float, default=0.02,
                       help="the error an accepted tag may have, between 0 and 1 (default 0.02)")
    serve.add_argument("--max-batch-size", type=int, default=32, help="requests per forward pass at most (default 32)")
    serve.add_argument("--batch-timeout", type=float, default=0.01,
                       help="seconds a batch waits for more requests (default 0.01)")
    serve.add_argument("--api-key-env", metavar="NAME",
                       help="require the API key held by environment variable NAME in each request's X-API-Key header")
    serve.add_argument("--max-request-mb", type=float, default=20.0,
                       help="larger requests are refused with 413 (default 20; 1 MB = 2**20 bytes)")
    serve.add_argument("--timeout", type=float, default=30.0,
                       help="seconds a request may wait for the model: then 504; when more are waiting than that "
                            "can serve, new ones get 503 with Retry-After (default 30)")
    add_source_options(serve, "for requests that name no source (their field 'source'), accept the heads")
    crossval = commands.add_parser(
        "crossval", help="out-of-sample probabilities for every row (K models) and label issues")
    crossval.add_argument("--folds", type=int, required=True, metavar="K", help="folds (models), at least 2")
    crossval.add_argument("--data", help="dataset folder, as for fit")
    crossval.add_argument("--recipe", help="preset, as for fit")
    crossval.add_argument("--config", help="config file, as for fit")
    crossval.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config fields")
    crossval.add_argument("--json", action="store_true",
                          help="print {id, folder, rows, issues: {head: count}} as JSON on the last line")
    health = commands.add_parser(
        "health", help="near-duplicates, split leakage, outliers and image-quality issues of a catalogue")
    health.add_argument("data", metavar="DIR", help="catalogue folder (styles.csv + images/)")
    health.add_argument("--run", metavar="RUN_ID",
                        help="embed with this run's best checkpoint and count leakage over its split (default: the "
                             "pretrained backbone, the default split)")
    health.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"cosine similarity at which photos are near-duplicates (default {DEFAULT_THRESHOLD})")
    health.add_argument("--device", default="auto", help="auto (default: a CUDA GPU when there is one), cpu or cuda")
    health.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    add_engine_options(health)
    return parser


def add_engine_options(command: argparse.ArgumentParser) -> None:
    """--engine and the Ray cluster's options (training.scale.engine_of reads them)."""
    command.add_argument("--engine", default=Engine.LOCAL, choices=list(Engine),
                         help="local (default: this process) or ray (a Ray cluster; "
                              "pip install -r requirements-ray.txt)")
    command.add_argument("--address", help="the Ray cluster's address (ray start --head prints it; default: "
                                           "RAY_ADDRESS, else a cluster started for this command)")
    command.add_argument("--workers", type=int, help="model copies on the cluster (default: one per GPU, or 1)")
    command.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs (torch threads) per worker (default 1)")


def cluster_of(args: argparse.Namespace):
    """The RayCluster the options name, None for the local engine."""
    from training.scale import engine_of

    return engine_of(args.engine, args.address, args.workers, args.cpus_per_worker)


def config_from_args(args: argparse.Namespace):
    """The TrainConfig that `fit`'s arguments describe (recipe, then file, then --data, then --set)."""
    from training.config import TrainConfig

    if args.config:
        cfg = TrainConfig.from_file(args.config)
        if args.recipe:
            raise ValueError("give the recipe either in --config or with --recipe, not both")
    else:
        cfg = TrainConfig.from_recipe(args.recipe or "default")
    overrides = ([f"data={args.data}"] if args.data else []) + list(args.set)
    return cfg.with_overrides(overrides) if overrides else cfg


def describe(record) -> str:
    """A few human lines about a run."""
    lines = [f"run {record.id}: {record.status}", f"  folder   {record.folder}"]
    if record.device:
        lines.append(f"  device   {record.device}; weights {record.weights}")
    if record.best_metric is not None:
        lines.append(f"  best     {record.best_metric_name} = {record.best_metric:.4f}")
    summary = summary_frame(record)
    lines += [head_line(head, numbers) for head, numbers in summary.iterrows()]
    test = summary_of_test_part(record)
    if test is not None:
        lines.append(f"  test     {test}")
    if record.error:
        lines.append(f"  error    {record.error.splitlines()[0]}")
    return "\n".join(lines)


def fit(args: argparse.Namespace) -> int:
    from core.access.roles import command_line_actor
    from training.config import TrainConfig
    from training.registry import RunRegistry
    from training.run_folder import RunFolder
    from training.train import train

    registry = RunRegistry()
    if args.resume:
        if args.data or args.config or args.recipe or args.set:
            raise ValueError("--resume continues a run with its own config; drop --data/--config/--recipe/--set")
        record = registry.get(args.resume)
        cfg = TrainConfig.from_dict(record.config)
        if args.run_id != record.id:  # the dashboard requeues the run itself before starting this process
            RunFolder(record.folder).resume_checkpoint()  # a run that cannot be resumed stays as it was
            registry.reopen(record.id, command_line_actor().identity)
        run_id, resume = record.id, True
    else:
        cfg, run_id, resume = config_from_args(args), args.run_id, False
    try:
        record = train(cfg, run_id=run_id, registry=registry, resume=resume)
    except (CatalogueError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # recorded in the registry by train()
        print(f"error: the run failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(describe(record))
    if args.json:
        print(json.dumps(record.as_dict()))
    return 0 if record.status in (RunState.FINISHED, RunState.CANCELLED) else 1


def head_line(head: str, numbers) -> str:
    """One head's accuracy, macro-F1 and support (a `head_summary` entry) on one line."""
    return f"  {head:15s} acc {numbers['accuracy']:.3f}  macro-F1 {numbers['macro_f1']:.3f}  (n={numbers['support']})"


def evaluate(args: argparse.Namespace) -> int:
    from core.evaluation.files import head_summary, unknown_names
    from training.evaluate import evaluate_checkpoint
    from training.registry import RunRegistry

    cluster = cluster_of(args)
    record = RunRegistry().get(args.run_id)
    try:
        folder, report = evaluate_checkpoint(record.folder, args.data, args.checkpoint, cluster, args.test_part)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    engine = "" if cluster is None else f", on {cluster.describe()}"
    print(f"run {record.id}, checkpoint {report['checkpoint']}: {report['rows']:,} images of {report['data']}{engine}")
    print(f"  reports  {folder}")
    if "trust" in report:
        print(f"  {trust_summary(report)}")
    summary = head_summary(report)
    for head, numbers in summary.items():
        unknown = report["heads"][head]["unknown_classes"]
        print(head_line(head, numbers) + (f"  unknown classes: {unknown_names(unknown)}" if unknown else ""))
    if args.json:
        print(json.dumps(summary))
    return 0


def add_source_options(command: argparse.ArgumentParser, what: str) -> None:
    command.add_argument("--source", help=f"{what} under this source's rules in the label store (its own "
                                          "certification, its alarms; training.acceptance) instead of the run's "
                                          "gated rule: a folder's name, 'uploads', 'catalogue'")
    command.add_argument("--dataset", help="with --source: the dataset the source's photos are in (default: the run's)")


def run_and_source(args: argparse.Namespace):
    """(the run args.run_id names; --source checked against the label store before the model loads,
    or None; the dataset whose sources are meant, for training.acceptance)."""
    from training.acceptance import check_source_now, rules_dataset
    from training.registry import RunRegistry

    if args.dataset is not None and args.source is None:
        raise ValueError("--dataset goes with --source: it names the dataset the source's photos are in")
    record = RunRegistry().get(args.run_id)
    dataset = rules_dataset(record.folder, args.dataset)
    return record, (None if args.source is None else check_source_now(args.source, dataset)), dataset


def checkpoint_name(record, name: str) -> str:
    """The file name of the run's checkpoint `name` (best, last, or a file); ValueError naming it when
    it is missing (an `error:` line and exit 2, as every refused argument)."""
    from training.run_folder import RunFolder

    try:
        return RunFolder(record.folder).checkpoint(name).name
    except FileNotFoundError as error:
        raise ValueError(str(error)) from None


def predict(args: argparse.Namespace) -> int:
    from core.model.predictor import row_columns
    from core.trust.abstention import check_target
    from core.untrusted import spreadsheet_cell
    from training.acceptance import Acceptance
    from training.checkpoints import load_predictor, predict_device
    from training.scale import source_paths

    for option, value in (("--top-k", args.top_k), ("--batch-size", args.batch_size)):
        if value < 1:  # checked before the model loads: a typo fails at once
            raise ValueError(f"{option} must be at least 1, got {value}")
    predict_device(args.device)  # an unknown device, or cuda without a GPU, fails before the model loads
    check_target(args.target_error)
    if args.csv and not Path(args.csv).resolve().parent.is_dir():
        raise ValueError(f"--csv: the folder {Path(args.csv).resolve().parent} does not exist")
    cluster = cluster_of(args)
    if args.out:
        if args.csv:
            raise ValueError("--out writes Parquet parts; --csv is for a run without --out")
        return predict_to_parts(args, cluster)
    if cluster is not None:
        raise ValueError("--engine ray writes Parquet parts: give --out DIR")
    record, source, dataset = run_and_source(args)
    try:
        predictor = load_predictor(record.folder, args.checkpoint, run_id=record.id, device=args.device,
                                   target_error=args.target_error)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    acceptance = Acceptance(predictor.trust, args.target_error, record.id, dataset)
    if source is not None:
        acceptance.check(source)  # the checkpoint's too
    paths = source_paths(args.paths)
    if not paths:
        print(f"error: no image files ({', '.join(ACCEPTED_EXTENSIONS)}) in {', '.join(args.paths)}", file=sys.stderr)
        return 1
    read = 0
    with contextlib.ExitStack() as stack:
        rows = None
        if args.csv:  # a file for people: cells made safe for a spreadsheet (core.untrusted)
            rows = csv.DictWriter(stack.enter_context(open(args.csv, "w", newline="", buffering=1)),
                                  row_columns(predictor.heads))
            rows.writeheader()
        for result in predictor.iter_predict_files(paths, args.top_k, args.batch_size):
            result = acceptance.accept(result, source)
            read += result.error is None
            print(json.dumps(result.as_json()) if args.json else describe_prediction(result), flush=True)
            if rows is not None:
                rows.writerow({column: spreadsheet_cell(value)
                               for column, value in result.as_row(predictor.heads).items()})
    summary = (f"run {record.id}, checkpoint {predictor.checkpoint}, on {predictor.device.type}: "
               f"{read:,} of {len(paths):,} images read")
    if predictor.trust is not None:
        summary += (f"; accepted under the rules of the source {source!r}" if source is not None
                    else "; accepted under the run's rule (no --source)")
    if args.csv:
        summary += f"; rows in {args.csv}"
    print(summary, file=sys.stderr if args.json else sys.stdout)
    return 0 if read else 1


def predict_to_parts(args: argparse.Namespace, cluster) -> int:
    """`predict --out`: the records as Parquet parts and a summary (training.scale), here or on the cluster."""
    from core.workspace import workspace_dir
    from training.scale import PredictJob, predict_to_parts as write_parts, source_paths

    record, source, dataset = run_and_source(args)
    checkpoint = checkpoint_name(record, args.checkpoint)
    paths = source_paths(args.paths)
    if not paths:
        print(f"error: no image files ({', '.join(ACCEPTED_EXTENSIONS)}) in {', '.join(args.paths)}", file=sys.stderr)
        return 1
    job = PredictJob(record.id, record.folder, checkpoint, args.top_k, args.batch_size, args.target_error, source,
                     dataset, str(workspace_dir()))
    summary = write_parts(job, paths, args.out, cluster, device=args.device, part_size=args.part_size,
                          progress=ProgressLines())
    print(f"run {record.id}, checkpoint {checkpoint}, on {summary['engine']}: {summary['read']:,} of "
          f"{summary['records']:,} images read; {summary['parts']:,} parts in {args.out} "
          f"({len(summary['written']):,} written now, {summary['skipped_parts']:,} were there)",
          file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(summary))
    return 0 if summary["read"] else 1


def describe_prediction(result) -> str:
    """A few human lines about one file: its path, then per head `label p` for each guess (the
    proposal first, marked `accepted` when it needs no person), or the error."""
    if result.error is not None:
        return f"{result.path}\n  error: {result.error}"
    lines = [result.path]
    if not result.typical:
        lines.append(f"  {UNLIKE_CALIBRATION} (typicality {result.typicality[0]:.3f})")
    for head, guesses in result.predictions.items():
        accepted = "  accepted" if (result.accepted or {}).get(head) else ""
        lines.append(f"  {head:15s} " + "  ".join(f"{guess.label} {guess.p:.3f}" for guess in guesses) + accepted)
    return "\n".join(lines)


def calibrate(args: argparse.Namespace) -> int:
    from training.calibrate import calibrate_run
    from training.registry import RunRegistry

    record = RunRegistry().get(args.run_id)
    if args.source is not None:
        return calibrate_source(record, args)
    if args.dataset is not None:
        raise ValueError("--dataset goes with --source: the run's own calibration is on its own dataset")
    try:
        report = calibrate_run(record.folder)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"run {record.id}: calibrated on its validation split; " + trust_summary(report))
    for head, entry in report["trust"]["heads"].items():
        at = entry["targets"]["0.02"]
        print(f"  {head:15s} T {entry['temperature']:.2f}  ECE {entry['ece_before'] or 0:.3f} -> "
              f"{entry['ece_after'] or 0:.3f}  at 2 % error: {at['coverage']:.0%} need no person")
    if args.json:
        print(json.dumps(report["trust"]))
    return 0


def calibrate_source(record, args: argparse.Namespace) -> int:
    """`calibrate RUN_ID --source NAME`: certify a source's heads on its reviewed photos."""
    from core.access.roles import command_line_actor
    from training.calibrate import calibrate_source_run

    try:
        report = calibrate_source_run(record.folder, args.source, command_line_actor(), args.dataset)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"run {record.id}, source {report['source']!r}: certified on its reviewed photos (of {report['dataset']})")
    for head, entry in report["heads"].items():
        parts = []
        for target, at in entry["targets"].items():
            if at["threshold"] is not None:
                parts.append(f"{float(target):.0%}: from confidence {at['threshold']:.3f}")
            elif at["more_needed"] is None:
                parts.append(f"{float(target):.0%}: no (its decisions' error is above it)")
            else:
                parts.append(f"{float(target):.0%}: {at['more_needed']:,} more reviewed photos certify it")
        print(f"  {head:15s} {entry['decisions']:,} decisions  " + "  ".join(parts))
    if args.json:
        print(json.dumps(report))
    return 0


def trust_summary(report: dict) -> str:
    """One line on the proposals' trust: impossible combinations both ways, whole products needing no person."""
    impossible = report["impossible"]
    return (f"impossible combinations {impossible['independent']:.1%} decoded head by head, "
            f"{impossible['consistent']:.1%} decoded jointly; "
            f"{report['trust']['products']['0.02']:.0%} of products need no person at 2 % error")


def serve(args: argparse.Namespace) -> int:
    from training.serve import ServeSettings, serve as run_server

    api_key = None
    if args.api_key_env is not None:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ValueError(f"--api-key-env: the environment variable {args.api_key_env} is not set, or empty")
    record, source, dataset = run_and_source(args)
    checkpoint = checkpoint_name(record, args.checkpoint)
    settings = ServeSettings(
        run_id=record.id, run_folder=record.folder, checkpoint=checkpoint, host=args.host, port=args.port,
        device=args.device, top_k=args.top_k, target_error=args.target_error, max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout, max_request_mb=args.max_request_mb, timeout=args.timeout, api_key=api_key,
        source=source, dataset=dataset)
    return run_server(settings)


def crossval(args: argparse.Namespace) -> int:
    from training.crossval import crossval as run_crossval

    try:
        result = run_crossval(config_from_args(args), args.folds,
                              progress=lambda done, folds: print(f"fold {done}/{folds} done", flush=True))
    except (CatalogueError, ValueError):
        raise  # user errors: main prints them and exits 2
    except Exception as error:  # recorded in the crossval's summary.json
        print(f"error: the cross-validation failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"crossval {result.id}: {result.rows:,} rows, {result.folds} folds, {result.timings['total_s']:.0f} s")
    print(f"  folder   {result.folder}")
    for head, count in result.issues.items():
        print(f"  {head:15s} {count:6,} label issues  (out-of-sample acc {result.metrics[head]['accuracy']:.3f})")
    if args.json:
        print(json.dumps({"id": result.id, "folder": result.folder, "rows": result.rows, "issues": result.issues}))
    return 0


def health(args: argparse.Namespace) -> int:
    from core.data import HEADS
    from core.data.catalogue import load_catalogue
    from core.health.files import health_summary, leaked_ids
    from training import health as run_health
    from training.checkpoints import predict_device
    from training.registry import RunRegistry

    if not 0 < args.threshold <= 1:
        raise ValueError(f"--threshold is a cosine similarity in (0, 1], got {args.threshold}")
    device = predict_device(args.device)
    cluster = cluster_of(args)
    catalogue = load_catalogue(args.data)
    record = RunRegistry().get(args.run) if args.run else None
    try:
        computed = run_health.compute(catalogue, record, device=device.type, progress=ProgressLines(), cluster=cluster)
    except FileNotFoundError as error:  # the run has no best checkpoint
        print(f"error: {error}", file=sys.stderr)
        return 2
    split, split_name = run_health.health_split(catalogue, record)
    summary = health_summary(computed, catalogue, split, args.threshold, HEADS)
    groups = summary["near_duplicates"]
    print(f"data health of {catalogue.root}: {computed.info['photos']:,} photos, {computed.info['description']}")
    print(f"  folder               {computed.folder.path}")
    print(f"  embeddings by        {computed.info.get('engine', 'this machine')}")
    unreadable = computed.unreadable
    print(f"  unreadable photos    {len(unreadable):,}" + (" (left out of everything below)" if unreadable else ""))
    for product_id, why in list(unreadable.items())[:UNREADABLE_SHOWN]:
        print(f"    {product_id}: {why}")
    if len(unreadable) > UNREADABLE_SHOWN:
        print(f"    and {len(unreadable) - UNREADABLE_SHOWN:,} more (--json lists them all)")
    print(f"  exact duplicates     {len(summary['exact_duplicates']):,} groups")
    hash_only = summary["near_duplicates_found_by"].count("hash")
    print(f"  near-duplicates      {len(groups):,} groups ({sum(map(len, groups)):,} photos) "
          f"at similarity >= {args.threshold} or near perceptual hashes ({hash_only:,} found by the hashes alone)")
    print(f"  leakage              {len(summary['leakage']):,} groups span training and validation of {split_name}; "
          f"{len(leaked_ids(groups, split)):,} validation photos have a near-duplicate in training")
    print(f"  label disagreements  {len(summary['label_disagreements']):,} groups")
    print(f"  outliers             {len(summary['outliers']):,} photos")
    print("  image issues         " + ", ".join(f"{name} {len(ids):,}"
                                                for name, ids in summary["image_issues"].items()))
    if args.json:
        print(json.dumps(summary))
    return 0


class ProgressLines:
    """Progress of a long computation on stderr: a line when a step starts or ends, and every 10 s,
    with the time the step has left at its pace so far (the Data health page shows the last line)."""

    def __init__(self, every: float = 10.0, clock=time.monotonic) -> None:
        self.every, self.clock, self.step, self.shown, self.started = every, clock, None, 0.0, 0.0

    def __call__(self, step: str, done: int, total: int) -> None:
        now = self.clock()
        if step != self.step:
            self.started = now
        if step != self.step or done >= total or now - self.shown >= self.every:
            self.step, self.shown = step, now
            print(f"{step}: {done:,} of {total:,}{time_left(now - self.started, done, total)}", file=sys.stderr,
                  flush=True)


def time_left(elapsed: float, done: int, total: int) -> str:
    """" · about 2 min left" at the pace so far; "" before there is a pace or once done."""
    if done <= 0 or done >= total or elapsed <= 0:
        return ""
    return f" · about {format_duration(elapsed / done * (total - done))} left"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "fit":
            return fit(args)
        if args.command == "evaluate":
            return evaluate(args)
        if args.command == "crossval":
            return crossval(args)
        if args.command == "predict":
            return predict(args)
        if args.command == "calibrate":
            return calibrate(args)
        if args.command == "serve":
            return serve(args)
        if args.command == "health":
            return health(args)
        from training.registry import RunRegistry

        registry = RunRegistry()
        if args.command == "runs":
            records = registry.list()
            if args.json:
                print(json.dumps([record.as_dict() for record in records]))
            else:
                for record in records:
                    best = "" if record.best_metric is None else f"{record.best_metric_name}={record.best_metric:.4f}"
                    print(f"{record.id:40s} {record.status:10s} {record.created[:19]}  {best}")
                if not records:
                    print("no runs yet: python -m training fit --data DIR")
            return 0
        record = registry.get(args.run_id)
        print(json.dumps(record.as_dict()) if args.json else describe(record))
        return 0
    except (CatalogueError, ValueError, KeyError, DatabaseBusy) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
