import numpy as np
import pytest
import timm
import torch
from PIL import Image

from core.transforms import data_config, eval_transform, train_transform

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# A config like resnet18's, small so the tests stay fast.
CFG = {"input_size": (3, 64, 64), "interpolation": "bicubic", "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "crop_pct": 0.875}


def normalised(rgb: tuple[int, int, int], cfg: dict = CFG) -> torch.Tensor:
    """What a pixel of this colour becomes, per channel, shape (3,)."""
    return (torch.tensor(rgb) / 255 - torch.tensor(cfg["mean"])) / torch.tensor(cfg["std"])


def channel_means(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(1, 2))


@pytest.fixture(scope="module")
def lite0_cfg() -> dict:
    return data_config(timm.create_model("tf_efficientnet_lite0"))


def test_data_config_comes_from_the_backbone(lite0_cfg):
    assert lite0_cfg["input_size"] == (3, 224, 224)
    assert lite0_cfg["mean"] == lite0_cfg["std"] == (0.5, 0.5, 0.5)  # TF ports, unlike ImageNet's
    assert lite0_cfg["interpolation"] == "bicubic"
    resnet_cfg = data_config(timm.create_model("resnet18"), image_size=160)
    assert resnet_cfg["input_size"] == (3, 160, 160)
    assert resnet_cfg["mean"] == IMAGENET_MEAN and resnet_cfg["std"] == IMAGENET_STD


@pytest.mark.parametrize("bad", [0, -5, 22.5, "224", True])
def test_data_config_rejects_a_bad_image_size(bad):
    with pytest.raises(ValueError, match=repr(bad).replace(".", r"\.")):
        data_config(timm.create_model("resnet18"), image_size=bad)


def test_eval_gives_the_configured_shape_and_normalisation(lite0_cfg):
    portrait = Image.new("RGB", (300, 400), (255, 255, 255))
    x = eval_transform(lite0_cfg)(portrait)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x, torch.ones_like(x))  # white, mean 0.5 std 0.5
    assert eval_transform(data_config(timm.create_model("tf_efficientnet_lite0"), 256))(portrait).shape == (3, 256, 256)
    red = eval_transform(CFG)(Image.new("RGB", (80, 80), (255, 0, 0)))
    assert torch.allclose(channel_means(red), normalised((255, 0, 0)), atol=1e-5)


def product_photo() -> Image.Image:
    """Portrait 3:4 on white, the product touching the top and bottom edges (black bands)."""
    pixels = np.full((400, 300, 3), 255, dtype=np.uint8)
    pixels[:40] = pixels[-40:] = 0
    return Image.fromarray(pixels)


def test_eval_keeps_the_whole_product_in_frame():
    x = eval_transform(CFG)(product_photo())
    black, white = normalised((0, 0, 0)), normalised((255, 255, 255))
    # 400 px of height -> 64 px: the bands are 6.4 px tall; a centre crop would have cut them off.
    assert torch.allclose(x[:, :5, 16:48].mean(dim=(1, 2)), black, atol=0.05)
    assert torch.allclose(x[:, -5:, 16:48].mean(dim=(1, 2)), black, atol=0.05)
    # The 3:4 photo is padded with white to square: 50 of 400 px each side -> 8 of 64 px.
    assert torch.allclose(x[:, :, :7].mean(dim=(1, 2)), white, atol=1e-4)
    assert torch.allclose(x[:, :, -7:].mean(dim=(1, 2)), white, atol=1e-4)


def test_non_square_input_is_padded_to_its_aspect():
    cfg = {**CFG, "input_size": (3, 64, 48)}
    x = eval_transform(cfg)(product_photo())
    assert x.shape == (3, 64, 48)
    # Same 3:4 aspect, so no white padding: the top band reaches the left and right edges.
    black = normalised((0, 0, 0))
    assert torch.allclose(channel_means(x[:, :5, :3]), black, atol=0.05)
    assert torch.allclose(channel_means(x[:, :5, -3:]), black, atol=0.05)


def test_transparent_png_becomes_white(tmp_path):
    path = tmp_path / "cutout.png"
    pixels = np.zeros((40, 40, 4), dtype=np.uint8)  # black, fully transparent
    pixels[:20, :, 3] = 128  # top half: half-transparent black over white -> grey 127
    Image.fromarray(pixels, "RGBA").save(path)
    with Image.open(path) as image:
        assert image.mode == "RGBA"
        x = eval_transform(CFG)(image)
    assert torch.allclose(channel_means(x[:, 40:]), normalised((255, 255, 255)), atol=1e-4)
    assert torch.allclose(channel_means(x[:, :24]), normalised((127, 127, 127)), atol=0.02)


def test_palette_with_transparency_becomes_white(tmp_path):
    path = tmp_path / "palette.png"
    image = Image.new("P", (32, 32), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.save(path, transparency=0)
    with Image.open(path) as image:
        assert image.mode == "P"
        x = eval_transform(CFG)(image)
    assert torch.allclose(x, normalised((255, 255, 255))[:, None, None].expand_as(x), atol=1e-4)


@pytest.mark.parametrize("mode, colour, rgb", [
    ("CMYK", (255, 0, 0, 0), (0, 255, 255)),  # cyan
    ("L", 128, (128, 128, 128)),
    ("LA", (0, 255), (0, 0, 0)),  # opaque black
])
def test_other_modes_become_rgb(mode, colour, rgb):
    x = eval_transform(CFG)(Image.new(mode, (50, 50), colour))
    assert x.shape == (3, 64, 64)
    assert torch.allclose(channel_means(x), normalised(rgb), atol=1e-4)


def test_train_transform_keeps_flat_colours():
    torch.manual_seed(0)
    colour = (200, 30, 60)
    transform = train_transform(CFG)
    for _ in range(10):
        x = transform(Image.new("RGB", (90, 90), colour))
        assert x.shape == (3, 64, 64)
        assert torch.allclose(channel_means(x), normalised(colour), atol=1e-3)
        assert float(x.std(dim=(1, 2)).max()) < 1e-3


def test_train_transform_is_random_and_flips(lite0_cfg):
    torch.manual_seed(0)
    arrow = np.full((40, 40, 3), 255, dtype=np.uint8)
    arrow[:, :10] = 0  # black on the left only
    transform = train_transform(CFG)
    left_dark = [bool(channel_means(transform(Image.fromarray(arrow))[:, :, :8])[0] < 0) for _ in range(30)]
    assert any(left_dark) and not all(left_dark)
    assert train_transform(lite0_cfg)(product_photo()).shape == (3, 224, 224)


def test_train_at_full_scale_matches_eval_geometry():
    # scale (1, 1) crops the whole letterboxed square; a left-right symmetric photo hides the flip.
    train = train_transform(CFG, scale=(1.0, 1.0))(product_photo())
    assert torch.allclose(train, eval_transform(CFG)(product_photo()), atol=1e-5)
