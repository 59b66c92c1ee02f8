"""Image preprocessing from the backbone's own timm data config, one recipe for training and prediction.

Catalogue photos are portrait (3:4) with the product on white, often edge to edge vertically.
timm's ImageNet eval (resize the shorter side, centre-crop by crop_pct) would cut off the top
and bottom of a dress or a pair of shoes, so both transforms first pad the photo with white to
the model's input shape and keep the whole product in frame; `crop_pct` is deliberately unused.
Size, interpolation, mean and std come from the config.
"""

from __future__ import annotations

from typing import Callable

import timm.data
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from core.images import BACKGROUND, to_rgb

Transform = Callable[[Image.Image], torch.Tensor]


def data_config(model: nn.Module, image_size: int | None = None) -> dict:
    """The model's timm data config (input_size, interpolation, mean, std, crop_pct, crop_mode).

    With `image_size`, input_size becomes (channels, image_size, image_size).
    """
    cfg = timm.data.resolve_data_config(model=model)
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}.")
        cfg["input_size"] = (cfg["input_size"][0], image_size, image_size)
    return cfg


def eval_transform(cfg: dict) -> Transform:
    """PIL image (any mode, any size) -> float tensor (3, H, W), normalised; deterministic.

    RGB (alpha on white), padded with white to the input's aspect, resized to input_size.
    """
    height, width = cfg["input_size"][1:]
    return v2.Compose([
        _Letterbox(width / height),
        v2.Resize((height, width), interpolation=InterpolationMode(cfg["interpolation"])),
        *_to_normalised_tensor(cfg),
    ])


def train_transform(cfg: dict, scale: tuple[float, float] = (0.7, 1.0)) -> Transform:
    """PIL image -> float tensor (3, H, W), normalised, randomly cropped and flipped.

    The same letterbox as `eval_transform`, then a RandomResizedCrop keeping `scale` of the
    area and a horizontal flip. No colour, hue or brightness jitter: colour is a label.
    """
    height, width = cfg["input_size"][1:]
    return v2.Compose([
        _Letterbox(width / height),
        v2.RandomResizedCrop(
            (height, width), scale=scale, interpolation=InterpolationMode(cfg["interpolation"])
        ),
        v2.RandomHorizontalFlip(),
        *_to_normalised_tensor(cfg),
    ])


class _Letterbox:
    """PIL image -> RGB PIL image padded with white (centred) to `aspect` = width / height."""

    def __init__(self, aspect: float):
        self.aspect = aspect

    def __call__(self, image: Image.Image) -> Image.Image:
        image = to_rgb(image)
        width = max(image.width, round(image.height * self.aspect))
        height = max(image.height, round(image.width / self.aspect))
        if (width, height) == image.size:
            return image
        canvas = Image.new("RGB", (width, height), BACKGROUND)
        canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
        return canvas

    def __repr__(self) -> str:
        return f"Letterbox(aspect={self.aspect:.3g}, fill={BACKGROUND})"


def _to_normalised_tensor(cfg: dict) -> list[nn.Module]:
    return [
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(cfg["mean"]), std=list(cfg["std"])),
    ]
