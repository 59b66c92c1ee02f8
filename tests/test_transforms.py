import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torchvision import transforms as v1
from torchvision.transforms import v2

from core.images.transforms import Normalise, data_config, eval_transform, train_transform

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# A config like resnet18's, small so the tests stay fast.
CFG = {"input_size": (3, 64, 64), "interpolation": "bicubic", "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
       "crop_pct": 0.875}


def pixel(rgb: tuple[int, int, int]) -> torch.Tensor:
    """A pixel of this colour as the transforms give it, per channel, float (3,)."""
    return torch.tensor(rgb, dtype=torch.float32)


def channel_means(x: torch.Tensor) -> torch.Tensor:
    return x.float().mean(dim=(1, 2))


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


def test_eval_gives_uint8_pixels_at_the_configured_shape(lite0_cfg):
    portrait = Image.new("RGB", (300, 400), (255, 255, 255))
    x = eval_transform(lite0_cfg)(portrait)
    assert x.shape == (3, 224, 224) and x.dtype == torch.uint8
    assert bool((x == 255).all())  # white; normalising is Normalise's business
    assert eval_transform(data_config(timm.create_model("tf_efficientnet_lite0"), 256))(portrait).shape == (3, 256, 256)
    red = eval_transform(CFG)(Image.new("RGB", (80, 80), (255, 0, 0)))
    assert torch.equal(channel_means(red), pixel((255, 0, 0)))


def product_photo() -> Image.Image:
    """Portrait 3:4 on white, the product touching the top and bottom edges (black bands)."""
    pixels = np.full((400, 300, 3), 255, dtype=np.uint8)
    pixels[:40] = pixels[-40:] = 0
    return Image.fromarray(pixels)


def test_eval_keeps_the_whole_product_in_frame():
    x = eval_transform(CFG)(product_photo())
    black, white = pixel((0, 0, 0)), pixel((255, 255, 255))
    # 400 px of height -> 64 px: the bands are 6.4 px tall; a centre crop would have cut them off.
    assert torch.allclose(channel_means(x[:, :5, 16:48]), black, atol=3)
    assert torch.allclose(channel_means(x[:, -5:, 16:48]), black, atol=3)
    # The 3:4 photo is padded with white to square: 50 of 400 px each side -> 8 of 64 px.
    assert torch.equal(channel_means(x[:, :, :7]), white)
    assert torch.equal(channel_means(x[:, :, -7:]), white)


def test_non_square_input_is_padded_to_its_aspect():
    cfg = {**CFG, "input_size": (3, 64, 48)}
    x = eval_transform(cfg)(product_photo())
    assert x.shape == (3, 64, 48)
    # Same 3:4 aspect, so no white padding: the top band reaches the left and right edges.
    black = pixel((0, 0, 0))
    assert torch.allclose(channel_means(x[:, :5, :3]), black, atol=3)
    assert torch.allclose(channel_means(x[:, :5, -3:]), black, atol=3)


def test_transparent_png_becomes_white(tmp_path):
    path = tmp_path / "cutout.png"
    pixels = np.zeros((40, 40, 4), dtype=np.uint8)  # black, fully transparent
    pixels[:20, :, 3] = 128  # top half: half-transparent black over white -> grey 127
    Image.fromarray(pixels, "RGBA").save(path)
    with Image.open(path) as image:
        assert image.mode == "RGBA"
        x = eval_transform(CFG)(image)
    assert torch.equal(channel_means(x[:, 40:]), pixel((255, 255, 255)))
    assert torch.allclose(channel_means(x[:, :24]), pixel((127, 127, 127)), atol=1)


def test_palette_with_transparency_becomes_white(tmp_path):
    path = tmp_path / "palette.png"
    image = Image.new("P", (32, 32), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.save(path, transparency=0)
    with Image.open(path) as image:
        assert image.mode == "P"
        x = eval_transform(CFG)(image)
    assert bool((x == 255).all())


@pytest.mark.parametrize("mode, colour, rgb", [
    ("CMYK", (255, 0, 0, 0), (0, 255, 255)),  # cyan
    ("L", 128, (128, 128, 128)),
    ("LA", (0, 255), (0, 0, 0)),  # opaque black
])
def test_other_modes_become_rgb(mode, colour, rgb):
    x = eval_transform(CFG)(Image.new(mode, (50, 50), colour))
    assert x.shape == (3, 64, 64)
    assert torch.equal(channel_means(x), pixel(rgb))


def test_train_transform_keeps_flat_colours():
    torch.manual_seed(0)
    colour = (200, 30, 60)
    transform = train_transform(CFG)
    for _ in range(10):
        x = transform(Image.new("RGB", (90, 90), colour))
        assert x.shape == (3, 64, 64) and x.dtype == torch.uint8
        assert torch.equal(channel_means(x), pixel(colour))
        assert float(x.float().std(dim=(1, 2)).max()) == 0


def test_train_transform_is_random_and_flips(lite0_cfg):
    torch.manual_seed(0)
    arrow = np.full((40, 40, 3), 255, dtype=np.uint8)
    arrow[:, :10] = 0  # black on the left only
    transform = train_transform(CFG)
    left_dark = [bool(channel_means(transform(Image.fromarray(arrow))[:, :, :8])[0] < 128) for _ in range(30)]
    assert any(left_dark) and not all(left_dark)
    assert train_transform(lite0_cfg)(product_photo()).shape == (3, 224, 224)


def test_train_at_full_scale_matches_eval_geometry():
    # scale (1, 1) crops the whole letterboxed square; a left-right symmetric photo hides the flip.
    train = train_transform(CFG, scale=(1.0, 1.0))(product_photo())
    assert torch.equal(train, eval_transform(CFG)(product_photo()))


def reference_float(cfg: dict, image: Image.Image) -> torch.Tensor:
    """The float pipeline the workers ran before batches became uint8, computed independently:
    the same geometry, then torchvision's classic ToTensor (x / 255) and Normalize."""
    geometry = v1.Compose([eval_transform(cfg), v1.ToPILImage()])  # uint8 -> PIL is lossless
    return v1.Normalize(cfg["mean"], cfg["std"])(v1.ToTensor()(geometry(image)))


def noise_photo(seed: int) -> Image.Image:
    """Every pixel value, in every channel, at random: the whole uint8 range is compared."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (120, 90, 3), dtype=np.uint8))


@pytest.mark.parametrize("cfg_name", ["imagenet", "lite0"])
def test_normalise_gives_the_float_pipelines_tensor(cfg_name, lite0_cfg):
    cfg = CFG if cfg_name == "imagenet" else {**lite0_cfg, "input_size": (3, 64, 64)}
    normalise = Normalise.from_config(cfg)
    images = [product_photo(), noise_photo(0), noise_photo(1), Image.new("RGB", (50, 70), (200, 30, 60))]
    batch = torch.stack([eval_transform(cfg)(image) for image in images])
    assert batch.dtype == torch.uint8
    ours = normalise(batch)
    assert ours.dtype == torch.float32 and ours.shape == batch.shape
    reference = torch.stack([reference_float(cfg, image) for image in images])
    assert (ours - reference).abs().max().item() < 1e-5
    # The transforms' v2 float tail (what the workers ran): the same operations, so the same bits.
    v2_tail = v2.Normalize(list(cfg["mean"]), list(cfg["std"]))(v2.ToDtype(torch.float32, scale=True)(batch))
    assert torch.equal(ours, v2_tail)


def test_normalise_keeps_or_sets_the_memory_format():
    batch = torch.stack([eval_transform(CFG)(noise_photo(seed)) for seed in range(3)])
    normalise = Normalise.from_config(CFG)
    nchw, nhwc = normalise(batch), normalise(batch, torch.channels_last)
    assert nchw.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(nchw, nhwc)
    assert normalise(batch.contiguous(memory_format=torch.channels_last)).is_contiguous(
        memory_format=torch.channels_last)


def test_normalise_refuses_what_is_not_a_uint8_batch():
    normalise = Normalise.from_config(CFG)
    with pytest.raises(TypeError, match=r"uint8 images \[B, 3, H, W\], got torch.float32 \[2, 3, 8, 8\]"):
        normalise(torch.zeros(2, 3, 8, 8))
    with pytest.raises(TypeError, match=r"got torch.uint8 \[3, 8, 8\]"):
        normalise(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"3 positive stds.*std=\(0.5, 0.0, 0.5\)"):
        Normalise((0.5, 0.5, 0.5), (0.5, 0, 0.5))
