"""core.workspace: where things are written, and the demo dataset generated once, atomically."""

import pytest

from core import workspace
from core.data.catalogue import load_catalogue


def test_workspace_and_configured_dataset_come_from_the_environment(workspace_home, monkeypatch, tmp_path):
    assert workspace.workspace_dir() == workspace_home.resolve()
    assert workspace.configured_dataset_dir() is None
    unmade = tmp_path / "new" / "ws"
    monkeypatch.setenv(workspace.HOME_ENV, str(unmade))
    assert workspace.workspace_dir() == unmade.resolve() and unmade.is_dir()  # made on first use
    monkeypatch.setenv(workspace.DATA_ENV, str(tmp_path / "shop"))
    assert workspace.configured_dataset_dir() == (tmp_path / "shop").resolve()


def test_ensure_demo_generates_once_and_reports_progress(workspace_home):
    calls = []
    path = workspace.ensure_demo(progress=lambda done, total: calls.append((done, total)), n=60, seed=1)
    assert path == workspace_home.resolve() / "demo" and workspace.demo_ready()
    assert calls[-1] == (60, 60)
    assert load_catalogue(path).report.rows_kept == 60
    stamp = (path / "styles.csv").stat().st_mtime_ns
    workspace.ensure_demo(n=60, seed=1)
    assert (path / "styles.csv").stat().st_mtime_ns == stamp  # reused, not regenerated
    assert [p.name for p in workspace_home.iterdir()] == ["demo"]  # no staging folder left behind


def test_an_interrupted_demo_is_replaced(workspace_home):
    half = workspace_home / "demo" / "images"
    half.mkdir(parents=True)
    (workspace_home / "demo" / "styles.csv").write_text("id\n")  # no completion marker
    assert not workspace.demo_ready()
    path = workspace.ensure_demo(n=60, seed=2)
    assert load_catalogue(path).report.rows_kept == 60


def test_a_failed_generation_leaves_nothing_behind(workspace_home):
    with pytest.raises(ValueError, match="n"):
        workspace.ensure_demo(n=3)
    assert not workspace.demo_ready()
    assert list(workspace_home.iterdir()) == []
