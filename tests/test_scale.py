"""Batch work past one process (training.scale): SRC as folders, catalogues and path lists; `predict --out`'s
Parquet parts equal to `predict --json`, resumable, a bad photo a record; and the Ray engine on a local
cluster (ray.init(num_cpus=2), shared by the module) giving the local engine's records, embeddings and
evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core import workspace
from core.access.database import DB_URL_ENV
from core.data.catalogue import load_catalogue
from core.evaluation.files import load_evaluation
from core.labels.store import LabelStore
from training.__main__ import main as cli
from training.checkpoints import load_predictor
from training.scale import (
    RAY_ADDRESS_ENV,
    PredictJob,
    RayCluster,
    engine_of,
    job_runtime_env,
    plan_parts,
    predict_to_parts,
    read_records,
    read_summary,
    source_paths,
)

from conftest import copy_database
from source_support import HEAD, certified_source

PHOTOS = 12  # real sample photos the engines are compared on


@pytest.fixture(scope="module")
def photos(real_sample, tmp_path_factory) -> list[Path]:
    """Real sample photos (both resolutions) and, third, a file that is no image."""
    images = sorted((real_sample / "images").glob("*.jpg"))
    chosen = images[:PHOTOS // 2] + images[-(PHOTOS // 2) + 1:]
    bad = tmp_path_factory.mktemp("bad") / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    return [*chosen[:2], bad, *chosen[2:]]


@pytest.fixture
def in_workspace(in_tiny_run, monkeypatch):
    monkeypatch.setenv(workspace.HOME_ENV, str(in_tiny_run.home))
    return in_tiny_run


def job_of(run, checkpoint: str = "best.ckpt") -> PredictJob:
    return PredictJob(run.record.id, run.record.folder, checkpoint, top_k=3, batch_size=4, target_error=0.02)


def test_source_paths_read_folders_catalogues_and_path_lists(tmp_path):
    folder = tmp_path / "shots"
    (folder / "deep").mkdir(parents=True)
    for name in ("b.jpg", "a.PNG", "deep/c.jpeg", "notes.txt"):
        (folder / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text(f"shots/b.jpg\n\n  {folder / 'missing.jpg'}  \n")
    catalogue = tmp_path / "cat"
    (catalogue / "images").mkdir(parents=True)
    (catalogue / "styles.csv").write_text(
        "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n"
        "7,Men,Apparel,Topwear,Tshirts,Blue,Summer,2012,Casual,A\n8,Men,Apparel,Topwear,Tshirts,Red,Summer,2012,Casual,B\n"
        "9,Men,Apparel,Topwear,Tshirts,Red,Summer,2012,Casual,C\n")
    for product_id in (8, 7):
        (catalogue / "images" / f"{product_id}.jpg").write_bytes(b"x")
    assert source_paths([folder, listing, catalogue, folder / "notes.txt"]) == [
        folder / "a.PNG", folder / "b.jpg", folder / "deep" / "c.jpeg",
        folder / "b.jpg", folder / "missing.jpg",
        catalogue / "images" / "7.jpg", catalogue / "images" / "8.jpg",
        folder / "x",  # notes.txt lists one path: "x"
    ]


def test_parts_are_named_by_position_and_content():
    parts = plan_parts([f"p{i}.jpg" for i in range(10)], part_size=4)
    assert [len(part.paths) for part in parts] == [4, 4, 2]
    again = plan_parts([f"p{i}.jpg" for i in range(10)], part_size=4)
    assert [part.name for part in parts] == [part.name for part in again]
    assert parts[0].name.startswith("part-000000-") and parts[2].name.startswith("part-000002-")
    changed = plan_parts([f"p{i}.jpg" for i in range(9)] + ["other.jpg"], part_size=4)
    assert [part.name for part in changed][:2] == [part.name for part in parts][:2]
    assert changed[2].name != parts[2].name
    with pytest.raises(ValueError, match="--part-size must be at least 1"):
        plan_parts(["a"], 0)


def test_ray_options_need_the_ray_engine():
    assert engine_of("local", None, None) is None
    assert engine_of("ray", "auto", 3, 2) == RayCluster("auto", 3, 2)
    with pytest.raises(ValueError, match="--address and --workers are for --engine ray"):
        engine_of("local", "auto", None)
    with pytest.raises(ValueError, match="unknown engine 'spark'; valid: local, ray"):
        engine_of("spark", None, None)
    with pytest.raises(ValueError, match="--workers must be at least 1"):
        RayCluster(workers=0)


def test_the_dashboards_jobs_run_on_the_cluster_its_environment_names(monkeypatch):
    from training.launcher import engine_arguments

    monkeypatch.delenv(RAY_ADDRESS_ENV, raising=False)
    assert engine_arguments() == []
    monkeypatch.setenv(RAY_ADDRESS_ENV, "10.0.0.5:6379")
    assert engine_arguments() == ["--engine", "ray", "--address", "10.0.0.5:6379"]


@pytest.mark.slow
def test_local_out_writes_the_json_records_as_parts_and_resumes(in_workspace, photos, tmp_path, capsys):
    paths = [str(path) for path in photos]
    assert cli(["predict", in_workspace.record.id, *paths, "--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    out = tmp_path / "out"
    assert cli(["predict", in_workspace.record.id, *paths, "--out", str(out), "--part-size", "5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    records = read_records(out)
    assert_same_records(records, printed)  # parts batch photos otherwise: p within float rounding
    assert printed[2] == {"path": str(photos[2]), "error": printed[2]["error"]} and "broken.jpg" in printed[2]["error"]
    assert (summary["state"], summary["records"], summary["read"], summary["errors"]) == ("finished", 12, 11, 1)
    assert summary["engine"].startswith("local") and summary["parts"] == 3 and len(summary["written"]) == 3
    assert read_summary(out) == summary

    # Stopped half way: one part missing. Started again, only that one is written.
    parts = sorted(out.glob("part-*.parquet"))
    parts[1].unlink()
    kept = {part.name: part.stat().st_mtime_ns for part in (parts[0], parts[2])}
    assert cli(["predict", in_workspace.record.id, *paths, "--out", str(out), "--part-size", "5", "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert resumed["written"] == [parts[1].name] and resumed["skipped_parts"] == 2
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept
    assert read_records(out) == records and not list(out.glob(".*.tmp"))

    # Another job's options into the same folder are refused rather than mixed in.
    assert cli(["predict", in_workspace.record.id, *paths, "--out", str(out), "--top-k", "2"]) == 2
    assert "holds the parts of another job" in capsys.readouterr().err


@pytest.mark.slow
def test_out_with_a_source_writes_its_rules_and_a_job_of_another_source_is_refused(in_workspace, photos, tmp_path,
                                                                                    monkeypatch, capsys):
    """`predict --out --source`: the records `predict --json --source` prints, the source's rules and
    verdicts in the parts ("source" and "rules" columns), the source in the job's identity."""
    monkeypatch.setenv(DB_URL_ENV, f"sqlite:///{copy_database(in_workspace.home, tmp_path)}")  # labels of its own
    record = in_workspace.record
    certified_source(LabelStore(workspace=in_workspace.home), in_workspace.demo, tmp_path / "lookbook", record.id,
                     load_predictor(record.folder).trust)
    paths = [str(path) for path in photos]
    assert cli(["predict", record.id, *paths, "--json", "--source", "lookbook"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    out = tmp_path / "out"
    assert cli(["predict", record.id, *paths, "--out", str(out), "--part-size", "5", "--source", "lookbook"]) == 0
    records = read_records(out)
    assert_same_records(records, printed)  # the rules and the heads they accept too
    read = [entry for entry in records if "error" not in entry]
    assert {entry["source"] for entry in read} == {"lookbook"} and any(entry["accepted"][HEAD] for entry in read)
    assert read_summary(out)["job"]["source"] == "lookbook"
    capsys.readouterr()
    assert cli(["predict", record.id, *paths, "--out", str(out), "--part-size", "5"]) == 2  # the run's rule now
    assert "holds the parts of another job" in capsys.readouterr().err


def test_parts_without_a_source_say_the_runs_rule_applied(in_workspace, photos, tmp_path):
    """A part's record keeps "source": null beside its rules, as `predict --json` prints it."""
    predict_to_parts(job_of(in_workspace), photos[:3], tmp_path / "out", device="cpu")
    records = read_records(tmp_path / "out")
    assert "error" in records[2] and "source" not in records[2]
    assert all(entry["source"] is None and entry["rules"][HEAD]["gated"] for entry in records[:2])


def test_ray_engine_needs_out_and_local_takes_no_address(in_workspace, photos, capsys):
    assert cli(["predict", in_workspace.record.id, str(photos[0]), "--engine", "ray"]) == 2
    assert capsys.readouterr().err == "error: --engine ray writes Parquet parts: give --out DIR\n"
    assert cli(["predict", in_workspace.record.id, str(photos[0]), "--address", "auto"]) == 2
    assert capsys.readouterr().err == "error: --address and --workers are for --engine ray\n"


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster of 2 CPUs for the module (about 10 s to start)."""
    ray = pytest.importorskip("ray", reason="Ray is an optional install: pip install -r requirements-ray.txt")
    ray.init(num_cpus=2, runtime_env=job_runtime_env(), include_dashboard=False, logging_level="WARNING",
             log_to_driver=False)
    yield RayCluster(workers=2)
    ray.shutdown()


@pytest.fixture
def one_thread():
    """torch on one thread here, as on each 1-CPU Ray worker: the same reduction order in every
    convolution, so the engines agree to float rounding (2 threads against 1 moved a calibrated p by 1.1e-6)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_same_records(ray_records: list[dict], local_records: list[dict]) -> None:
    assert [record["path"] for record in ray_records] == [record["path"] for record in local_records]
    for got, expected in zip(ray_records, local_records):
        assert got.keys() == expected.keys()
        if "error" in expected:
            assert got == expected
            continue
        assert (got["accepted"], got["source"], got["rules"]) == (expected["accepted"], expected["source"],
                                                                  expected["rules"])
        for head, guesses in expected["predictions"].items():
            assert [guess["label"] for guess in got["predictions"][head]] == [guess["label"] for guess in guesses]
            np.testing.assert_allclose([guess["p"] for guess in got["predictions"][head]],
                                       [guess["p"] for guess in guesses], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_ray_records_equal_the_local_engines_and_a_resumed_job_writes_no_part_twice(
        in_workspace, ray_cluster, photos, tmp_path, one_thread, capsys):
    job = job_of(in_workspace)
    local = predict_to_parts(job, photos, tmp_path / "local", device="cpu", part_size=4)
    summary = predict_to_parts(job, photos, tmp_path / "ray", ray_cluster, part_size=4)
    assert summary["engine"].startswith("ray at a local cluster: 2 workers of 1 CPU on 1 nodes (2 CPUs, 0 GPUs)")
    assert (summary["read"], summary["errors"]) == (local["read"], local["errors"]) == (11, 1)
    records = read_records(tmp_path / "ray")
    assert_same_records(records, read_records(tmp_path / "local"))
    assert "broken.jpg" in records[2]["error"]

    parts = sorted((tmp_path / "ray").glob("part-*.parquet"))
    parts[0].unlink()
    kept = {part.name: part.stat().st_mtime_ns for part in parts[1:]}
    # Started again from the command line, on the same cluster.
    assert cli(["predict", in_workspace.record.id, *map(str, photos), "--engine", "ray", "--workers", "2",
                "--out", str(tmp_path / "ray"), "--part-size", "4", "--batch-size", "4", "--json"]) == 0
    again = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert again["written"] == [parts[0].name] and again["engine"] == summary["engine"]
    assert {name: (tmp_path / "ray" / name).stat().st_mtime_ns for name in kept} == kept
    assert read_records(tmp_path / "ray") == records


@pytest.mark.slow
def test_ray_embeddings_and_evaluation_equal_the_local_ones(in_tiny_run, ray_cluster, tmp_path, one_thread):
    from core.health.embedder import catalogue_embeddings, pretrained_model
    from training.evaluate import evaluate_checkpoint
    from training.scale import ray_embedder

    catalogue = load_catalogue(in_tiny_run.demo)
    ids = catalogue.frame["id"].tolist()[:20]
    model = pretrained_model()
    local = catalogue_embeddings(catalogue, model, tmp_path / "local", ids=ids)
    on_ray = catalogue_embeddings(catalogue, model, tmp_path / "ray", ids=ids, embed=ray_embedder(ray_cluster))
    assert on_ray.ids.tolist() == local.ids.tolist() == ids
    np.testing.assert_allclose(on_ray.features, local.features, rtol=0, atol=1e-6)

    folder = in_tiny_run.record.folder
    target, report = evaluate_checkpoint(folder, in_tiny_run.demo)
    expected = load_evaluation(target).predictions
    shutil.rmtree(target)
    target, ray_report = evaluate_checkpoint(folder, in_tiny_run.demo, cluster=ray_cluster)
    predictions = load_evaluation(target).predictions
    assert ray_report["rows"] == report["rows"] == len(catalogue.frame)
    assert list(predictions.columns) == list(expected.columns)
    for column in expected.columns:  # labels and proposals identical; probabilities, typicality within 1e-6
        values, wanted = predictions[column], expected[column]
        if column.endswith("_probs"):
            np.testing.assert_allclose(np.stack(values), np.stack(wanted), rtol=0, atol=1e-6, err_msg=column)
        elif wanted.dtype.kind == "f":
            np.testing.assert_allclose(values, wanted, rtol=0, atol=1e-6, err_msg=column)
        else:
            assert values.tolist() == wanted.tolist(), column
    shutil.rmtree(target)
