"""What the real-browser tests share: a dashboard server on a small demo workspace, a headless
Chromium page, and waiting for Streamlit to be idle. Test modules import the fixtures by name.

Screenshots land in `test-artifacts/` at the repository root (CI keeps them as artifacts).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import workspace
from core.access.database import DB_URL_ENV

from conftest import REPO, copy_database

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_browser() -> None:
    """Skip, with the reason, where Chromium or Playwright is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@contextlib.contextmanager
def dashboard_server(env: dict[str, str], port: int | None = None, options: tuple[str, ...] = (),
                     cwd: Path = REPO) -> Iterator[str]:
    """`streamlit run dashboard/Home.py` of the checkout `cwd` in its own process session with `env`, on
    `port` (a free one by default) with more command-line `options`; yields its base URL."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/Home.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", *options],
        cwd=cwd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("the dashboard server did not come up within 60 s")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def workspace_env(home: Path) -> dict[str, str]:
    """The environment of a server on the workspace `home`: no dataset nor database URL from the shell."""
    env = {**os.environ, workspace.HOME_ENV: str(home), "HF_HUB_OFFLINE": "1"}
    env.pop(workspace.DATA_ENV, None)
    env.pop(DB_URL_ENV, None)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A dashboard server on a workspace with a small demo dataset; yields its base URL and the demo folder."""
    require_browser()
    home = tmp_path_factory.mktemp("browser-workspace")
    env = workspace_env(home)
    subprocess.run(
        [sys.executable, "-c", "from core import workspace; workspace.ensure_demo(n=150, seed=5)"],
        cwd=REPO, env=env, check=True,
    )
    with dashboard_server(env) as url:
        yield url, home / workspace.DEMO_FOLDER


@contextlib.contextmanager
def server_on_a_copy(tiny_run, tmp_path_factory):
    """A dashboard server on a tiny run's workspace and demo that keeps its labels in a copy of the
    workspace database (the runs as trained): what the page writes there never reaches the other
    modules sharing the run. Yields (base URL, the copy's path)."""
    require_browser()
    _, demo, home = tiny_run
    database = copy_database(home, tmp_path_factory.mktemp("browser-db"))
    env = {**workspace_env(home), workspace.DATA_ENV: str(demo), DB_URL_ENV: f"sqlite:///{database}"}
    with dashboard_server(env) as url:
        yield url, database


@pytest.fixture(scope="module")
def run_server(in_tiny_run, tmp_path_factory):
    """A dashboard server on the shared tiny run (server_on_a_copy); yields (base URL, run folder)."""
    with server_on_a_copy(in_tiny_run, tmp_path_factory) as (url, _):
        yield url, Path(in_tiny_run.record.folder)


@contextlib.contextmanager
def chromium_page() -> Iterator:
    """A 1400 x 1000 page of a fresh headless Chromium, 60 s timeouts; the browser closes on exit."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def page(server):
    with chromium_page() as page:
        yield page


def wait_idle(page) -> None:
    page.wait_for_selector(IDLE)
