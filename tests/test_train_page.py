"""AppTest of the Train page: the form, its errors, the busy refusal, and one tiny run from Start to finished."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import workspace
from core.data import HEADS
from core.data.demo import generate_demo
from training.config import RECIPE_SUMMARIES, TrainConfig
from training.estimate import estimate
from training.launcher import cancel_run
from training.registry import RunRegistry

from conftest import ANN, REPO

HOME = str(REPO / "dashboard" / "Home.py")
TRAIN = "../pages/train.py"
ROWS = 80


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("demo") / "data", n=ROWS, seed=12)


@pytest.fixture()
def registry(demo, workspace_home, monkeypatch) -> RunRegistry:
    """A fresh workspace with `demo` as the dataset the dashboard opens."""
    monkeypatch.setenv(workspace.DATA_ENV, str(demo))
    return RunRegistry()


def train_page() -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=60)
    at.run()
    at.switch_page(TRAIN).run()
    assert not at.exception, at.exception
    return at


def field(at: AppTest, kind: str, name: str, recipe: str = "default"):
    return getattr(at, kind)(key=f"train.{recipe}.{name}")


def texts(elements) -> list[str]:
    return [element.value for element in elements]


CONTROL_PATH = f"""
import json, sys
import training.config, training.registry, training.run_folder
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({HOME!r}, default_timeout=120)
at.run()
at.switch_page({TRAIN!r}).run()
shown = [element.value for element in at.info] + [button.label for button in at.button]
print(json.dumps({{"exception": [str(error.value) for error in at.exception], "shown": shown,
                  "loaded": sorted(name for name in ("torch", "lightning", "timm", "torchmetrics")
                                   if name in sys.modules)}}))
"""


def test_the_control_path_and_the_train_pages_first_view_load_no_torch(registry, demo, tmp_path):
    """Config, run folder, registry and the Train page's first render (form, estimate, runs) need no
    torch: a cold torch import costs seconds the page should not pay. In a fresh interpreter, since
    this one has torch loaded already."""
    done = subprocess.run([sys.executable, "-c", CONTROL_PATH], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["exception"] == []
    assert any(text.startswith("Per epoch:") for text in result["shown"]) and "Start training" in result["shown"]
    assert result["loaded"] == []


def test_the_form_is_prefilled_from_the_recipe_with_an_estimate(registry, demo):
    at = train_page()
    assert field(at, "selectbox", "backbone").value == "tf_efficientnet_lite0"
    assert field(at, "number_input", "image_size").value == 224
    assert field(at, "number_input", "max_samples").value == 0  # all rows
    assert field(at, "text_input", "rare_min_count").value == "auto"
    hint = estimate(TrainConfig(data=str(demo)), 64, 16)
    assert (hint["train_images"], hint["val_images"]) == (64, 16)
    assert any(text.startswith("Per epoch: 64 training and 16 validation images (2 × batch 32). Roughly ")
               for text in texts(at.info))
    assert "No runs yet: start one above." in texts(at.info)
    assert not at.button(key="train.start").disabled

    assert RECIPE_SUMMARIES["default"] in texts(at.caption)

    at.radio(key="train.recipe").set_value("seed").run()
    assert RECIPE_SUMMARIES["seed"] in texts(at.caption) and RECIPE_SUMMARIES["default"] not in texts(at.caption)
    assert field(at, "selectbox", "backbone", "seed").value == "efficientnet_b3"
    assert field(at, "number_input", "image_size", "seed").value == 256
    assert field(at, "toggle", "freeze_backbone", "seed").value is True
    assert field(at, "text_input", "rare_min_count", "seed").value == "500"


def test_a_bad_value_shows_the_config_error_and_disables_start(registry):
    at = train_page()
    field(at, "number_input", "image_size").set_value(100).run()
    assert texts(at.error) == ["invalid training config: image_size must be a multiple of 32 in [64, 1024], got 100"]
    assert at.button(key="train.start").disabled
    # Out of the config's bounds: kept as typed (no widget bound replaces it) and refused by name.
    field(at, "number_input", "image_size").set_value(5000)
    field(at, "number_input", "epochs").set_value(0).run()
    assert field(at, "number_input", "image_size").value == 5000 and field(at, "number_input", "epochs").value == 0
    assert texts(at.error) == ["invalid training config: image_size must be a multiple of 32 in [64, 1024], got 5000; "
                               "epochs must be >= 1, got 0"]
    assert at.button(key="train.start").disabled
    field(at, "number_input", "image_size").set_value(224)
    field(at, "number_input", "epochs").set_value(10)
    field(at, "number_input", "lr").set_value(50.0).run()
    assert "lr=50 is far above AdamW's usual 1e-4 to 1e-2: training will likely diverge." in texts(at.warning)
    assert not at.button(key="train.start").disabled  # a warning, not a refusal

    field(at, "number_input", "image_size").set_value(128)
    field(at, "text_input", "rare_min_count").set_value("lots").run()
    assert texts(at.error) == ["invalid training config: rare_min_count must be an int >= 0 or 'auto', got 'lots'"]
    assert not at.exception


def test_the_model_options_reach_the_config_and_a_bad_head_weight_is_refused(registry):
    at = train_page()
    field(at, "selectbox", "head").set_value("conditioned")
    field(at, "number_input", "label_smoothing").set_value(0.1)
    field(at, "number_input", "ema_decay").set_value(0.998)
    field(at, "toggle", "tta_flip").set_value(True)
    field(at, "text_input", "head_weights").set_value("gender:2, seasn:2").run()
    assert texts(at.error) == ["invalid training config: head_weights item 'seasn:2' must be head:weight with one of "
                               "the learned heads (" + ", ".join(HEADS) + "), each once, and a weight > 0"]
    assert at.button(key="train.start").disabled
    field(at, "text_input", "head_weights").set_value("gender:2, season:2").run()
    assert not at.error
    at.button(key="train.start").click().run()
    assert not at.exception, at.exception
    [record] = registry.list()
    cancel_run(record.id, ANN)
    assert {key: record.config[key]
            for key in ("head", "label_smoothing", "ema_decay", "tta_flip", "head_weights")} == {
        "head": "conditioned", "label_smoothing": 0.1, "ema_decay": 0.998, "tta_flip": True,
        "head_weights": ["gender:2", "season:2"]}


def test_start_while_a_run_is_active_says_which(registry):
    active = registry.create(TrainConfig().to_dict(), "tester")  # queued, owned by this live process
    at = train_page()
    at.button(key="train.start").click().run()
    assert any(f"run {active.id} is queued; cancel it or wait" in text for text in texts(at.error))
    assert [record.id for record in registry.list()] == [active.id]
    assert at.selectbox(key="train_run_id").value == active.id
    assert at.progress[0].proto.text == "Starting the training process…"


def test_cancel_button_cancels_the_shown_run(registry):
    queued = registry.create(TrainConfig().to_dict(), "tester")  # no process was launched for it: nothing to signal
    at = train_page()
    at.button(key=f"cancel.{queued.id}").click().run()
    assert not at.exception, at.exception
    assert registry.get(queued.id).status == "cancelled"
    assert "Cancelled. It ended before saving a checkpoint." in texts(at.warning)
    assert not at.get("progress")


def test_a_failed_run_shows_its_error_and_the_end_of_its_log(registry):
    failed = registry.create(TrainConfig().to_dict(), "tester")
    Path(failed.folder).mkdir(parents=True)
    Path(failed.folder, "run.log").write_text("loading\nerror: no pretrained weights for efficientnet_b3\n")
    registry.mark_failed(failed.id, "RuntimeError: No pretrained weights\n\nTraceback (most recent call last): ...")
    at = train_page()
    assert not at.exception, at.exception
    assert texts(at.error) == ["Failed: RuntimeError: No pretrained weights"]
    assert "loading\nerror: no pretrained weights for efficientnet_b3" in texts(at.code)
    assert f"tensorboard --logdir {failed.folder}/tensorboard" in texts(at.code)
    assert at.button(key=f"resume.{failed.id}").label == "Start again from the first epoch"


def test_a_finished_run_shows_the_commands_that_serve_it_and_open_tensorboard(registry):
    finished = registry.create(TrainConfig().to_dict(), "tester")
    registry.mark_running(finished.id, os.getpid(), device="cpu", weights="none")
    registry.mark_finished(finished.id, None, None, {}, {})
    at = train_page()
    assert not at.exception, at.exception
    commands = texts(at.code)
    assert f"python -m training serve {finished.id}" in commands
    assert f"tensorboard --logdir {finished.folder}/tensorboard" in commands


def test_a_finished_run_says_its_score_on_the_datasets_test_part_or_why_it_has_none(registry):
    scored = registry.create(TrainConfig().to_dict(), "tester")
    registry.mark_running(scored.id, os.getpid(), device="cpu", weights="none")
    registry.mark_finished(scored.id, None, None, {"test_part": "scored", "test_rows": 1181,
                                                   "test_mean_macro_f1": 0.6875}, {})
    at = train_page()
    assert ("Mean macro-F1 0.688 on the dataset's fixed test part, 1,181 rows it never trained or "
            "validated on, the same for every run of the dataset.") in [m.value for m in at.markdown]
    off = registry.create(TrainConfig(test_part=False).to_dict(), "tester")
    registry.mark_running(off.id, os.getpid(), device="cpu", weights="none")
    registry.mark_finished(off.id, None, None, {"test_part": "off", "test_rows": 0}, {})
    at = train_page()
    assert "No test part: test_part=false, it trained and validated on every row." in [
        m.value for m in at.markdown]


def test_resume_requeues_a_cancelled_run_in_a_new_process(registry, demo):
    cfg = TrainConfig.from_recipe("default", {"data": str(demo), "image_size": 64, "epochs": 1, "num_workers": 0})
    cancelled = registry.create(cfg.to_dict(), "tester")
    registry.mark_cancelled(cancelled.id)
    last = Path(cancelled.folder, "checkpoints", "last.ckpt")
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 cut short")  # a save that hit a full disk: not a checkpoint
    at = train_page()  # not silently started again from the first epoch: refused, naming the file
    assert f"run {cancelled.id} cannot be resumed: its last checkpoint {last} is cut short" in " ".join(texts(at.error))
    assert not [button for button in at.button if button.key == f"resume.{cancelled.id}"]
    with zipfile.ZipFile(last.with_name("epoch000.ckpt"), "w") as archive:  # the best epoch's, whole
        archive.writestr("epoch000/data.pkl", b"")
    assert train_page().button(key=f"resume.{cancelled.id}").label == \
        "Resume from epoch000.ckpt (last.ckpt cannot be read)"
    with zipfile.ZipFile(last, "w") as archive:  # a whole file, as torch.save writes: only that changes the label
        archive.writestr("last/data.pkl", b"")
    at = train_page()
    button = at.button(key=f"resume.{cancelled.id}")
    assert button.label == "Resume from the last checkpoint"
    button.click().run()
    assert not at.exception, at.exception
    assert f"Resumed run {cancelled.id}." in texts(at.success)
    assert registry.get(cancelled.id).status in ("queued", "running")
    pid = registry.get(cancelled.id).pid  # handed over to the training process
    assert pid != os.getpid() and os.getpgid(pid) == pid  # its own process session
    assert at.button(key=f"cancel.{cancelled.id}")  # the live view now offers Cancel instead
    assert registry.get(cancel_run(cancelled.id, ANN, registry, timeout=30).id).status == "cancelled"


def test_resume_is_refused_while_another_run_is_active(registry):
    cancelled = registry.create(TrainConfig().to_dict(), "tester")
    registry.mark_cancelled(cancelled.id)
    active = registry.create(TrainConfig().to_dict(), "tester")  # queued, owned by this live process
    at = train_page()
    at.selectbox(key="train_run_id").set_value(cancelled.id).run()
    at.button(key=f"resume.{cancelled.id}").click().run()
    assert not at.exception, at.exception
    assert texts(at.error) == [f"run {active.id} is queued; cancel it or wait for it to end before starting another"]
    assert registry.get(cancelled.id).status == "cancelled"


def test_home_lists_the_latest_runs_with_a_link_to_train(registry):
    failed = registry.create(TrainConfig().to_dict(), "tester")
    registry.mark_failed(failed.id, "boom")
    queued = registry.create(TrainConfig().to_dict(), "tester")
    at = AppTest.from_file(HOME, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    lines = [text for text in texts(at.markdown) if text.startswith(":material/")]
    assert lines == [f":material/hourglass_empty: `{queued.id}` **queued** · by tester",
                     f":material/error: `{failed.id}` **failed** · by tester"]
    assert "train" in [link.proto.page for link in at.get("page_link")]


@pytest.mark.slow
def test_start_runs_a_tiny_model_that_ends_finished_with_its_summary(registry, demo):
    at = train_page()
    numbers = {"image_size": 64, "epochs": 1, "batch_size": 16, "max_samples": 60, "num_workers": 0}
    for name, value in numbers.items():
        field(at, "number_input", name).set_value(value)
    field(at, "selectbox", "rare_policy").set_value("keep")  # 48 training rows: "other" leaves one colour
    field(at, "toggle", "corrections").set_value(True)  # none reviewed yet: the same rows, and a snapshot
    at.run()
    at.button(key="train.start").click().run()
    assert not at.exception, at.exception

    [record] = registry.list()
    assert f"Started run {record.id}." in texts(at.success)
    # Every field the form did not touch keeps the recipe's value.
    expected = TrainConfig.from_recipe("default", {**numbers, "rare_policy": "keep", "corrections": True,
                                                   "data": str(demo)})
    assert record.config == expected.to_dict()
    assert at.selectbox(key="train_run_id").value == record.id
    runs = at.dataframe[-1].value
    assert runs["id"].tolist() == [record.id] and runs["status"].iloc[0] in ("queued", "running")

    deadline = time.monotonic() + 240
    while (record := registry.get(record.id)).status in ("queued", "running"):
        assert time.monotonic() < deadline, "the run did not end within 240 s"
        time.sleep(0.5)
    assert record.status == "finished", record.error
    assert (Path(record.folder) / "corrections.json").is_file()

    at.run()
    assert not at.exception, at.exception
    assert any(text.startswith("Finished in ") for text in texts(at.success))
    summary, runs = at.dataframe[0].value, at.dataframe[-1].value
    assert list(summary.index) == list(record.config["heads"])
    assert summary.loc["usage", "macro_f1"] == pytest.approx(record.metrics["heads"]["usage"]["macro_f1"])
    assert runs["status"].tolist() == ["finished"]
    assert len(at.get("plotly_chart")) == 3  # loss, accuracy and macro-F1 curves
    assert f"python -m training serve {record.id}" in texts(at.code)

    # A newer finished run (a copy) is what Evaluate and Review would show first; the buttons open this one.
    twin = registry.create(record.config, "tester")
    shutil.copytree(record.folder, twin.folder, dirs_exist_ok=True)
    registry.mark_running(twin.id, os.getpid(), device="cpu", weights=record.weights)
    registry.mark_finished(twin.id, record.best_metric, record.best_metric_name, record.metrics, record.timings)
    for label, page, key in (("Evaluate this run", "Evaluate", "evaluate.run"),
                             ("Review with this model", "Review", "review.run")):
        at = train_page()
        at.selectbox(key="train_run_id").set_value(record.id).run()
        next(button for button in at.button if button.label == label).click().run()
        assert not at.exception, at.exception
        assert at.title[0].value == page
        assert at.selectbox(key=key).value == record.id
