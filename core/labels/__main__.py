"""`python -m core.labels export`: write a catalogue with its reviewed labels (the workspace's label
store) to a new dataset folder, ready for the next run.

A user error (a bad folder or argument, a refused folder) prints `error: <message>` on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.access.roles import command_line_actor
from core.commands import run_command
from core.data.catalogue import load_catalogue
from core.labels.corrections import export_dataset
from core.labels.store import LabelStore
from core.workspace import workspace_dir


def _export(args: argparse.Namespace) -> None:
    def show_progress(done: int, total: int) -> None:
        print(f"\rwriting images: {done:,}/{total:,}", end="", file=sys.stderr, flush=True)

    catalogue = load_catalogue(args.data)
    store = LabelStore(workspace=workspace_dir())
    report = export_dataset(catalogue, store, args.out, command_line_actor(), progress=show_progress)
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
    parser = argparse.ArgumentParser(prog="python -m core.labels", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export", help="write a catalogue with its reviewed labels (the workspace's label store) to a new folder",
    )
    export.add_argument("--data", type=Path, required=True, help="the catalogue folder that was reviewed")
    export.add_argument("--out", type=Path, required=True, help="a new or empty folder, outside the catalogue")
    export.add_argument("--json", action="store_true", help="print the export report as one JSON object")
    export.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (core.commands)."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
