"""What a training run does: `TrainConfig`, its recipes (presets), and the values it resolves at run time.

A config starts from a recipe and takes overrides on top:

    cfg = TrainConfig.from_recipe("seed", {"epochs": 3})
    cfg = cfg.with_overrides(["backbone=tf_efficientnet_lite0", "max_samples=2000"])
    cfg = TrainConfig.from_file("my_run.toml")  # a mapping of fields, may name its `recipe`

Every construction checks types and values (`validate`), so a `TrainConfig` that exists is
valid. It holds plain JSON values only: it travels inside checkpoints and `config.json`.
Fields that depend on the machine or the data ("auto") are resolved by `resolve_precision`,
`resolve_channels_last` and `resolve_rare_min_count` when the run starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
import types
import typing
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from core.choices import Choice
from core.data import HEADS
from core.data.schema import RarePolicy
from core.health.similarity import DEFAULT_THRESHOLD
from core.model.options import HeadType, Imbalance, Loss, Pretrained, Scheduler
from training.machine import Machine

AUTO = "auto"
# What early stopping and checkpointing watch, and which way is better.
MONITORS = {"val/loss": "min", "val/mean_macro_f1": "max"}


class SplitStrategy(Choice):
    """How rows are split into training and validation."""

    STRATIFIED = "stratified"  # core.data.split.split_catalogue
    GROUPED = "grouped"  # the same with each near-duplicate group on one side (split_catalogue_grouped)


class Accelerator(Choice):
    """Lightning's accelerator."""

    AUTO = AUTO
    CPU = "cpu"
    GPU = "gpu"


class Precision(Choice):
    """Lightning's precision; "auto": resolve_precision."""

    AUTO = AUTO
    FP32 = "32-true"
    BF16_MIXED = "bf16-mixed"
    FP16_MIXED = "16-mixed"
    BF16 = "bf16-true"
    FP16 = "16-true"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run's settings. The defaults are the `default` recipe; see RECIPES for `seed` and `gpu`."""

    recipe: str = "default"  # the preset this config started from (from_recipe sets it)
    # --- data
    data: str | None = None  # dataset folder (styles.csv + images/); None = FASHION_TAGGER_DATA, else the demo
    heads: tuple[str, ...] = HEADS  # label heads to learn, a subset of core.data.HEADS
    max_samples: int | None = None  # cap on training and validation rows, for quick runs; None = every row
    # leave the dataset's fixed test part (core.data.split.in_test_part, ~10 % of rows by product id) out of training
    # and validation, and score the best checkpoint on it: every run of a dataset on the same rows (training.rows)
    test_part: bool = True
    # train on the reviewed labels (label store): corrections applied, "not a product" rows dropped, reviewed new photos
    # added to training
    corrections: bool = False
    val_fraction: float = 0.2  # share of rows held out for validation (stratified split)
    split: str = "stratified"  # a SplitStrategy: "grouped" keeps each group of near-duplicate photos on one side
    # split="grouped": photos at least this similar (cosine, pretrained backbone) are one group
    group_similarity: float = DEFAULT_THRESHOLD
    seed: int = 0  # seeds the split, the new layers' initial weights and the data order
    rare_policy: str = "other"  # what becomes of rare classes: a core.data.schema.RarePolicy
    rare_min_count: int | str = AUTO  # classes with fewer training rows are rare; "auto": resolve_rare_min_count
    # --- model
    backbone: str = "tf_efficientnet_lite0"  # timm model name
    pretrained: str = AUTO  # where the backbone's weights come from: a core.model.options.Pretrained
    # "linear": a Linear per head (MultiHeadNet); "conditioned": child heads also read their parent's probabilities
    # (ConditionedNet); "seed_mlp": the seed's shared MLP (SeedNet)
    head: str = "linear"
    freeze_backbone: bool = False  # train the head(s) only
    image_size: int = 224  # side of the square model input, pixels
    augment: bool = True  # random resized crop (mild scale) and horizontal flip; never colour jitter
    # --- loss
    loss: str = "ce"  # "ce": per-head cross-entropy under `imbalance`; "bce": the seed's masked BCE
    imbalance: str = "logit_adjusted"  # a core.model.options.Imbalance (core.model.losses)
    tau: float = 0.5  # logit adjustment strength (imbalance="logit_adjusted"); 0.5 measured best (RESULTS.md, issue 17)
    focal_gamma: float = 2.0  # focusing exponent (imbalance="focal")
    label_smoothing: float = 0.0  # share of each target spread evenly over the head's classes (loss="ce")
    # "head:weight" loss multipliers (loss="ce"), e.g. gender:2,season:2; other heads weigh 1
    head_weights: tuple[str, ...] = ()
    # --- optimisation (AdamW)
    epochs: int = 10  # most epochs; early stopping may end sooner
    batch_size: int = 32  # images per step, per device (more steps on small data; raise it on a big GPU)
    # peak learning rate (measured: 3e-4 left baseColour at 0.68 after 3 demo epochs, 1e-3 reached 0.99)
    lr: float = 1e-3
    weight_decay: float = 0.05  # AdamW decoupled weight decay
    scheduler: str = "cosine"  # "cosine": linear warmup then cosine to 0, per step; "step": StepLR per epoch
    warmup_fraction: float = 0.05  # share of all steps spent warming up (cosine)
    step_size: int = 7  # epochs between learning-rate drops (step)
    gamma: float = 0.1  # learning-rate factor at each drop (step)
    grad_clip: float | None = None  # gradient norm clip; None = no clipping
    # keep a moving average of the weights (timm ModelEmaV3) to validate and predict with; None = off
    ema_decay: float | None = None
    # evaluate and predict on each photo and its mirror image, logits averaged (2x the inference cost)
    tta_flip: bool = False
    # --- early stopping and best checkpoint
    monitor: str = "val/mean_macro_f1"  # the metric watched: one of MONITORS
    patience: int = 5  # epochs without improvement of `monitor` before stopping
    # --- hardware (Lightning Trainer)
    accelerator: str = AUTO  # an Accelerator
    devices: int | str = AUTO  # devices per node, or "auto"
    num_nodes: int = 1  # machines
    strategy: str = AUTO  # Lightning strategy name ("auto", "ddp", ...)
    precision: str = AUTO  # a Precision; "auto": resolve_precision
    channels_last: bool | str = AUTO  # NHWC memory format; "auto": on, except on Apple's MPS
    # DataLoader worker processes (default: 4, at most the cores); 0 = main process
    num_workers: int = min(4, os.cpu_count() or 1)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, _typed(field.name, getattr(self, field.name)))
        self.validate()

    @property
    def monitor_mode(self) -> str:
        """Which way `monitor` improves: "min" or "max"."""
        return MONITORS[self.monitor]

    def validate(self) -> None:
        """Raise ValueError naming every bad value (types are checked at construction)."""
        problems = [
            _choice("recipe", self.recipe, RECIPES),
            _choice("split", self.split, SplitStrategy),
            _choice("rare_policy", self.rare_policy, RarePolicy),
            _choice("pretrained", self.pretrained, Pretrained),
            _choice("head", self.head, HeadType),
            _choice("loss", self.loss, Loss),
            _choice("imbalance", self.imbalance, Imbalance),
            _choice("scheduler", self.scheduler, Scheduler),
            _choice("monitor", self.monitor, MONITORS),
            _choice("accelerator", self.accelerator, Accelerator),
            _choice("precision", self.precision, Precision),
        ]
        unknown_heads = [head for head in self.heads if head not in HEADS]
        checks = [
            (bool(self.heads) and not unknown_heads and len(set(self.heads)) == len(self.heads),
             f"heads must be distinct names from {', '.join(HEADS)}, got {list(self.heads)}"),
            (self.max_samples is None or self.max_samples >= 1,
             f"max_samples must be >= 1 or None, got {self.max_samples}"),
            (0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}"),
            (0 <= self.seed < 2**32, f"seed must be in [0, 2**32), got {self.seed}"),
            (0 < self.group_similarity <= 1, f"group_similarity must be in (0, 1], got {self.group_similarity}"),
            (self.rare_min_count == AUTO if isinstance(self.rare_min_count, str) else self.rare_min_count >= 0,
             f"rare_min_count must be an int >= 0 or 'auto', got {self.rare_min_count!r}"),
            (self.image_size % 32 == 0 and 64 <= self.image_size <= 1024,
             f"image_size must be a multiple of 32 in [64, 1024], got {self.image_size}"),
            (self.loss != "bce" or self.imbalance == "none",
             f"loss='bce' (the seed's) requires imbalance='none', got imbalance={self.imbalance!r}"),
            (self.tau >= 0, f"tau must be >= 0, got {self.tau}"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.loss != "bce" or (not self.head_weights and not self.label_smoothing),
             "loss='bce' (the seed's) takes no head_weights and no label_smoothing"),
            (self.ema_decay is None or 0 < self.ema_decay < 1,
             f"ema_decay must be in (0, 1) or None, got {self.ema_decay}"),
            (self.focal_gamma >= 0, f"focal_gamma must be >= 0, got {self.focal_gamma}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.warmup_fraction < 1, f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}"),
            (self.step_size >= 1, f"step_size must be >= 1, got {self.step_size}"),
            (0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0 or None, got {self.grad_clip}"),
            (self.patience >= 0, f"patience must be >= 0, got {self.patience}"),
            (self.devices == AUTO if isinstance(self.devices, str) else self.devices >= 1,
             f"devices must be an int >= 1 or 'auto', got {self.devices!r}"),
            (self.num_nodes >= 1, f"num_nodes must be >= 1, got {self.num_nodes}"),
            (bool(self.strategy), f"strategy must be a Lightning strategy name, got {self.strategy!r}"),
            (self.channels_last in (True, False, AUTO),
             f"channels_last must be true, false or 'auto', got {self.channels_last!r}"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
        ]
        problems = ([problem for problem in problems if problem] + [message for ok, message in checks if not ok]
                    + _head_weight_problems(self.head_weights, self.heads))
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    @classmethod
    def from_recipe(cls, name: str, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
        """The recipe's preset, then `overrides` (field -> typed value) on top."""
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; valid: {', '.join(RECIPES)}")
        overrides = dict(overrides or {})
        _check_keys(overrides)
        if overrides.get("recipe", name) != name:
            raise ValueError(f"overrides name recipe {overrides['recipe']!r} but the preset is {name!r}")
        return cls(**{**RECIPES[name], **overrides, "recipe": name})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """A config from a mapping of fields (as `to_dict` or a config file gives): its `recipe`
        (default "default"), then the other fields on top."""
        values = dict(values)
        return cls.from_recipe(values.pop("recipe", "default"), values)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """A config from a .json or .toml file holding a mapping of fields (see `from_dict`)."""
        path = Path(path)
        if path.suffix not in (".json", ".toml"):
            raise ValueError(f"config file {path} must be .json or .toml")
        text = path.read_text(encoding="utf-8")
        try:
            values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
            if not isinstance(values, dict):
                raise ValueError(f"expected a mapping of config fields, got {type(values).__name__}")
            return cls.from_dict(values)
        except ValueError as err:  # JSON and TOML syntax errors are ValueErrors too
            raise ValueError(f"{path}: {err}") from err

    def save(self, path: str | Path) -> None:
        """Write the config as a .json file `from_file` reads back (a run folder's config.json), atomically."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # DDP ranks on several hosts write it too
        temporary.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        os.replace(temporary, path)

    def with_overrides(self, assignments: Iterable[str]) -> TrainConfig:
        """A copy with `key=value` assignments applied, each value parsed to its field's type.

        Values: int, float, bool (true/false/yes/no/on/off/1/0), None (none/null), str, and
        comma-separated lists for tuple fields (heads=gender,usage). The recipe cannot change:
        start from `from_recipe` instead.
        """
        changes = {}
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"override {assignment!r} is not key=value")
            _check_keys([key])
            if key == "recipe":
                raise ValueError(f"recipe cannot be overridden ({assignment!r}); use TrainConfig.from_recipe({text!r})")
            changes[key] = _parse(key, text)
        return dataclasses.replace(self, **changes)

    def head_weight_map(self) -> dict[str, float]:
        """head_weights as head -> weight (heads not named are absent: they weigh 1)."""
        return {head: float(weight) for head, _, weight in (item.partition(":") for item in self.head_weights)}

    def to_dict(self) -> dict[str, Any]:
        """Every field, as JSON values (tuples become lists)."""
        values = dataclasses.asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


RECIPES: dict[str, dict[str, Any]] = {
    "default": {},  # the dataclass defaults
    # The seed notebook (DESIGN.md, "The seed"). Its batch size is not recorded; 32 fits a T4.
    "seed": {
        "backbone": "efficientnet_b3",  # ImageNet weights come from the hub only
        "head": "seed_mlp",  # Linear(->1024)-ReLU-Dropout(0.5)-Linear over the concatenated one-hots
        "freeze_backbone": True,
        "loss": "bce",  # masked on ignored labels
        "imbalance": "none",
        "image_size": 256,
        "augment": False,
        "lr": 5e-5,
        "weight_decay": 0.01,
        "scheduler": "step",
        "warmup_fraction": 0.0,
        "step_size": 7,
        "gamma": 0.1,
        "grad_clip": 0.5,
        "precision": "32-true",
        "monitor": "val/loss",
        "patience": 15,
        "epochs": 80,
        "batch_size": 32,
        "rare_policy": "ignore",
        "rare_min_count": 500,
        "val_fraction": 0.2,
    },
    # One GPU with hub access: the seed's backbone fine-tuned whole, at about its native input, in bf16-mixed
    # and channels_last ("auto" gives both on a CUDA GPU). Batch 64 fits B3 at 288 px in 16 GB;
    # lr by square-root scaling from the default's 1e-3 at batch 32. Not yet tuned on a GPU.
    "gpu": {
        "backbone": "efficientnet_b3",
        "image_size": 288,  # B3 was trained at 300; the config takes multiples of 32 (its strides)
        "batch_size": 64,
        "lr": 1.4e-3,
        "epochs": 15,
        "patience": 3,
        # the DataLoader fed lite0 too slowly with 12 (RESULTS.md)
        "num_workers": max(1, min(16, (os.cpu_count() or 2) - 1)),
    },
}

# One line per recipe with what it measured (tests/benchmarks/RESULTS.md, issue 17), as the Train
# page shows it. "Test part": sample_parts.py's untouched 1,181 rows.
RECIPE_SUMMARIES: dict[str, str] = {
    "default": "Ours: lite0 fine-tuned at 224 px for up to 10 epochs, loss logit-adjusted at half strength, for a CPU "
               "or any GPU. On the real sample's test part after only 3 epochs at 128 px (2 CPU cores, 18-27 min), "
               "two seeds: mean macro-F1 0.677 and 0.692, gender 0.89, articleType 0.85-0.87, season 0.72-0.74 "
               "accuracy; 27-33 % of tags accepted at 2 % error.",
    "seed": "The seed notebook, kept to compare against: frozen EfficientNet-B3 (hub weights), MLP head, masked BCE, "
            "classes under 500 rows ignored. Same test and budget (lite0 in place of B3, offline): mean macro-F1 "
            "0.573 over its own few classes; it names no class under 500 rows.",
    "gpu": "For one GPU with hub access: EfficientNet-B3 fine-tuned at 288 px in bf16, batch 64, up to 15 epochs. "
           "Not yet measured on a GPU.",
}

FIELD_NAMES = tuple(field.name for field in dataclasses.fields(TrainConfig))
_FIELD_TYPES = typing.get_type_hints(TrainConfig)
_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def resolve_rare_min_count(cfg: TrainConfig, rows: int) -> int:
    """The rare-class threshold for `rows` training rows.

    An int in the config is used as is. "auto" scales with the data: 0.2% of the rows, at least
    10 (a class needs a few examples per validation fold to be measured) and at most 500 (the
    seed's threshold, on 44k rows): min(500, max(10, round(0.002 * rows))).
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if cfg.rare_min_count != AUTO:
        return cfg.rare_min_count
    return min(500, max(10, round(0.002 * rows)))


def uses_cuda(cfg: TrainConfig, machine: Machine) -> bool:
    """Whether the run will use a CUDA GPU: its accelerator allows one and `machine` has one."""
    return cfg.accelerator in (AUTO, Accelerator.GPU) and bool(machine.gpus)


def resolve_precision(cfg: TrainConfig, machine: Machine) -> str:
    """The Lightning precision: as configured, or for "auto" bf16-mixed on a CUDA GPU that
    supports bf16, 16-mixed on an older one, 32-true elsewhere (CPU)."""
    if cfg.precision != AUTO:
        return cfg.precision
    if not uses_cuda(cfg, machine):
        return Precision.FP32.value
    return (Precision.BF16_MIXED if machine.gpus[0].bf16 else Precision.FP16_MIXED).value


def resolve_channels_last(cfg: TrainConfig, machine: Machine) -> bool:
    """Whether to train in channels_last memory format: as configured, or for "auto" everywhere but
    on Apple's MPS, whose NHWC kernels are incomplete. It speeds up convolutions on tensor cores, and
    on the CPU these depthwise-convolution nets train 1.4-1.6x faster in it (RESULTS.md, issue 17)."""
    if cfg.channels_last != AUTO:
        return cfg.channels_last
    # Lightning's "auto" and "gpu" take Apple's GPU where there is no CUDA one.
    return not (cfg.accelerator in (AUTO, Accelerator.GPU) and not machine.gpus and machine.mps)


def _head_weight_problems(items: Iterable[str], heads: Iterable[str]) -> list[str]:
    """A message per head_weights item that is not "head:weight" with a learned head and a weight > 0."""
    heads, problems, seen = list(heads), [], set()
    for item in items:
        head, sep, text = item.partition(":")
        try:
            weight = float(text)
        except ValueError:
            weight = math.nan
        if not sep or head not in heads or head in seen or not (math.isfinite(weight) and weight > 0):
            problems.append(f"head_weights item {item!r} must be head:weight with one of the learned heads "
                            f"({', '.join(heads)}), each once, and a weight > 0")
        seen.add(head)
    return problems


def _check_keys(keys: Iterable[str]) -> None:
    unknown = [key for key in keys if key not in FIELD_NAMES]
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(map(repr, unknown))}; valid: {', '.join(FIELD_NAMES)}")


def _choice(name: str, value: str, valid: Iterable[str]) -> str | None:
    """A message when `value` is not one of `valid`, else None."""
    valid = list(valid)
    return None if value in valid else f"unknown {name} {value!r}; valid: {', '.join(valid)}"


def _allowed_types(name: str) -> tuple[type, ...]:
    """The types field `name` takes: `int | str` -> (int, str); `tuple[str, ...]` -> (tuple,)."""
    hint = _FIELD_TYPES[name]
    members = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return tuple(typing.get_origin(member) or member for member in members)


def _describe(allowed: tuple[type, ...]) -> str:
    names = {type(None): "None", tuple: "a list of names"}
    return " or ".join(names.get(kind, kind.__name__) for kind in allowed)


def _typed(name: str, value: Any) -> Any:
    """`value` as field `name`'s type (int -> float, list -> tuple), or ValueError naming both."""
    allowed = _allowed_types(name)
    if value is None and type(None) in allowed:
        return None
    if isinstance(value, bool):  # before int: bool is an int subclass
        if bool in allowed:
            return value
    elif isinstance(value, int) and int in allowed:
        return value
    elif isinstance(value, (int, float)) and float in allowed and math.isfinite(value):
        return float(value)
    elif isinstance(value, str) and str in allowed:
        return str(value)  # a Choice member as its plain value: configs travel in checkpoints
    elif isinstance(value, (list, tuple)) and tuple in allowed and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError(f"{name}={value!r}: expected {_describe(allowed)}")


def _parse(name: str, text: str) -> Any:
    """Command-line text as field `name`'s type, or ValueError naming both."""
    allowed = _allowed_types(name)
    word = text.strip()
    if type(None) in allowed and word.lower() in ("none", "null"):
        return None
    if bool in allowed and word.lower() in _BOOLEANS:
        return _BOOLEANS[word.lower()]
    for number in (int, float):
        if number in allowed:
            try:
                return _typed(name, number(word))
            except ValueError:
                pass
    if tuple in allowed:
        return tuple(part.strip() for part in word.split(",") if part.strip())
    if str in allowed:
        return word
    raise ValueError(f"{name}={text!r}: expected {_describe(allowed)}")
