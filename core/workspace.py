"""Where Fashion Tagger keeps what it writes: one workspace folder, never the dataset folder.

`FASHION_TAGGER_HOME` names the workspace (default `./workspace`); `FASHION_TAGGER_DATA` names the
dataset opened by default. With neither, the generated demo dataset in the workspace is the default.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

HOME_ENV = "FASHION_TAGGER_HOME"
DATA_ENV = "FASHION_TAGGER_DATA"
DEMO_FOLDER = "demo"
# Written last by `ensure_demo`: a demo folder without it is an interrupted generation.
DEMO_COMPLETE_MARKER = ".complete"
# Photos in the generated demo dataset: enough to train a model that visibly learns.
DEMO_SIZE = 1500


def workspace_dir() -> Path:
    """The workspace folder, created on first use."""
    path = Path(os.environ.get(HOME_ENV) or "workspace").expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def configured_dataset_dir() -> Path | None:
    """The dataset folder named by `FASHION_TAGGER_DATA`, or None when unset."""
    value = os.environ.get(DATA_ENV)
    return Path(value).expanduser().resolve() if value else None


def demo_dir() -> Path:
    return workspace_dir() / DEMO_FOLDER


def demo_ready() -> bool:
    return (demo_dir() / DEMO_COMPLETE_MARKER).is_file()


def ensure_demo(progress: Callable[[int, int], None] | None = None, n: int | None = None, seed: int = 0) -> Path:
    """Generate the demo dataset into the workspace unless a complete one is there; return its folder.

    Generation goes to a temporary folder renamed into place at the end, so an interrupted run or
    two sessions generating at once never leave a half-written demo behind.
    """
    from core.data.demo import generate_demo

    n = DEMO_SIZE if n is None else n
    target = demo_dir()
    if demo_ready():
        return target
    staging = Path(tempfile.mkdtemp(prefix="demo-", dir=workspace_dir()))
    try:
        generate_demo(staging / "data", n=n, seed=seed, progress=progress)
        (staging / "data" / DEMO_COMPLETE_MARKER).write_text(f"n={n} seed={seed}\n")
        if target.exists() and not demo_ready():  # left by an interrupted earlier generation
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(staging / "data", target)
        except OSError:
            if not demo_ready():  # not merely another session finishing first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
