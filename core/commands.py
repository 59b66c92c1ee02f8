"""What the `python -m core.data` and `python -m core.labels` command lines share: a user's error
(a bad folder, file or argument; no network; a refused folder) is one line, `error: <message>` on
stderr, and exit status USER_ERROR_EXIT, never a traceback."""

from __future__ import annotations

import argparse
import sys

USER_ERROR_EXIT = 2


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse `argv`, run the chosen command (its `run` default); returns the exit status."""
    args = parser.parse_args(argv)
    try:
        args.run(args)
    # ValueError: the library's input checks (CatalogueError is one); OSError: unwritable folders
    # (AccessDenied, a refused folder, is a PermissionError).
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT
    return 0
