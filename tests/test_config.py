import json
import os
import re

import pytest

from core.data import HEADS
from core.model.options import Imbalance, Loss
from training.config import (
    FIELD_NAMES,
    RECIPE_SUMMARIES,
    RECIPES,
    SplitStrategy,
    TrainConfig,
    resolve_channels_last,
    resolve_precision,
    resolve_rare_min_count,
    uses_cuda,
)
from training.machine import Gpu, Machine

COMMON = {
    "data": None, "heads": list(HEADS), "max_samples": None, "corrections": False, "val_fraction": 0.2,
    "split": "stratified", "group_similarity": 0.93, "test_part": True, "seed": 0, "pretrained": "auto", "tau": 0.5,
    "focal_gamma": 2.0,
    "label_smoothing": 0.0, "head_weights": [], "ema_decay": None, "tta_flip": False, "accelerator": "auto",
    "devices": "auto",
    "num_nodes": 1, "strategy": "auto", "channels_last": "auto", "num_workers": min(4, os.cpu_count() or 1),
}


def test_default_recipe_is_ours():
    assert TrainConfig.from_recipe("default").to_dict() == {
        **COMMON, "recipe": "default", "rare_policy": "other", "rare_min_count": "auto",
        "backbone": "tf_efficientnet_lite0", "head": "linear", "freeze_backbone": False, "image_size": 224,
        "augment": True, "loss": "ce", "imbalance": "logit_adjusted", "epochs": 10, "batch_size": 32,
        "lr": 1e-3, "weight_decay": 0.05, "scheduler": "cosine", "warmup_fraction": 0.05, "step_size": 7,
        "gamma": 0.1, "grad_clip": None, "monitor": "val/mean_macro_f1", "patience": 5, "precision": "auto",
    }
    assert TrainConfig.from_recipe("default") == TrainConfig()
    assert TrainConfig().monitor_mode == "max"


def test_seed_recipe_is_the_notebook():
    seed = TrainConfig.from_recipe("seed")
    assert seed.to_dict() == {
        **COMMON, "recipe": "seed", "rare_policy": "ignore", "rare_min_count": 500,
        "backbone": "efficientnet_b3", "head": "seed_mlp", "freeze_backbone": True, "image_size": 256,
        "augment": False, "loss": "bce", "imbalance": "none", "epochs": 80, "batch_size": 32,
        "lr": 5e-5, "weight_decay": 0.01, "scheduler": "step", "warmup_fraction": 0.0, "step_size": 7,
        "gamma": 0.1, "grad_clip": 0.5, "monitor": "val/loss", "patience": 15, "precision": "32-true",
    }
    assert seed.monitor_mode == "min"


def test_every_recipe_has_its_one_line_summary():
    assert list(RECIPE_SUMMARIES) == list(RECIPES)
    assert all(summary and "\n" not in summary for summary in RECIPE_SUMMARIES.values())


def test_gpu_recipe_fine_tunes_b3_at_288_px_in_the_precision_auto_picks():
    gpu = TrainConfig.from_recipe("gpu")
    default = TrainConfig()
    assert (gpu.backbone, gpu.image_size, gpu.batch_size, gpu.lr, gpu.epochs, gpu.patience) == (
        "efficientnet_b3", 288, 64, 1.4e-3, 15, 3)
    assert not gpu.freeze_backbone and gpu.head == "linear" and gpu.loss == "ce"
    assert (gpu.precision, gpu.channels_last, gpu.pretrained) == ("auto", "auto", "auto")  # bf16 and NHWC on CUDA
    assert resolve_precision(gpu, AMPERE) == resolve_precision(default, AMPERE) == "bf16-mixed"
    assert 1 <= gpu.num_workers <= 16


def test_recipe_overrides_and_typed_mapping_values():
    cfg = TrainConfig.from_recipe("seed", {"backbone": "tf_efficientnet_lite0", "lr": 1, "heads": ["usage", "gender"]})
    assert (cfg.recipe, cfg.backbone, cfg.image_size) == ("seed", "tf_efficientnet_lite0", 256)
    assert cfg.lr == 1.0 and type(cfg.lr) is float
    assert cfg.heads == ("usage", "gender")
    with pytest.raises(ValueError, match=r"epochs=10\.5: expected int"):
        TrainConfig.from_recipe("default", {"epochs": 10.5})
    with pytest.raises(ValueError, match=r"augment=1: expected bool"):
        TrainConfig.from_recipe("default", {"augment": 1})
    with pytest.raises(ValueError, match=r"lr=True: expected float"):
        TrainConfig(lr=True)


def test_with_overrides_parses_each_field_type():
    cfg = TrainConfig().with_overrides([
        "epochs=3", "lr=5e-5", "augment=false", "freeze_backbone=yes", "max_samples=2000", "grad_clip=none",
        "data=/data/fashion", "heads=gender, usage", "rare_min_count=12", "devices=2", "channels_last=true",
        "precision=bf16-mixed", " patience = 2",
    ])
    assert (cfg.epochs, cfg.lr, cfg.augment, cfg.freeze_backbone, cfg.max_samples, cfg.grad_clip) == (
        3, 5e-5, False, True, 2000, None)
    assert (cfg.data, cfg.heads, cfg.rare_min_count, cfg.devices, cfg.channels_last, cfg.precision, cfg.patience) == (
        "/data/fashion", ("gender", "usage"), 12, 2, True, "bf16-mixed", 2)
    assert type(cfg.lr) is float and type(cfg.epochs) is int
    again = cfg.with_overrides(["rare_min_count=auto", "devices=auto", "channels_last=auto", "max_samples=null"])
    assert (again.rare_min_count, again.devices, again.channels_last,
            again.max_samples) == ("auto", "auto", "auto", None)
    assert cfg.with_overrides([]) == cfg


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("epochs=ten", r"epochs='ten': expected int"),
        ("lr=fast", r"lr='fast': expected float"),
        ("lr=nan", r"lr='nan': expected float"),
        ("augment=maybe", r"augment='maybe': expected bool"),
        ("grad_clip=big", r"grad_clip='big': expected float or None"),
        ("epochs", r"override 'epochs' is not key=value"),
        ("recipe=seed", r"recipe cannot be overridden"),
    ],
)
def test_override_errors_name_key_and_value(assignment, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig().with_overrides([assignment])


def test_unknown_keys_list_the_valid_names():
    valid = "valid: " + ", ".join(FIELD_NAMES)
    with pytest.raises(ValueError, match="unknown config key") as err:
        TrainConfig().with_overrides(["learning_rate=0.1"])
    assert "'learning_rate'" in str(err.value) and str(err.value).endswith(valid)
    with pytest.raises(ValueError, match="'epoch', 'batch'") as err:
        TrainConfig.from_recipe("seed", {"epoch": 3, "batch": 8})
    assert str(err.value).endswith(valid)
    with pytest.raises(ValueError, match=r"unknown recipe 'fast'; valid: default, seed"):
        TrainConfig.from_recipe("fast")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"imbalance": "smote"}, "unknown imbalance 'smote'; valid: none, class_weighted, logit_adjusted, focal"),
        ({"rare_policy": "drop"}, "unknown rare_policy 'drop'; valid: ignore, other, keep"),
        ({"pretrained": "imagenet"}, "unknown pretrained 'imagenet'; valid: hub, offline, auto, none"),
        ({"precision": "fp16"}, "unknown precision 'fp16'; valid: auto, 32-true, bf16-mixed"),
        ({"head": "mlp"}, "unknown head 'mlp'; valid: linear, conditioned, seed_mlp"),
        ({"scheduler": "plateau"}, "unknown scheduler 'plateau'; valid: cosine, step"),
        ({"monitor": "val/acc"}, "unknown monitor 'val/acc'; valid: val/loss, val/mean_macro_f1"),
        ({"image_size": 100}, "image_size must be a multiple of 32 in [64, 1024], got 100"),
        ({"image_size": 32}, "got 32"),
        ({"image_size": 1056}, "got 1056"),
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"lr": 0}, "lr must be > 0, got 0.0"),
        ({"loss": "bce"}, "loss='bce' (the seed's) requires imbalance='none', got imbalance='logit_adjusted'"),
        ({"rare_min_count": "many"}, "rare_min_count must be an int >= 0 or 'auto', got 'many'"),
        ({"heads": ["gender", "colour"]}, "heads must be distinct names from gender, masterCategory"),
        ({"heads": []}, "got []"),
        ({"val_fraction": 1.0}, "val_fraction must be in (0, 1), got 1.0"),
        ({"split": "random"}, "unknown split 'random'; valid: stratified, grouped"),
        ({"group_similarity": 1.5}, "group_similarity must be in (0, 1], got 1.5"),
        ({"devices": 0}, "devices must be an int >= 1 or 'auto', got 0"),
        ({"channels_last": "yes"}, "channels_last must be true, false or 'auto', got 'yes'"),
    ],
)
def test_validation_names_the_bad_value(overrides, message):
    with pytest.raises(ValueError, match="invalid training config") as err:
        TrainConfig.from_recipe("default", overrides)
    assert message in str(err.value)


def test_validation_reports_every_problem_at_once():
    with pytest.raises(ValueError) as err:
        TrainConfig(epochs=0, lr=-1.0, imbalance="smote")
    assert all(part in str(err.value) for part in ("epochs must be >= 1", "lr must be > 0", "unknown imbalance"))


def test_json_round_trip():
    cfg = TrainConfig.from_recipe("seed").with_overrides(["heads=gender,usage", "max_samples=500", "grad_clip=none"])
    text = json.dumps(cfg.to_dict())
    assert json.loads(text)["heads"] == ["gender", "usage"]
    assert TrainConfig.from_dict(json.loads(text)) == cfg


def test_from_file_json_and_toml(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('recipe = "seed"\nepochs = 3\nlr = 1e-4\nheads = ["gender", "usage"]\n')
    cfg = TrainConfig.from_file(toml)
    assert (cfg.recipe, cfg.epochs, cfg.lr, cfg.heads, cfg.backbone) == (
        "seed", 3, 1e-4, ("gender", "usage"), "efficientnet_b3")
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_file(saved) == cfg
    partial = tmp_path / "partial.json"
    partial.write_text('{"max_samples": 100}')
    assert TrainConfig.from_file(partial) == TrainConfig(max_samples=100)


def test_from_file_errors_name_the_file(tmp_path):
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text("epoch = 3\n")
    with pytest.raises(ValueError, match="^" + re.escape(f"{bad_key}: unknown config key(s) 'epoch'")):
        TrainConfig.from_file(bad_key)
    not_a_mapping = tmp_path / "list.json"
    not_a_mapping.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a mapping of config fields, got list"):
        TrainConfig.from_file(not_a_mapping)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="^" + re.escape(f"{broken}: ")):
        TrainConfig.from_file(broken)
    with pytest.raises(ValueError, match=r"must be \.json or \.toml"):
        TrainConfig.from_file(tmp_path / "run.yaml")


@pytest.mark.parametrize(
    ("rows", "threshold"), [(0, 10), (1_200, 10), (35_557, 71), (100_000, 200), (250_000, 500), (10**6, 500)]
)
def test_auto_rare_threshold_scales_with_training_rows(rows, threshold):
    assert resolve_rare_min_count(TrainConfig(), rows) == threshold


def test_fixed_rare_threshold_is_kept():
    assert resolve_rare_min_count(TrainConfig.from_recipe("seed"), 1_200) == 500
    with pytest.raises(ValueError, match="rows must be >= 0, got -1"):
        resolve_rare_min_count(TrainConfig(), -1)


CPU_ONLY = Machine(cpu_threads=2, memory_gib=24)
APPLE = Machine(cpu_threads=8, memory_gib=16, mps=True)
AMPERE, VOLTA = (Machine(cpu_threads=16, memory_gib=128, gpus=(Gpu("H100", 80.0, bf16),)) for bf16 in (True, False))


def test_auto_precision_and_channels_last_follow_the_hardware():
    assert (resolve_precision(TrainConfig(), CPU_ONLY),
            resolve_channels_last(TrainConfig(), CPU_ONLY)) == ("32-true", True)
    assert resolve_channels_last(TrainConfig(), APPLE) is False  # Apple's GPU: NHWC kernels incomplete
    assert resolve_channels_last(TrainConfig(accelerator="cpu"), APPLE) is True
    assert (resolve_precision(TrainConfig(), AMPERE),
            resolve_channels_last(TrainConfig(), AMPERE)) == ("bf16-mixed", True)
    assert resolve_precision(TrainConfig(), VOLTA) == "16-mixed"
    assert uses_cuda(TrainConfig(), AMPERE) and not uses_cuda(TrainConfig(accelerator="cpu"), AMPERE)
    on_cpu = TrainConfig(accelerator="cpu")
    assert (resolve_precision(on_cpu, AMPERE), resolve_channels_last(on_cpu, AMPERE)) == ("32-true", True)
    fixed = TrainConfig(precision="bf16-true", channels_last=False)
    assert (resolve_precision(fixed, CPU_ONLY), resolve_channels_last(fixed, CPU_ONLY)) == ("bf16-true", False)
    assert resolve_precision(TrainConfig.from_recipe("seed"), AMPERE) == "32-true"


def test_the_machine_torch_sees_is_the_one_probed_without_torch():
    """The Train page's hint reads the machine without torch; on this machine it agrees with torch
    (threads aside: a test may have set torch's)."""
    probed, seen = Machine.probe(), Machine.from_torch()
    assert ([gpu.memory_gib for gpu in probed.gpus], probed.mps, probed.memory_gib) == pytest.approx(
        ([gpu.memory_gib for gpu in seen.gpus], seen.mps, seen.memory_gib), rel=0.01)


def test_a_choice_given_as_its_enum_member_is_kept_as_plain_text():
    """A form hands over Choice members; a config keeps plain str (it is pickled into checkpoints)."""
    cfg = TrainConfig(imbalance=Imbalance.FOCAL, loss=Loss.CE, split=SplitStrategy.GROUPED)
    assert [type(value) for value in (cfg.imbalance, cfg.loss, cfg.split)] == [str, str, str]
    assert cfg == TrainConfig(imbalance="focal", split="grouped")


def test_a_config_saved_in_a_run_folder_reads_back_equal(tmp_path):
    cfg = TrainConfig.from_recipe("seed", {"epochs": 3, "heads": ("gender", "usage")})
    cfg.save(tmp_path / "config.json")
    assert TrainConfig.from_file(tmp_path / "config.json") == cfg
    assert [path.name for path in tmp_path.iterdir()] == ["config.json"]  # no temporary file left


def test_head_weights_parse_to_a_map_and_bad_items_are_named():
    cfg = TrainConfig().with_overrides(["head_weights=gender:2,season:1.5"])
    assert cfg.head_weight_map() == {"gender": 2.0, "season": 1.5}
    for bad in ("gender", "nohead:2", "gender:0", "gender:x", "gender:1,gender:2"):
        with pytest.raises(ValueError, match=re.escape(f"head_weights item {bad.split(',')[-1]!r}")):
            TrainConfig().with_overrides([f"head_weights={bad}"])
    with pytest.raises(ValueError, match="head_weights item 'usage:2'"):
        TrainConfig().with_overrides(["heads=gender", "head_weights=usage:2"])
    with pytest.raises(ValueError, match="takes no head_weights and no label_smoothing"):
        TrainConfig.from_recipe("seed").with_overrides(["label_smoothing=0.1"])
    with pytest.raises(ValueError, match="ema_decay must be in"):
        TrainConfig().with_overrides(["ema_decay=1"])


def test_the_probe_reads_nvidia_smi_and_honours_the_visible_devices_and_threads(tmp_path, monkeypatch):
    """The Train page's machine, without torch: from nvidia-smi's listing (a line it cannot read is
    left out, not a crash), the GPUs CUDA_VISIBLE_DEVICES leaves, and OMP_NUM_THREADS."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf 'NVIDIA H100 80GB HBM3, 81559, 9.0\\nWARNING: infoROM is corrupted\\n"
                   "Tesla V100-SXM2-16GB, 16384, 7.0\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    probe = Machine.probe.__func__  # cached per process: read afresh here, and again after the test
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    try:
        probe.cache_clear()
        machine = Machine.probe()
        assert [(gpu.name, round(gpu.memory_gib), gpu.bf16) for gpu in machine.gpus] == [
            ("NVIDIA H100 80GB HBM3", 80, True), ("Tesla V100-SXM2-16GB", 16, False)]
        assert machine.cpu_threads == 3 and uses_cuda(TrainConfig(), machine)
        assert resolve_precision(TrainConfig(), machine) == "bf16-mixed"
        for visible, names in (("1", ["Tesla V100-SXM2-16GB"]), ("", []), ("-1", [])):
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
            probe.cache_clear()
            assert [gpu.name for gpu in Machine.probe().gpus] == names
    finally:
        probe.cache_clear()
