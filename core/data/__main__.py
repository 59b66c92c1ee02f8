"""`python -m core.data inspect|demo|download|export`: look at a catalogue, make a demo one, fetch Kaggle's,
export a reviewed one.

A user error (a bad folder, file or argument; no network) prints `error: <message>` on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.data.catalogue import load_catalogue
from core.data.download import KAGGLE_DATASETS, download_kaggle
from core.data.schema import head_summary

USER_ERROR_EXIT = 2


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


def _export(args: argparse.Namespace) -> None:
    # PIL and SQLAlchemy: only this command needs them.
    from core.access import command_line_actor
    from core.corrections import export_dataset
    from core.labelstore import LabelStore

    def show_progress(done: int, total: int) -> None:
        print(f"\rwriting images: {done:,}/{total:,}", end="", file=sys.stderr, flush=True)

    catalogue = load_catalogue(args.data)
    report = export_dataset(catalogue, LabelStore(), args.out, command_line_actor(), progress=show_progress)
    print(file=sys.stderr)  # end the progress line
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return
    print(f"exported {report.rows:,} products to {report.out} in {report.seconds:.1f} s: "
          f"{report.corrected_rows:,} with corrected labels, {report.dropped_rows:,} dropped as not a product, "
          f"{report.external_rows:,} external images added")
    for note in report.notes():
        print(f"note: {note}")
    print(f"next: python -m core.data inspect {report.out}")


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

    export = commands.add_parser(
        "export", help="write a catalogue with its reviewed labels (the workspace's label store) to a new folder",
    )
    export.add_argument("--data", type=Path, required=True, help="the catalogue folder that was reviewed")
    export.add_argument("--out", type=Path, required=True, help="a new or empty folder, outside the catalogue")
    export.add_argument("--json", action="store_true", help="print the export report as one JSON object")
    export.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0, or USER_ERROR_EXIT after `error: ...` on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    # ValueError: the library's input checks (CatalogueError is one); OSError: unwritable folders.
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
