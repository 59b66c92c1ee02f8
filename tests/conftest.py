import contextlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest
from sqlalchemy import text

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
HOME = str(REPO / "dashboard" / "Home.py")  # the app's entry script
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_DIR = SHARED_DATA / "fashion-sample"
EXTERNAL_DIR = SHARED_DATA / "external" / "clothing"


from core import workspace  # noqa: E402
from core.access.database import DB_URL_ENV  # noqa: E402
from core.access.roles import Actor, Role  # noqa: E402
from dashboard.text import WORD_JOINER  # noqa: E402
from training.registry import RunRecord  # noqa: E402

# The people the tests act as (core.access.roles): ann an admin with no folder limits (the command
# line's kind), the others reviewers.
ANN = Actor("ann", Role.ADMIN)
ANA, BEN, BOB = (Actor(name, Role.REVIEWER) for name in ("ana", "ben", "bob"))


@pytest.fixture(scope="session")
def real_sample() -> Path:
    """The real Kaggle sample (44,446 rows, 11,882 images), read in place."""
    if not (SAMPLE_DIR / "styles.csv").is_file():
        pytest.skip(f"real sample not present at {SAMPLE_DIR}")
    return SAMPLE_DIR


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="run the tests marked slow too (CI always does)")


def pytest_collection_modifyitems(config, items):
    """Tests marked slow are skipped unless --slow is given or CI is set (CI systems set CI=true)."""
    if config.getoption("--slow") or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow; CI runs them")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


def point_at_workspace(patch: pytest.MonkeyPatch, home: Path, data: Path | None = None) -> Path:
    """Through `patch`, point the environment at the workspace `home` (created) and the dataset `data`
    (None: none configured) with no shared database URL, so nothing comes from the developer's shell."""
    home.mkdir(parents=True, exist_ok=True)
    patch.setenv(workspace.HOME_ENV, str(home))
    if data is None:
        patch.delenv(workspace.DATA_ENV, raising=False)
    else:
        patch.setenv(workspace.DATA_ENV, str(data))
    patch.delenv(DB_URL_ENV, raising=False)
    return home


def copy_database(home: Path, folder: Path) -> Path:
    """A copy, in `folder`, of the SQLite database of the workspace `home` (its runs as they are):
    labels written there never reach the other modules sharing the workspace."""
    import sqlite3

    from core.access.database import DB_FILE

    database = folder / DB_FILE
    with contextlib.closing(sqlite3.connect(home / DB_FILE)) as shared, \
            contextlib.closing(sqlite3.connect(database)) as copy:
        shared.backup(copy)
    return database


@pytest.fixture
def workspace_home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty workspace folder the environment points at; no dataset, no database URL set."""
    return point_at_workspace(monkeypatch, tmp_path / "workspace")


# A run that trains in seconds on the CPU; rare classes kept, so ~100 rows keep several per head.
TINY_RUN = ("epochs=1", "image_size=64", "batch_size=16", "num_workers=0", "max_samples=100", "rare_policy=keep")


class TinyRun(NamedTuple):
    """A finished run: its record, the demo folder it trained on, its workspace."""
    record: RunRecord
    demo: Path
    home: Path


@contextlib.contextmanager
def tiny_run_workspace(tmp_path_factory, n: int = 120, seed: int = 3, overrides: Sequence[str] = TINY_RUN,
                       edit: Callable[[Path], None] | None = None) -> Iterator[TinyRun]:
    """A finished default-recipe run on a fresh demo catalogue of `n` photos (`edit`, when given,
    changes the demo folder first, e.g. its labels), in a workspace of its own; inside, the
    environment points at both (workspace, dataset, no shared database URL)."""
    from core.data.demo import generate_demo
    from training.config import TrainConfig
    from training.train import train

    demo = generate_demo(tmp_path_factory.mktemp("data") / "demo", n=n, seed=seed)
    if edit is not None:
        edit(demo)
    with pytest.MonkeyPatch.context() as patch:
        home = point_at_workspace(patch, tmp_path_factory.mktemp("ws"), demo)
        yield TinyRun(train(TrainConfig.from_recipe("default").with_overrides([f"data={demo}", *overrides])),
                      demo, home)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """One run of tiny_run_workspace's defaults, trained once for the modules that only need "a
    finished run"; they take it through `in_tiny_run`. The environment is left as it was. A module
    that writes labels or runs into its workspace database, or changes its files, trains its own."""
    with tiny_run_workspace(tmp_path_factory) as run:
        pass
    return run


@pytest.fixture(scope="module")
def in_tiny_run(tiny_run) -> Iterator[TinyRun]:
    """The shared tiny run, with the environment pointed at its workspace and demo for the module.
    Folders the module adds to the workspace or the run's folder (another evaluation, data health,
    uploads) are removed when it ends, so the next module sees the run as it was trained."""
    folders = (tiny_run.home, Path(tiny_run.record.folder))
    before = {path for folder in folders for path in folder.iterdir()}
    with pytest.MonkeyPatch.context() as patch:
        point_at_workspace(patch, tiny_run.home, tiny_run.demo)
        yield tiny_run
    for path in {path for folder in folders for path in folder.iterdir()} - before:
        if path.is_dir():  # files left alone: the workspace database's own (-wal, -shm) come and go
            shutil.rmtree(path)


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


def save_beside_an_uncommitted_first_save(store, first, save: Callable[[], None]) -> list[Exception]:
    """Run `save` in a thread while another connection's transaction holds `first` (an insert of the
    same key, uncommitted), until `save` waits for it; then commit `first` and let `save` finish.
    Returns what `save` raised: a save written as update-then-insert finds nothing to update and its
    insert fails on the key (PostgreSQL); an upsert waits and updates."""
    failures = []

    def run() -> None:
        try:
            save()
        except Exception as error:  # the test's verdict, not the thread's end
            failures.append(error)

    with store.engine.connect() as other:
        with other.begin():
            other.execute(first)
            saving = threading.Thread(target=run)
            saving.start()
            _wait_until_blocked(store)
        saving.join(timeout=60)
    return failures


def _wait_until_blocked(store, seconds: float = 20) -> None:
    """Until a statement waits for another transaction's lock (PostgreSQL); a moment on SQLite, where
    a writer waits at BEGIN for the one write lock and nothing shows it."""
    if store.engine.dialect.name != "postgresql":
        time.sleep(0.5)
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with store.engine.connect() as connection:
            if connection.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar():
                return
        time.sleep(0.05)
    raise AssertionError("no statement waited for the uncommitted row")
