import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_DIR = SHARED_DATA / "fashion-sample"
EXTERNAL_DIR = SHARED_DATA / "external" / "clothing"


# The people the tests act as (core.access): ann an admin with no folder limits (the command
# line's kind), the others reviewers.
from core.access import Actor, Role  # noqa: E402

ANN = Actor("ann", Role.ADMIN)
ANA, BEN, BOB = (Actor(name, Role.REVIEWER) for name in ("ana", "ben", "bob"))


@pytest.fixture(scope="session")
def real_sample() -> Path:
    """The real Kaggle sample (44,446 rows, 11,882 images), read in place."""
    if not (SAMPLE_DIR / "styles.csv").is_file():
        pytest.skip(f"real sample not present at {SAMPLE_DIR}")
    return SAMPLE_DIR


# A run that trains in seconds on the CPU; rare classes kept, so ~100 rows keep several per head.
TINY_RUN = ("epochs=1", "image_size=64", "batch_size=16", "num_workers=0", "max_samples=100", "rare_policy=keep")


@contextlib.contextmanager
def tiny_run_workspace(tmp_path_factory, n: int = 120, seed: int = 3, overrides: Sequence[str] = TINY_RUN) -> Iterator:
    """A finished default-recipe run on a fresh demo catalogue of `n` photos, in a workspace of its
    own; inside, the environment points at both (workspace, dataset, no shared database URL).
    Yields (run record, demo folder, workspace folder)."""
    from core import workspace
    from core.data.demo import generate_demo
    from core.database import DB_URL_ENV
    from training.config import TrainConfig
    from training.train import train

    demo = generate_demo(tmp_path_factory.mktemp("data") / "demo", n=n, seed=seed)
    home = tmp_path_factory.mktemp("ws")
    patch = pytest.MonkeyPatch()
    patch.setenv(workspace.HOME_ENV, str(home))
    patch.setenv(workspace.DATA_ENV, str(demo))
    patch.delenv(DB_URL_ENV, raising=False)
    try:
        yield train(TrainConfig.from_recipe("default").with_overrides([f"data={demo}", *overrides])), demo, home
    finally:
        patch.undo()
