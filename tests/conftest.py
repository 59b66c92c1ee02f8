import contextlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
HOME = str(REPO / "dashboard" / "Home.py")  # the app's entry script
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_DIR = SHARED_DATA / "fashion-sample"
EXTERNAL_DIR = SHARED_DATA / "external" / "clothing"


# The people the tests act as (core.access.roles): ann an admin with no folder limits (the command
# line's kind), the others reviewers.
from core.access.roles import Actor, Role  # noqa: E402
from dashboard.text import WORD_JOINER  # noqa: E402

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
def tiny_run_workspace(tmp_path_factory, n: int = 120, seed: int = 3, overrides: Sequence[str] = TINY_RUN,
                       edit: Callable[[Path], None] | None = None) -> Iterator:
    """A finished default-recipe run on a fresh demo catalogue of `n` photos (`edit`, when given,
    changes the demo folder first, e.g. its labels), in a workspace of its own; inside, the
    environment points at both (workspace, dataset, no shared database URL).
    Yields (run record, demo folder, workspace folder)."""
    from core import workspace
    from core.access.database import DB_URL_ENV
    from core.data.demo import generate_demo
    from training.config import TrainConfig
    from training.train import train

    demo = generate_demo(tmp_path_factory.mktemp("data") / "demo", n=n, seed=seed)
    if edit is not None:
        edit(demo)
    home = tmp_path_factory.mktemp("ws")
    patch = pytest.MonkeyPatch()
    patch.setenv(workspace.HOME_ENV, str(home))
    patch.setenv(workspace.DATA_ENV, str(demo))
    patch.delenv(DB_URL_ENV, raising=False)
    try:
        yield train(TrainConfig.from_recipe("default").with_overrides([f"data={demo}", *overrides])), demo, home
    finally:
        patch.undo()


def open_page(page: str, section_key: str | None = None, section: str | None = None, timeout: int = 60):
    """AppTest of the app switched to `page` (a path relative to Home.py), with its lazy tab
    `section` open (the tabs' session key `section_key`); fails on any exception."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(HOME, default_timeout=timeout)
    at.run()
    at.switch_page(page).run()
    if section:
        at.session_state[section_key] = section
        at.run()
    assert not at.exception, at.exception
    return at


def chart_spec(at, index: int = 0) -> dict:
    """The plotly figure of the page's `index`-th chart, as JSON."""
    import json

    return json.loads(at.get("plotly_chart")[index].proto.spec)


def plotly_array(value):
    """A plotly trace array as numpy: a list, or a typed array {"dtype", "bdata" (base64), "shape"?}."""
    import base64

    import numpy as np

    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return flat.reshape([int(n) for n in value["shape"].split(",")]) if "shape" in value else flat
    return np.asarray(value)


def shown(markdown: str) -> str:
    """Markdown of untrusted text (dashboard.text.plain) as a page reads: escapes undone, the
    invisible word joiners that keep it from becoming a link dropped."""
    return re.sub(r"\\(.)", r"\1", markdown).replace(WORD_JOINER, "")


def captioned_ids(at) -> list[int]:
    """Ids of the page's photo grids: each grid caption starts with **<id>**."""
    return [int(c.value.split("**")[1]) for c in at.caption if c.value.startswith("**")]
