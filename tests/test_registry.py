import json
import os
import re
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from sqlalchemy import update

from core.access import database
from core.access.database import DB_URL_ENV, db_engine
from training import registry as registry_module
from training.registry import (
    LOST_PROCESS_ERROR,
    RunRegistry,
    Score,
    ScoreBasis,
    best_first,
    dataset_score,
    runs_table,
)

from conftest import REPO
from lock_holder import finishes_within, lock_held

CONFIG = {"recipe": "default", "backbone": "tf_efficientnet_lite0", "epochs": 2}

# Registers a run in the workspace the environment names, prints its id, then trains (sleeps)
# or exits at once.
CHILD = """
import os, sys, time
from training.registry import RunRegistry
registry = RunRegistry()
run = registry.create({"backbone": "resnet50"}, "tester")
if sys.argv[1] == "train":
    registry.mark_running(run.id, os.getpid(), "cpu", "random")
print(run.id, flush=True)
if sys.argv[1] == "train":
    time.sleep(120)
"""


@pytest.fixture()
def registry(workspace_home):
    return RunRegistry()


def start_child(mode: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, mode], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    run_id = child.stdout.readline().strip()
    assert run_id, f"the child exited with {child.wait()} before registering"
    return child, run_id


def set_columns(registry: RunRegistry, run_id: str, **values) -> None:
    with registry.engine.begin() as connection:
        connection.execute(update(runs_table).where(runs_table.c.id == run_id).values(**values))


def test_database_is_sqlite_wal_in_the_workspace(workspace_home, registry):
    assert (workspace_home / "fashion_tagger.db").is_file()
    with registry.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_database_url_from_the_environment(workspace_home, tmp_path, monkeypatch):
    monkeypatch.setenv(DB_URL_ENV, f"sqlite:///{tmp_path / 'team.db'}")
    run = RunRegistry().create(CONFIG, "tester")
    assert (tmp_path / "team.db").is_file() and not (workspace_home / "fashion_tagger.db").exists()
    assert RunRegistry(f"sqlite:///{tmp_path / 'team.db'}").get(run.id).id == run.id


def test_lifecycle_to_finished(workspace_home, registry):
    run = registry.create(CONFIG, "tester")
    assert re.fullmatch(r"\d{8}-\d{6}-lite0-[0-9a-f]{4}", run.id)
    created = datetime.fromisoformat(run.created)
    assert run.id.startswith(f"{created:%Y%m%d-%H%M%S}") and created.utcoffset().total_seconds() == 0
    assert (run.status, run.config, run.pid, run.host) == ("queued", CONFIG, os.getpid(), socket.gethostname())
    assert run.folder == str(workspace_home.resolve() / "runs" / run.id)
    assert (run.started, run.finished, run.metrics) == (None, None, None)

    running = registry.mark_running(run.id, os.getpid(), "cuda:0 NVIDIA H100", "offline: lite0.pth")
    assert (running.status, running.device, running.weights) == ("running", "cuda:0 NVIDIA H100", "offline: lite0.pth")
    assert running.started >= running.created

    metrics = {"gender": {"acc": 0.9, "macro_f1": 0.85}, "usage": {"acc": 0.7, "macro_f1": float("nan")}}
    finished = registry.mark_finished(run.id, 0.6, "val/mean_macro_f1", metrics, {"fit_s": 12.5, "epochs": [3.1, 3.0]})
    assert (finished.status, finished.best_metric, finished.best_metric_name) == ("finished", 0.6, "val/mean_macro_f1")
    assert finished.metrics == {"gender": {"acc": 0.9, "macro_f1": 0.85}, "usage": {"acc": 0.7, "macro_f1": None}}
    assert finished.timings == {"fit_s": 12.5, "epochs": [3.1, 3.0]}
    assert finished.finished >= finished.started
    assert registry.get(run.id) == finished
    assert json.loads(json.dumps(finished.as_dict()))["metrics"]["usage"]["macro_f1"] is None

    # The first end wins: a late cancel or failure leaves a finished run as it is.
    assert registry.mark_cancelled(run.id) == finished
    assert registry.mark_failed(run.id, "late") == finished


def test_failed_and_cancelled(registry):
    queued = registry.create(CONFIG, "tester", folder="somewhere")
    assert registry.mark_cancelled(queued.id).status == "cancelled"
    with pytest.raises(ValueError, match=f"run {queued.id} is cancelled; only a queued run can become running"):
        registry.mark_running(queued.id, os.getpid(), "cpu", "random")

    running = registry.create(CONFIG, "tester")
    with pytest.raises(ValueError, match=f"run {running.id} is queued; only a running run can become finished"):
        registry.mark_finished(running.id, 0.5, "val/loss", {}, {})
    registry.mark_running(running.id, os.getpid(), "cpu", "random")
    failed = registry.mark_failed(running.id, "CUDA out of memory")
    assert (failed.status, failed.error) == ("failed", "CUDA out of memory")
    assert registry.mark_cancelled(running.id).status == "failed"
    assert [run.status for run in registry.list()] == ["failed", "cancelled"]
    with pytest.raises(ValueError, match="pid must be a positive int, got 0"):
        registry.mark_running(registry.create(CONFIG, "tester").id, 0, "cpu", "random")


def test_unknown_run_lists_recent_ids(registry):
    with pytest.raises(KeyError, match="unknown run 'nope'; recent runs: none yet"):
        registry.get("nope")
    ids = [registry.create(CONFIG, "tester").id for _ in range(7)]
    with pytest.raises(KeyError) as err:
        registry.mark_failed("nope", "x")
    recent = str(err.value).split("recent runs: ")[1].rstrip("'\"").split(", ")
    assert recent == ids[:-6:-1]  # the five newest, newest first


def test_list_is_newest_first_with_a_limit(registry):
    ids = [registry.create({**CONFIG, "backbone": name}, "tester").id
           for name in ("resnet50", "efficientnet_b3", "convnext_tiny")]
    assert [run.id for run in registry.list()] == ids[::-1]
    assert [run.id for run in registry.list(limit=2)] == ids[:0:-1]
    assert [run.id.split("-")[2:-1] for run in registry.list()] == [["convnext", "tiny"], ["b3"], ["resnet50"]]
    with pytest.raises(ValueError, match="limit must be a positive int or None, got 0"):
        registry.list(limit=0)


def test_concurrent_writers_get_unique_ids_and_no_lock_errors(registry):
    def lifecycles(count: int) -> list[str]:
        own = RunRegistry()  # each thread writes through its own pooled connection
        ids = []
        for _ in range(count):
            run = own.create(CONFIG, "tester")
            own.mark_running(run.id, os.getpid(), "cpu", "random")  # read-then-write transactions
            own.mark_finished(run.id, 0.5, "val/loss", {}, {})
            ids.append(run.id)
        return ids

    with ThreadPoolExecutor(max_workers=2) as pool:
        created = [run_id for ids in pool.map(lifecycles, [15, 15]) for run_id in ids]
    assert len(created) == len(set(created)) == 30
    assert sorted(run.id for run in registry.list()) == sorted(created)
    assert {run.status for run in registry.list()} == {"finished"}


def test_an_id_drawn_twice_is_drawn_again(registry, monkeypatch):
    draws = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(registry_module.secrets, "token_hex", lambda nbytes: next(draws))
    first, second = registry.create(CONFIG, "tester"), registry.create(CONFIG, "tester")
    assert (first.id[-4:], second.id[-4:]) == ("aaaa", "bbbb")


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_killed_training_process_shows_failed(workspace_home, registry, reaped):
    child, run_id = start_child("train")
    try:
        assert registry.get(run_id).status == "running"
        assert registry.running().id == run_id
        child.send_signal(signal.SIGKILL)
        if reaped:
            child.wait()
        else:  # dead but not reaped by its parent, as a launcher that never waits leaves it
            os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        [run] = registry.list()
        assert (run.id, run.status, run.error) == (run_id, "failed", LOST_PROCESS_ERROR)
        assert run.finished is not None and registry.running() is None
    finally:
        child.kill()
        child.wait()


def test_queued_run_whose_process_exited_shows_failed(registry):
    child, run_id = start_child("exit")
    assert child.wait() == 0
    assert (registry.get(run_id).status, registry.get(run_id).error) == ("failed", LOST_PROCESS_ERROR)


def test_run_with_a_live_process_stays_running(registry):
    run = registry.mark_running(registry.create(CONFIG, "tester").id, os.getpid(), "cpu", "random")
    assert [r.status for r in registry.list()] == ["running"]
    assert registry.running() == registry.get(run.id) == run


def test_reused_pid_is_not_the_training_process(registry):
    run = registry.mark_running(registry.create(CONFIG, "tester").id, os.getpid(), "cpu", "random")
    set_columns(registry, run.id, pid_start=run.pid_start - 1)  # our pid, but another process's start time
    assert registry.get(run.id).status == "failed"


def test_runs_of_another_host_are_left_alone(registry):
    run = registry.mark_running(registry.create(CONFIG, "tester").id, os.getpid(), "cpu", "random")
    set_columns(registry, run.id, host="gpu-box-2", pid=2**22 + 1)  # no such pid here
    assert registry.get(run.id).status == "running"


def test_runs_are_listed_while_another_process_holds_the_write_lock(workspace_home, registry):
    """Reads never take the write lock: `runs` answers at once while another process writes."""
    run = registry.mark_cancelled(registry.create(CONFIG, "tester").id)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with lock_held(str(registry.engine.url)):
        done = subprocess.run([sys.executable, "-m", "training", "runs"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=25)  # a waiting reader would wait 30 s
        shown = subprocess.run([sys.executable, "-m", "training", "show", run.id, "--json"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=25)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == [run.id, "cancelled"]
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "cancelled"


def test_a_lost_run_is_marked_failed_once_the_lock_is_free(workspace_home, registry, monkeypatch):
    child, run_id = start_child("exit")
    assert child.wait() == 0
    monkeypatch.setattr(database, "LOCK_TIMEOUT_MS", 500)
    db_engine(str(registry.engine.url)).dispose()
    with lock_held(str(registry.engine.url)):
        assert finishes_within(30, lambda: registry.get(run_id)).status == "queued"  # read, marked later
        with pytest.raises(database.DatabaseBusy, match="busy.*try again"):
            finishes_within(30, lambda: registry.mark_cancelled(run_id))
    assert (registry.get(run_id).status, registry.get(run_id).error) == ("failed", LOST_PROCESS_ERROR)


def test_runs_of_a_dataset_rank_by_their_held_out_score_before_newer_and_other_runs(registry, tmp_path):
    data, other = tmp_path / "data", tmp_path / "other"
    ids = {}
    for name, folder, score in (("old_best", data, 0.61), ("unscored", data, None), ("elsewhere", other, 0.99),
                                ("newest", data, 0.42)):
        run = registry.create({**CONFIG, "data": str(folder)}, "tester")
        registry.mark_running(run.id, os.getpid(), "cpu", "random")
        metrics = {} if score is None else {"mean_macro_f1": score}
        registry.mark_finished(run.id, 0.5, "val/mean_macro_f1", metrics, {})
        ids[run.id] = name
    newest_first = registry.list()
    assert [ids[record.id] for record in newest_first] == ["newest", "elsewhere", "unscored", "old_best"]
    ranked = best_first(newest_first, str(data) + "/")
    assert [ids[record.id] for record in ranked] == ["old_best", "newest", "unscored", "elsewhere"]
    assert [dataset_score(record) for record in ranked] == [Score(0.61, ScoreBasis.VALIDATION),
                                                           Score(0.42, ScoreBasis.VALIDATION), None,
                                                           Score(0.99, ScoreBasis.VALIDATION)]


def test_a_score_on_the_datasets_test_part_is_preferred_and_ranks_before_validation_scores(registry, tmp_path):
    """Test-part scores are on the same rows for every run: they rank among themselves, ahead of runs scored on
    their own validation rows, whatever those say."""
    data = tmp_path / "data"
    ids = {}
    for name, metrics in (("test_low", {"mean_macro_f1": 0.95, "test_mean_macro_f1": 0.40}),
                          ("validation_only", {"mean_macro_f1": 0.90}),
                          ("test_high", {"mean_macro_f1": 0.50, "test_mean_macro_f1": 0.70}),
                          ("test_nan", {"mean_macro_f1": 0.30, "test_mean_macro_f1": float("nan")})):
        run = registry.create({**CONFIG, "data": str(data)}, "tester")
        registry.mark_running(run.id, os.getpid(), "cpu", "random")
        registry.mark_finished(run.id, 0.5, "val/mean_macro_f1", metrics, {})
        ids[run.id] = name
    ranked = best_first(registry.list(), data)
    assert [ids[record.id] for record in ranked] == ["test_high", "test_low", "validation_only", "test_nan"]
    assert [str(dataset_score(record)) for record in ranked] == [
        "0.700 on its test part", "0.400 on its test part", "0.900 on its validation rows",
        "0.300 on its validation rows"]
