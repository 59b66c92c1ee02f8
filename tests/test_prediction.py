"""Prediction on new photos (core.model.predictor) with a real tiny run: top-k per head equal to the
module's own softmax on the evaluation preprocessing, bad files reported per file in order, and
`python -m training predict`."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_images import PHOTO, jpeg_bytes, patched_jpeg_size
from torchvision.transforms import v2

from core import workspace
from core.data.catalogue import load_catalogue
from core.images.cache import open_cached
from core.images.reading import expand_paths, open_rgb
from core.images.transforms import data_config
from core.model.predictor import (
    CPU_FORWARD_BATCH,
    FilePrediction,
    Guess,
    Predictor,
    bucket_size,
    row_columns,
)
from core.trust.sources import HeadRule
from core.trust.typicality import UNLIKE_CALIBRATION
from training.__main__ import main as cli
from training.builders import build_datamodule
from training.checkpoints import load_predictor, load_run_module, predict_device
from training.config import TrainConfig
from training.evaluate import predict

from conftest import REPO
from test_transforms import reference_float


@pytest.fixture(scope="module")
def run(in_tiny_run):
    """The shared tiny run of the default recipe (any finished run does); its workspace is `home`."""
    record, demo, home = in_tiny_run
    return SimpleNamespace(record=record, cfg=TrainConfig.from_dict(record.config), home=home, demo=demo)


@pytest.fixture(scope="module")
def demo(run) -> Path:
    return run.demo


@pytest.fixture(scope="module")
def predictor(run) -> Predictor:
    return load_predictor(run.record.folder, run_id=run.record.id)


@pytest.fixture
def in_workspace(run, monkeypatch):
    """The CLI, called in-process, sees the run's workspace."""
    monkeypatch.setenv(workspace.HOME_ENV, str(run.home))


def demo_photos(demo: Path, n: int) -> list[Path]:
    return sorted((demo / "images").glob("*.jpg"))[:n]


def test_load_predictor_takes_the_runs_size_schema_and_checkpoint(run, predictor):
    assert (predictor.run_id, predictor.checkpoint, predictor.image_size) == (run.record.id, "best.ckpt", 64)
    assert predictor.heads == run.cfg.heads and predictor.schema.heads == run.cfg.heads
    assert not predictor.module.training
    last = load_predictor(run.record.folder, "last")
    assert last.checkpoint == "last.ckpt"
    # The calibration was fitted on best's predictions: with last's weights it certifies nothing.
    assert predictor.trust.calibration is not None and last.trust.calibration is None


def module_probabilities(predictor: Predictor, images, image_size: int) -> dict:
    """Built independently of the predictor: the float pipeline computed here (test_transforms'
    reference: torchvision's ToTensor and Normalize), and predict_step's probabilities."""
    cfg = data_config(predictor.module.net.backbone, image_size)
    batch = torch.stack([reference_float(cfg, image) for image in images])
    with torch.no_grad():
        probs = predictor.module.predict_step({"image": batch, "id": torch.arange(len(images))}, 0)["probs"]
    return {head: p.numpy() for head, p in probs.items()}


def test_without_a_trust_layer_top_k_is_the_modules_softmax_on_the_evaluation_preprocessing(run, predictor, demo):
    raw = Predictor(predictor.module, predictor.schema, run.cfg.image_size, channels_last=True)
    images = [open_rgb(path) for path in demo_photos(demo, 5)]
    results = raw.predict_images(images, top_k=3)
    probs = module_probabilities(predictor, images, run.cfg.image_size)
    assert len(results) == 5
    for row, result in enumerate(results):
        assert list(result.guesses) == list(run.cfg.heads) and result.accepted is None
        for head, guesses in result.guesses.items():
            expected = probs[head][row]
            order = np.argsort(-expected, kind="stable")[:3]
            assert len(guesses) == min(3, len(predictor.schema.classes[head]))
            assert [guess.label for guess in guesses] == [predictor.schema.classes[head][i] for i in order]
            np.testing.assert_allclose([guess.p for guess in guesses], expected[order], atol=1e-5)
            assert all(isinstance(guess.p, float) for guess in guesses)
            ps = [guess.p for guess in guesses]
            assert ps == sorted(ps, reverse=True) and sum(ps) <= 1 + 1e-6


def test_uint8_path_gives_the_float_pipelines_input_and_logits(run, predictor, demo):
    """The predictor's path (uint8 from the eval transform, then the module's own normalise on its
    device, channels_last) against the float pipeline it replaced, computed here on the same photos."""
    images = [open_rgb(path) for path in demo_photos(demo, CPU_FORWARD_BATCH)]  # one forward pass
    cfg = data_config(predictor.module.net.backbone, run.cfg.image_size)
    uint8 = torch.stack([predictor.transform(image) for image in images])
    assert uint8.dtype == torch.uint8 and uint8.shape == (len(images), *predictor.input_shape)
    ours = predictor.module.normalise(uint8, predictor.memory_format)
    reference = torch.stack([reference_float(cfg, image) for image in images])
    assert (ours - reference).abs().max().item() < 1e-5
    # What the workers computed before (the same geometry, torchvision v2's float tail): the same bits.
    before = v2.Normalize(list(cfg["mean"]), list(cfg["std"]))(v2.ToDtype(torch.float32, scale=True)(uint8))
    assert torch.equal(ours, before)
    with torch.no_grad():
        expected = predictor.module(before.contiguous(memory_format=predictor.memory_format))
    probs = predictor.probabilities(images)
    for head in predictor.heads:
        np.testing.assert_array_equal(probs[head], expected[head].float().softmax(dim=-1).numpy())


def test_evaluation_path_gives_the_float_pipelines_probabilities(run, predictor, in_workspace):
    """trainer.predict over the DataModule (evaluate, calibrate, crossval): uint8 batches, normalised
    by the module after the transfer, equal the module on the float pipeline of the same cached photos."""
    module, cfg, schema, _ = load_run_module(run.record.folder)
    catalogue = load_catalogue(run.demo)
    split = pd.Series("train", index=catalogue.frame.index)
    datamodule = build_datamodule(cfg, catalogue, schema, split, module)
    wanted = catalogue.frame["id"].tolist()[:6]
    ids, probs, features = predict(module, datamodule.predict_dataloader(wanted), accelerator="cpu")
    assert ids.tolist() == wanted
    data_cfg = data_config(module.net.backbone, cfg.image_size)
    batch = torch.stack([reference_float(data_cfg, open_cached(datamodule.cache_folder, i)) for i in wanted])
    with torch.no_grad():
        expected, pooled = module.eval()(batch), module.net.backbone(batch)
    for head in module.heads:
        np.testing.assert_allclose(probs[head], expected[head].softmax(dim=-1).numpy(), atol=1e-5)
    # What the typicality gate compares, at the half precision an evaluation keeps them in.
    np.testing.assert_allclose(features, pooled.numpy(), rtol=2e-3, atol=1e-3)


def test_predictions_go_through_the_runs_trust_layer(run, predictor, demo):
    """The proposal first (consistent, calibrated), then the next most probable; accepted where the
    head's threshold at the target error is reached."""
    assert predictor.trust is not None and predictor.trust.calibration is not None
    images = [open_rgb(path) for path in demo_photos(demo, 5)]
    results = predictor.predict_images(images, top_k=3)
    proposals = predictor.trust.propose(module_probabilities(predictor, images, run.cfg.image_size))
    thresholds = predictor.trust.thresholds(predictor.target_error)
    for row, result in enumerate(results):
        for head, guesses in result.guesses.items():
            names = predictor.schema.classes[head]
            assert guesses[0].label == names[proposals.labels[head][row]]
            assert guesses[0].p == pytest.approx(proposals.confidence[head][row], abs=1e-5)
            rest = [guess.p for guess in guesses[1:]]
            assert rest == sorted(rest, reverse=True)
            sure = thresholds[head] is not None and proposals.confidence[head][row] >= thresholds[head]
            assert result.accepted[head] == (guesses[0].label if sure else None)
    assert not predictor.trust.paths.impossible(proposals.labels).any()


def test_top_k_beyond_a_heads_classes_gives_them_all_summing_to_one(predictor, demo):
    (result,) = predictor.predict_images([open_rgb(demo_photos(demo, 1)[0])], top_k=1000)
    for head, guesses in result.guesses.items():
        assert sorted(guess.label for guess in guesses) == sorted(predictor.schema.classes[head])
        assert sum(guess.p for guess in guesses) == pytest.approx(1.0, abs=1e-5)


def test_batched_and_single_images_give_the_same_numbers(predictor, demo):
    images = [open_rgb(path) for path in demo_photos(demo, 7)]
    batched = predictor.probabilities(images, batch_size=32)
    in_threes = predictor.probabilities(images, batch_size=3)
    for row, image in enumerate(images):
        single = predictor.probabilities([image])
        for head in predictor.heads:
            np.testing.assert_allclose(batched[head][row], single[head][0], atol=1e-5)
            np.testing.assert_allclose(in_threes[head][row], single[head][0], atol=1e-5)
    assert {head: array.shape for head, array in batched.items()} == {
        head: (7, len(names)) for head, names in predictor.schema.classes.items()}


def test_bucket_sizes_are_the_next_power_of_two():
    assert [bucket_size(rows) for rows in (1, 2, 3, 4, 5, 8, 9, 31, 32, 33)] == [1, 2, 4, 4, 8, 8, 16, 32, 32, 64]


def test_padded_batches_give_the_same_numbers_at_bucket_shapes_only(run, demo):
    """On a GPU a batch is padded to its bucket (padding on a CPU, to check that the padding rows
    change nothing and that the module only ever sees bucket-sized batches, warm-up included)."""
    padded = load_predictor(run.record.folder, run_id=run.record.id)
    plain = load_predictor(run.record.folder, run_id=run.record.id)
    assert not plain.pad_batches  # the CPU default
    padded.pad_batches = True
    seen: list[int] = []
    padded.module.register_forward_pre_hook(lambda module, inputs: seen.append(len(inputs[0])))
    padded.warm_up(5)
    assert seen == [1, 2, 4, 8]
    seen.clear()
    images = [open_rgb(path) for path in demo_photos(demo, 7)]
    got, expected = padded.probabilities(images, batch_size=32), plain.probabilities(images, batch_size=32)
    assert seen == [4, 4]  # the CPU's chunks of CPU_FORWARD_BATCH: 4 rows, then 3 padded to 4
    for head in padded.heads:
        assert got[head].shape == expected[head].shape == (7, len(padded.schema.classes[head]))
        np.testing.assert_allclose(got[head], expected[head], atol=1e-5)
    with pytest.raises(ValueError, match="max_batch must be a positive int, got 0"):
        padded.warm_up(0)


def test_bad_arguments_are_refused_and_no_images_is_no_predictions(predictor, demo):
    image = open_rgb(demo_photos(demo, 1)[0])
    for kwargs, message in [({"top_k": 0}, "top_k must be a positive int, got 0"),
                            ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
                            ({"top_k": 2.5}, "top_k must be a positive int, got 2.5")]:
        with pytest.raises(ValueError, match=message):
            predictor.predict_images([image], **kwargs)
        with pytest.raises(ValueError, match=message):
            predictor.predict_files(["x.jpg"], **kwargs)
    with pytest.raises(TypeError, match=r"images\[1\] is a str, not a PIL image"):
        predictor.predict_images([image, "photo.jpg"])
    assert predictor.predict_images([]) == [] and predictor.predict_files([]) == []
    assert predictor.probabilities([])["gender"].shape == (0, len(predictor.schema.classes["gender"]))


def test_a_schema_that_does_not_fit_the_module_is_refused(predictor):
    classes = dict(predictor.schema.classes, gender=predictor.schema.classes["gender"][:-1])
    schema = dataclasses.replace(predictor.schema, classes=classes)
    with pytest.raises(ValueError, match=r"disagree on class counts \(module, schema\): \{'gender': "):
        Predictor(predictor.module, schema, 64)


def write_inputs(folder: Path, demo: Path) -> list[tuple[str, str | None]]:
    """Good and bad inputs in `folder`: (path as given, the problem its error must name, or None if good)."""
    photos = demo_photos(demo, 6)
    (folder / "sub").mkdir()
    shutil.copy(photos[0], folder / "good.jpg")
    (folder / "notes.jpg").write_text("not a photo at all\n")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "half.jpg").write_bytes(PHOTO[:len(PHOTO) // 2])
    (folder / "huge.jpg").write_bytes(patched_jpeg_size(PHOTO, 20_000, 20_000))
    (folder / "cmyk.jpg").write_bytes(jpeg_bytes((240, 320), (0, 255, 255, 0), mode="CMYK"))
    open_rgb(photos[1]).convert("L").save(folder / "grey.png")
    rgba = open_rgb(photos[2]).convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 128))
    rgba.save(folder / "alpha.png")
    shutil.copy(photos[3], folder / "odd..name.jpg")
    shutil.copy(photos[4], folder / "through-parent.jpg")
    return [
        (f"{folder}/good.jpg", None),
        (f"{folder}/notes.jpg", "not an image"),
        (f"{folder}/empty.jpg", "the file is empty (0 bytes)"),
        (f"{folder}/half.jpg", "the image data is truncated or corrupt"),
        (f"{folder}/huge.jpg", "400,000,000 pixels, more than the 160 megapixel limit"),  # decoded reduced
        (f"{folder}/cmyk.jpg", None),
        (f"{folder}/grey.png", None),
        (f"{folder}/alpha.png", None),
        (f"{folder}/odd..name.jpg", None),
        (f"{folder}/sub/../through-parent.jpg", None),
        (f"{folder}/missing.jpg", "no such file or folder"),
        (f"{folder}/sub", "a folder, not an image file"),
    ]


def test_a_batch_with_bad_files_reports_each_and_predicts_the_rest_in_order(predictor, demo, tmp_path):
    inputs = write_inputs(tmp_path, demo)
    results = predictor.predict_files([path for path, _ in inputs], top_k=2, batch_size=5)  # spans three batches
    assert [result.path for result in results] == [path for path, _ in inputs]
    for result, (path, problem) in zip(results, inputs):
        if problem is not None:
            assert result.predictions is None and result.error.startswith(f"{path}: {problem}"), result
            continue
        assert result.error is None, result
        alone = predictor.predict_images([predictor.read_file(path)], top_k=2)[0]
        assert list(result.predictions) == list(predictor.heads) and result.accepted == alone.accepted
        for head, guesses in result.predictions.items():
            assert [guess.label for guess in guesses] == [guess.label for guess in alone.guesses[head]], (path, head)
            np.testing.assert_allclose([g.p for g in guesses], [g.p for g in alone.guesses[head]], atol=1e-5)


def test_files_are_decoded_to_twice_the_input_side(predictor, tmp_path):
    Image.new("RGB", (1800, 2400), (10, 120, 200)).save(tmp_path / "big.jpg")
    Image.new("RGB", (3000, 1000), (10, 120, 200)).save(tmp_path / "wide.png")
    assert predictor.read_file(tmp_path / "big.jpg").size == (96, 128)
    assert predictor.read_file(tmp_path / "wide.png").size == (128, 43)


def test_file_prediction_as_json_has_exactly_its_keys():
    good = FilePrediction("a.jpg", predictions={"gender": [Guess("Men", 0.75), Guess("Women", 0.25)]})
    assert good.as_json() == {"path": "a.jpg", "predictions": {"gender": [{"label": "Men", "p": 0.75},
                                                                            {"label": "Women", "p": 0.25}]}}
    bad = FilePrediction("b.txt", error="b.txt: not an image")
    assert bad.as_json() == {"path": "b.txt", "error": "b.txt: not an image"}
    trusted = FilePrediction("a.jpg", predictions={"gender": [Guess("Men", 0.99)]}, accepted={"gender": "Men"})
    assert trusted.as_json()["accepted"] == {"gender": "Men"} and "typical" not in trusted.as_json()
    gated = FilePrediction("a.jpg", predictions={"gender": [Guess("Men", 0.99)]}, accepted={"gender": None},
                           typicality=(0.42, False))
    assert gated.as_json() == {**trusted.as_json(), "accepted": {"gender": None}, "typicality": 0.42,
                               "typical": False, "note": UNLIKE_CALIBRATION}
    ruled = dataclasses.replace(trusted, source="spring", rules={"gender": HeadRule(0.9, False, "its own")})
    assert ruled.as_json() == {**trusted.as_json(), "source": "spring",
                               "rules": {"gender": {"threshold": 0.9, "gated": False, "why": "its own"}}}
    assert dataclasses.replace(ruled, source=None).as_json()["source"] is None  # the run's rule: said, not left out


def test_file_prediction_as_row_is_flat_with_the_top_label_per_head():
    heads = ("gender", "usage")
    assert row_columns(heads) == ["path", "gender", "gender_p", "gender_accepted", "usage", "usage_p",
                                  "usage_accepted", "error"]
    good = FilePrediction("a.jpg", predictions={"gender": [Guess("Men", 0.75), Guess("Women", 0.25)],
                                                "usage": [Guess("Casual", 0.5)]},
                          accepted={"gender": "Men", "usage": None})
    assert good.as_row(heads) == {"path": "a.jpg", "gender": "Men", "gender_p": 0.75, "gender_accepted": "Men",
                                  "usage": "Casual", "usage_p": 0.5, "usage_accepted": "", "error": ""}
    bad = FilePrediction("b.txt", error="b.txt: not an image")
    assert bad.as_row(heads) == {"path": "b.txt", "gender": "", "gender_p": "", "gender_accepted": "", "usage": "",
                                 "usage_p": "", "usage_accepted": "", "error": "b.txt: not an image"}


def test_expand_paths_keeps_files_and_expands_folders_to_their_images(tmp_path):
    folder = tmp_path / "photos"
    (folder / "b" / "deeper").mkdir(parents=True)
    for name in ("z.jpg", "a.PNG", "b/c.webp", "b/deeper/d.JPEG", "b/e.avif", "notes.txt", "b/f.gif", "b/deeper/g"):
        (folder / name).write_bytes(b"x")
    (folder / "dir.jpg").mkdir()  # a folder named like an image is not a file
    listed = expand_paths([tmp_path / "notes.txt", folder, tmp_path / "gone.jpg", folder / "notes.txt"])
    assert listed == [tmp_path / "notes.txt", folder / "a.PNG", folder / "b/c.webp", folder / "b/deeper/d.JPEG",
                      folder / "b/e.avif", folder / "z.jpg", tmp_path / "gone.jpg", folder / "notes.txt"]
    assert expand_paths([]) == [] and expand_paths([str(folder / "b" / "deeper")]) == [folder / "b/deeper/d.JPEG"]


@pytest.mark.slow
def test_cli_predict_json_prints_one_line_per_input(run, demo, predictor, tmp_path):
    shutil.copy(demo_photos(demo, 1)[0], tmp_path / "good.jpg")
    (tmp_path / "bad.md").write_text("hello")
    env = dict(os.environ, HF_HUB_OFFLINE="1", **{workspace.HOME_ENV: str(run.home)})
    done = subprocess.run(
        [sys.executable, "-m", "training", "predict", run.record.id, str(tmp_path / "good.jpg"),
         str(tmp_path / "bad.md"), "--json", "--top-k", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    good, bad = [json.loads(line) for line in done.stdout.splitlines()]
    # The shared run is calibrated with a typicality gate: every line says how typical its photo is,
    # and which rule its accepted heads follow (no --source: the run's).
    assert set(good) - {"note"} == {"path", "predictions", "accepted", "source", "rules", "typicality", "typical"}
    assert good["source"] is None and list(good["rules"]) == list(run.cfg.heads)
    assert good["path"] == str(tmp_path / "good.jpg") and ("note" in good) == (not good["typical"])
    assert list(good["predictions"]) == list(good["accepted"]) == list(run.cfg.heads)
    assert all(label in (None, good["predictions"][head][0]["label"]) for head, label in good["accepted"].items())
    for guesses in good["predictions"].values():
        assert len(guesses) == 2 and all(set(guess) == {"label", "p"} for guess in guesses)
    # What the run's Predictor says in-process: the proposal first (taxonomy-consistent, so not
    # always the most probable label), then the most probable other.
    (expected,) = predictor.predict_files([tmp_path / "good.jpg"], top_k=2)
    assert good["accepted"] == expected.accepted
    assert (good["typicality"], good["typical"]) == pytest.approx(expected.typicality, abs=1e-6)
    assert {head: [guess["label"] for guess in guesses] for head, guesses in good["predictions"].items()} == {
        head: [guess.label for guess in guesses] for head, guesses in expected.predictions.items()}
    assert [guess["p"] for guesses in good["predictions"].values() for guess in guesses] == pytest.approx(
        [guess.p for guesses in expected.predictions.values() for guess in guesses], abs=1e-6)
    assert bad == {"path": str(tmp_path / "bad.md"), "error": f"{tmp_path / 'bad.md'}: not an image, or a format "
                                                              "that cannot be read (accepted: JPEG, PNG, WEBP, AVIF)"}
    assert f"run {run.record.id}, checkpoint best.ckpt, on cpu: 1 of 2 images read" in done.stderr


def test_cli_predict_a_folder_reads_its_images(run, demo, tmp_path, in_workspace, capsys):
    (tmp_path / "shop" / "new").mkdir(parents=True)
    for index, photo in enumerate(demo_photos(demo, 3)):
        shutil.copy(photo, tmp_path / "shop" / ("new" if index else "") / f"p{index}.jpg")
    (tmp_path / "shop" / "readme.txt").write_text("not an image")
    assert cli(["predict", run.record.id, str(tmp_path / "shop"), "--json", "--batch-size", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = [tmp_path / "shop" / name for name in ("new/p1.jpg", "new/p2.jpg", "p0.jpg")]  # sorted by path
    assert [line["path"] for line in lines] == list(map(str, expected))
    assert all(set(line) - {"note"} == {"path", "predictions", "accepted", "source", "rules", "typicality", "typical"}
               for line in lines)


def test_cli_predict_csv_writes_a_row_per_image_matching_the_json(run, demo, tmp_path, in_workspace, capsys):
    photos = [shutil.copy(photo, tmp_path / f"p{index}.jpg") for index, photo in enumerate(demo_photos(demo, 2))]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    table = tmp_path / "tags.csv"
    assert cli(["predict", run.record.id, str(tmp_path), "--json", "--csv", str(table), "--batch-size", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows = pd.read_csv(table, keep_default_na=False)
    assert list(rows.columns) == row_columns(run.cfg.heads)
    assert (rows["path"].tolist() == [str(tmp_path / "broken.jpg"), *map(str, photos)]
            == [line["path"] for line in lines])
    assert rows["error"].iloc[0] == lines[0]["error"] and rows["gender"].iloc[0] == ""
    for (_, row), line in zip(rows.iloc[1:].iterrows(), lines[1:]):
        assert row["error"] == ""
        for head in run.cfg.heads:
            top = line["predictions"][head][0]
            assert row[head] == top["label"] and float(row[f"{head}_p"]) == pytest.approx(top["p"])
            assert row[f"{head}_accepted"] == (line["accepted"][head] or "")


def test_predict_device_auto_is_the_cpu_without_a_gpu_and_cuda_is_refused(run, tmp_path, in_workspace, capsys,
                                                                          monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert predict_device("auto") == torch.device("cpu") == load_predictor(run.record.folder, device="auto").device
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, got 'gpu'"):
        predict_device("gpu")
    assert cli(["predict", run.record.id, str(tmp_path), "--device", "cuda"]) == 2
    assert capsys.readouterr().err == "error: device cuda: torch sees no CUDA GPU on this machine; use cpu or auto\n"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert predict_device("auto") == predict_device("cuda") == torch.device("cuda")


def test_cli_predict_csv_into_a_missing_folder_fails_before_loading(run, tmp_path, in_workspace, capsys):
    assert cli(["predict", run.record.id, str(tmp_path), "--csv", str(tmp_path / "no" / "tags.csv")]) == 2
    assert capsys.readouterr().err == f"error: --csv: the folder {tmp_path / 'no'} does not exist\n"


def test_cli_predict_prints_a_block_per_image(run, demo, tmp_path, in_workspace, capsys):
    shutil.copy(demo_photos(demo, 1)[0], tmp_path / "good.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    assert cli(["predict", run.record.id, str(tmp_path / "good.jpg"), str(tmp_path / "empty.png"), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(tmp_path / "good.jpg")
    assert [line.split()[0] for line in lines[1:8]] == list(run.cfg.heads)
    assert all(len(line.split()) == 3 and 0 <= float(line.split()[2]) <= 1 for line in lines[1:8])
    assert lines[8:] == [str(tmp_path / "empty.png"), f"  error: {tmp_path / 'empty.png'}: the file is empty (0 bytes)",
                         f"run {run.record.id}, checkpoint best.ckpt, on cpu: 1 of 2 images read; accepted under "
                         "the run's rule (no --source)"]


def test_cli_predict_with_nothing_readable_exits_1(run, tmp_path, in_workspace, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert cli(["predict", run.record.id, str(tmp_path / "empty.jpg"), str(tmp_path / "gone.jpg"), "--json"]) == 1
    captured = capsys.readouterr()
    assert [json.loads(line)["error"] for line in captured.out.splitlines()] == [
        f"{tmp_path / 'empty.jpg'}: the file is empty (0 bytes)", f"{tmp_path / 'gone.jpg'}: no such file or folder"]
    (tmp_path / "nothing").mkdir()
    assert cli(["predict", run.record.id, str(tmp_path / "nothing")]) == 1
    assert "error: no image files (jpg, jpeg, png, webp, avif) in" in capsys.readouterr().err


def test_cli_predict_names_an_unknown_run_a_missing_checkpoint_and_a_bad_top_k(run, tmp_path, in_workspace, capsys):
    assert cli(["predict", "no-such-run", str(tmp_path)]) == 2
    assert "error: unknown run 'no-such-run'" in capsys.readouterr().err
    assert cli(["predict", run.record.id, str(tmp_path), "--checkpoint", "nope.ckpt"]) == 2
    assert "error: no 'nope.ckpt' checkpoint in" in capsys.readouterr().err
    assert cli(["predict", run.record.id, str(tmp_path), "--top-k", "0"]) == 2
    assert capsys.readouterr().err == "error: --top-k must be at least 1, got 0\n"


def test_cli_predict_accepts_more_heads_at_a_looser_target_error(run, demo, tmp_path, in_workspace, capsys):
    """--target-error E: a head is accepted where its confidence reaches its threshold at E, so a
    looser E accepts at least as many heads; E outside (0, 1) is refused before the model loads."""
    photos = [shutil.copy(photo, tmp_path / f"p{index}.jpg") for index, photo in enumerate(demo_photos(demo, 6))]
    accepted = {}
    for target in ("0.001", "0.5"):
        assert cli(["predict", run.record.id, *map(str, photos), "--json", "--target-error", target]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        accepted[target] = sum(label is not None for line in lines for label in line["accepted"].values())
    thresholds = load_predictor(run.record.folder).trust
    assert accepted["0.001"] <= accepted["0.5"]
    assert accepted["0.001"] == 0 or all(t is not None for t in thresholds.thresholds(0.001).values())
    assert cli(["predict", run.record.id, str(tmp_path), "--target-error", "2"]) == 2
    assert "the target error must be a rate between 0 and 1" in capsys.readouterr().err


def test_cli_predict_csv_neutralises_cells_a_spreadsheet_would_run(run, demo, tmp_path, in_workspace, monkeypatch):
    """OWASP's CSV-injection rule: a path (or an error naming it) that starts like a formula gets a quote."""
    monkeypatch.chdir(tmp_path)
    name = '=HYPERLINK("http:evil.example").jpg'
    shutil.copy(demo_photos(demo, 1)[0], tmp_path / name)
    (tmp_path / "@broken.jpg").write_bytes(b"\xff\xd8 not really")
    assert cli(["predict", run.record.id, name, "@broken.jpg", "--csv", "tags.csv"]) == 0
    with open(tmp_path / "tags.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["path"] for row in rows] == ["'" + name, "'@broken.jpg"]
    assert rows[1]["error"].startswith("'@broken.jpg") and rows[0]["error"] == "" and rows[0]["gender"]
    assert all(not value.startswith(("=", "+", "-", "@")) for row in rows for value in row.values())
