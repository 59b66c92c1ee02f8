"""Image preprocessing from the backbone's own timm data config, one recipe for training and prediction.

Two halves, split where the batch crosses to the device: `eval_transform` / `train_transform` turn
one PIL photo into a uint8 tensor [3, H, W] (geometry only: what DataLoader workers do, a quarter of
the bytes of float to collate, pin and copy); `Normalise` turns a uint8 batch [B, 3, H, W] into
the net's float input, on whatever device the batch is (the GPU, after the transfer). Every path
that feeds a model (training, evaluation, prediction, the server, embeddings) goes through both.

Catalogue photos are portrait (3:4) with the product on white, often edge to edge vertically.
timm's ImageNet eval (resize the shorter side, centre-crop by crop_pct) would cut off the top
and bottom of a dress or a pair of shoes, so both transforms first pad the photo with white to
the model's input shape and keep the whole product in frame; `crop_pct` is deliberately unused.
Size, interpolation, mean and std come from the config.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import timm.data
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from core.images.reading import BACKGROUND, to_rgb

Transform = Callable[[Image.Image], torch.Tensor]  # PIL image -> uint8 [3, H, W]


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
    """PIL image (any mode, any size) -> uint8 tensor (3, H, W), to be normalised by `Normalise`; deterministic.

    RGB (alpha on white), padded with white to the input's aspect, resized to input_size.
    """
    height, width = cfg["input_size"][1:]
    return v2.Compose([
        _Letterbox(width / height),
        v2.Resize((height, width), interpolation=InterpolationMode(cfg["interpolation"])),
        v2.PILToTensor(),
    ])


def train_transform(cfg: dict, scale: tuple[float, float] = (0.7, 1.0)) -> Transform:
    """PIL image -> uint8 tensor (3, H, W), randomly cropped and flipped, to be normalised by `Normalise`.

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
        v2.PILToTensor(),
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


class Normalise:
    """uint8 images [B, 3, H, W] -> the net's input, float32 [B, 3, H, W]: x / 255, minus the data
    config's mean, over its std, per channel, on the images' device.

    The same operations in the same order as torchvision's ToDtype(float32, scale=True) then
    Normalize, so a photo gives the float pipeline's tensor to the bit. The constants are plain
    float32 copies per device, made once (not buffers of a module: a bf16-true run's .to(bfloat16)
    would round them; not made per batch: a copy to the GPU each step would wait for it).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        mean, std = tuple(float(value) for value in mean), tuple(float(value) for value in std)
        if len(mean) != 3 or len(std) != 3 or not all(value > 0 for value in std):
            raise ValueError(f"need 3 means and 3 positive stds (one per RGB channel), got mean={mean}, std={std}")
        self.mean, self.std = mean, std
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_config(cls, cfg: dict) -> "Normalise":
        """The normalisation of a timm data config (`data_config`)."""
        return cls(cfg["mean"], cfg["std"])

    def __call__(self, images: torch.Tensor,
                 memory_format: torch.memory_format = torch.preserve_format) -> torch.Tensor:
        """images: uint8 [B, 3, H, W] -> float32 [B, 3, H, W] in `memory_format` (channels_last for
        an NHWC net: converted in the same copy as the dtype)."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise TypeError(f"Normalise takes uint8 images [B, 3, H, W], got {images.dtype} {list(images.shape)}")
        mean, std = self._on(images.device)
        return images.to(torch.float32, memory_format=memory_format).mul_(1.0 / 255).sub_(mean).div_(std)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._constants:
            self._constants[device] = tuple(
                torch.tensor(values, dtype=torch.float32).view(3, 1, 1).to(device) for values in (self.mean, self.std))
        return self._constants[device]

    def __repr__(self) -> str:
        return f"Normalise(mean={self.mean}, std={self.std})"
