"""`python -m core.data inspect|demo|download`: look at a catalogue, make a demo one, fetch Kaggle's.
(Exporting a reviewed catalogue is the label store's: `python -m core.labels export`.)

A user error (a bad folder, file or argument; no network) prints `error: <message>` on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.commands import USER_ERROR_EXIT, run_command
from core.data.catalogue import load_catalogue
from core.data.download import KAGGLE_DATASETS, download_kaggle
from core.data.schema import head_summary


def _inspect(args: argparse.Namespace) -> None:
    catalogue = load_catalogue(args.dir)
    report = catalogue.report.as_dict()
    heads = head_summary(catalogue.frame)
    if args.json:
        # to_json: NaN ratios and absent top classes become null, numpy ints plain ints.
        print(json.dumps({"report": report, "heads": json.loads(heads.to_json(orient="index"))}, indent=2))
        return
    near_misses, formulas = report.pop("near_miss_examples"), report.pop("formula_examples")
    print(f"catalogue: {report.pop('styles_csv')}")
    for count, value in report.items():
        print(f"  {count:<20}{value:>10,}")
    if near_misses:
        print(f"  photos that look misnamed (expected <id>.jpg), e.g.: {', '.join(near_misses)}")
    if formulas:  # repr: the value as inert text, quotes and all
        print("  values a spreadsheet would run as formulas (check them before opening styles.csv in one), e.g.:")
        for example in formulas:
            product, _, value = example.partition(": ")
            print(f"    {product}: {value!r}")
    print()
    print(heads.to_string(float_format=lambda ratio: f"{ratio:,.1f}"))


def _demo(args: argparse.Namespace) -> None:
    from core.data.demo import generate_demo  # imports PIL: only this command needs it

    def show_progress(done: int, total: int) -> None:
        print(f"\rwriting demo images: {done:,}/{total:,}", end="", file=sys.stderr, flush=True)

    root = generate_demo(args.out, n=args.n, seed=args.seed, progress=show_progress)
    print(file=sys.stderr)  # end the progress line
    report = load_catalogue(root).report
    print(f"demo catalogue: {report.rows_kept:,} products in {root}")
    print(f"next: python -m core.data inspect {root}")


def _download(args: argparse.Namespace) -> None:
    root = download_kaggle(args.dest, variant=args.variant)
    print(f"dataset ready in {root}")
    print(f"next: python -m core.data inspect {root}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="load a catalogue, print its cleaning report and per-head stats")
    inspect.add_argument("dir", type=Path, help="folder with styles.csv and images/ (or a Kaggle download above it)")
    inspect.add_argument("--json", action="store_true", help='one JSON object: {"report": ..., "heads": ...}')
    inspect.set_defaults(run=_inspect)

    demo = commands.add_parser("demo", help="generate a small synthetic catalogue")
    demo.add_argument("out", type=Path, help="folder to write styles.csv and images/ into")
    demo.add_argument("--n", type=int, default=1500, help="products (default 1500)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(run=_demo)

    download = commands.add_parser("download", help="download Kaggle's Fashion Product Images (needs credentials)")
    download.add_argument("dest", type=Path, help="folder to download and extract into")
    download.add_argument("--variant", choices=KAGGLE_DATASETS, default="small", help="default: small")
    download.set_defaults(run=_download)

    return parser


EXPORT_MOVED = "export is the label store's command now: python -m core.labels export --data DIR --out DIR2"


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (core.commands)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:  # where it was before: say where it went, whatever its arguments
        print(f"error: {EXPORT_MOVED}", file=sys.stderr)
        return USER_ERROR_EXIT
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
