import math
import warnings
from types import SimpleNamespace

import lightning as L
import pytest
import timm
import torch
from sklearn.metrics import f1_score
from torch import nn
from torch.utils.data import DataLoader

from core.data.schema import IGNORE_INDEX
from core.images.transforms import Normalise
from core.model.losses import HeadLoss
from core.model.module import ConditionedNet, MultiHeadNet, SeedNet, TaggerModule, warmup_cosine

# Two heads, one with a class that never occurs (its count is raised to one by the losses).
CLASS_COUNTS = {"gender": [40, 25, 5], "usage": [60, 8, 2, 0]}
HEADS = tuple(CLASS_COUNTS)
NUM_CLASSES = {head: len(counts) for head, counts in CLASS_COUNTS.items()}
NORMALISE = Normalise((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class TinyBackbone(nn.Module):
    """A two-layer conv net with timm's `num_classes=0` contract: images -> pooled features [B, head_hidden_size]."""

    head_hidden_size = 8

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def random_batch(size: int, seed: int) -> dict[str, torch.Tensor]:
    """The batch format of the data pipeline (uint8 images), random, with some labels ignored."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.stack(
        [torch.randint(0, n, (size,), generator=generator) for n in NUM_CLASSES.values()], dim=1
    )
    labels[::3, 1] = IGNORE_INDEX
    labels[1, 0] = IGNORE_INDEX
    return {
        "image": torch.randint(0, 256, (size, 3, 32, 32), generator=generator, dtype=torch.uint8),
        "labels": labels,
        "id": torch.arange(size) + 1000 * seed,
    }


def random_images(size: int, seed: int) -> torch.Tensor:
    """What the nets take: float images, normalised."""
    return NORMALISE(random_batch(size, seed)["image"])


def loader(seed: int) -> DataLoader:
    batch = random_batch(12, seed)
    rows = [{key: value[i] for key, value in batch.items()} for i in range(12)]
    return DataLoader(rows, batch_size=6)


def test_multi_head_net_gives_logits_per_head_on_a_timm_backbone():
    # MobileNetV3 pools, then convolves to head_hidden_size (1024) != num_features (288).
    backbone = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=0)
    net = MultiHeadNet(backbone, NUM_CLASSES)
    logits = net(torch.randn(2, 3, 64, 64))
    assert {head: tuple(out.shape) for head, out in logits.items()} == {"gender": (2, 3), "usage": (2, 4)}


def test_backward_reaches_every_heads_parameters_and_the_backbone():
    net = MultiHeadNet(TinyBackbone(), NUM_CLASSES)
    batch = random_batch(6, seed=0)
    module = TaggerModule(net, HEADS, CLASS_COUNTS, NORMALISE)
    module._loss(net(NORMALISE(batch["image"])), batch["labels"]).backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_loss_is_the_head_weighted_sum_of_head_losses():
    net = MultiHeadNet(TinyBackbone(), NUM_CLASSES)
    batch = random_batch(6, seed=1)
    logits = net(NORMALISE(batch["image"]))
    module = TaggerModule(net, HEADS, CLASS_COUNTS, NORMALISE, imbalance="focal", head_weights={"gender": 2.0})
    expected = 2.0 * HeadLoss("focal", CLASS_COUNTS["gender"])(logits["gender"], batch["labels"][:, 0]) + HeadLoss(
        "focal", CLASS_COUNTS["usage"]
    )(logits["usage"], batch["labels"][:, 1])
    torch.testing.assert_close(module._loss(logits, batch["labels"]), expected)


def test_seed_net_freezes_its_backbone_and_slices_one_output_into_heads():
    net = SeedNet(TinyBackbone(), NUM_CLASSES, hidden=16)
    net.train()
    assert not net.backbone.training and net.head.training  # frozen batch-norm statistics too
    assert not any(p.requires_grad for p in net.backbone.parameters())
    batch = random_batch(6, seed=2)
    logits = net(NORMALISE(batch["image"]))
    concatenated = net.head(net.backbone(NORMALISE(batch["image"])))
    assert {head: tuple(out.shape) for head, out in logits.items()} == {"gender": (6, 3), "usage": (6, 4)}
    assert concatenated.shape == (6, 7)
    TaggerModule(net, HEADS, CLASS_COUNTS, NORMALISE, loss="bce",
                 imbalance="none")._loss(logits, batch["labels"]).backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.head.parameters())


def test_seed_net_logits_are_slices_of_the_concatenated_output():
    net = SeedNet(TinyBackbone(), NUM_CLASSES, hidden=16).eval()
    images = random_images(4, seed=3)
    logits = net(images)
    concatenated = net.head(net.backbone(images))
    torch.testing.assert_close(logits["gender"], concatenated[:, :3])
    torch.testing.assert_close(logits["usage"], concatenated[:, 3:])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": "mse"}, "unknown loss 'mse'; valid: ce, bce"),
        ({"scheduler": "plateau"}, "unknown scheduler 'plateau'; valid: cosine, step"),
        ({"imbalance": "smote"}, "unknown imbalance strategy 'smote'; valid: none, class_weighted"),
        ({"loss": "bce"}, "imbalance='none' and no head_weights, got imbalance='logit_adjusted'"),
        ({"head_weights": {"colour": 2.0}}, r"head_weights for unknown heads \['colour'\]"),
        ({"class_counts": {"gender": [1, 2]}}, r"no class counts for heads \['usage'\]"),
        ({"class_counts": {"gender": [1, 2], "usage": [9]}}, r"at least 2 classes, got \{'usage': 1\}"),
        ({"warmup_fraction": 1.0}, "warmup_fraction must be in"),
    ],
)
def test_bad_settings_fail_naming_the_value(kwargs, message):
    settings = {"heads": HEADS, "class_counts": CLASS_COUNTS, "normalise": NORMALISE, **kwargs}
    with pytest.raises(ValueError, match=message):
        TaggerModule(MultiHeadNet(TinyBackbone(), NUM_CLASSES), **settings)


@pytest.mark.parametrize(
    ("net_class", "settings"),
    [(MultiHeadNet, {"loss": "ce"}), (SeedNet, {"loss": "bce", "imbalance": "none", "scheduler": "step"})],
)
def test_fast_dev_run_logs_per_head_metrics_computed_over_labelled_rows(net_class, settings):
    torch.manual_seed(0)
    module = TaggerModule(net_class(TinyBackbone(), NUM_CLASSES), HEADS, CLASS_COUNTS, NORMALISE, **settings)
    trainer = L.Trainer(
        accelerator="cpu", fast_dev_run=True, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, train_dataloaders=loader(seed=4), val_dataloaders=loader(seed=5))
    metrics = trainer.callback_metrics
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])
    # fast_dev_run validates one batch after one step; recompute its accuracy from the trained module.
    val_batch = next(iter(loader(seed=5)))
    with torch.no_grad():
        logits = module.eval()(NORMALISE(val_batch["image"]))
    for i, head in enumerate(HEADS):
        labelled = val_batch["labels"][:, i] != IGNORE_INDEX
        predicted = logits[head].argmax(dim=1)[labelled]
        accuracy = (predicted == val_batch["labels"][labelled, i]).float().mean()
        torch.testing.assert_close(metrics[f"val/{head}/acc"], accuracy)
        expected_f1 = f1_score(val_batch["labels"][labelled, i], predicted, average="macro")
        assert metrics[f"val/{head}/macro_f1"].item() == pytest.approx(expected_f1)
        assert f"train/{head}/acc" in metrics and f"train/{head}/macro_f1" in metrics
    mean_f1 = sum(metrics[f"val/{head}/macro_f1"].item() for head in HEADS) / len(HEADS)
    assert metrics["val/mean_macro_f1"].item() == pytest.approx(mean_f1)


@pytest.mark.parametrize(("net_class", "loss"), [(MultiHeadNet, "ce"), (SeedNet, "bce")])
def test_predict_step_gives_ids_and_per_head_probabilities(net_class, loss):
    module = TaggerModule(net_class(TinyBackbone(), NUM_CLASSES), HEADS, CLASS_COUNTS, NORMALISE, loss=loss,
                          imbalance="none")
    batch = random_batch(5, seed=6)
    with torch.no_grad():
        prediction = module.eval().predict_step({**batch, "image": NORMALISE(batch["image"])}, 0)
    assert torch.equal(prediction["id"], batch["id"])
    for head, n in NUM_CLASSES.items():
        probs = prediction["probs"][head]
        assert probs.shape == (5, n) and (probs >= 0).all()
        torch.testing.assert_close(probs.sum(dim=1), torch.ones(5))


def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    factors = [warmup_cosine(step, warmup_steps=10, total_steps=110) for step in range(110)]
    assert factors[:10] == pytest.approx([0.1 * (i + 1) for i in range(10)])
    assert factors[10] == 1.0 and factors[60] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[-1] < 0.001 and warmup_cosine(0, 0, 100) == 1.0


def test_cosine_schedule_warms_up_then_decays_per_step():
    module = TaggerModule(MultiHeadNet(TinyBackbone(), NUM_CLASSES), HEADS, CLASS_COUNTS, NORMALISE, lr=1e-3,
                          warmup_fraction=0.1)
    module.trainer = SimpleNamespace(estimated_stepping_batches=100)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW) and config["lr_scheduler"]["interval"] == "step"
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-4) and max(rates) == pytest.approx(1e-3)
    assert rates.index(max(rates)) == 9
    assert rates[50] < rates[9] and rates[-1] < 1e-5


def test_seed_recipe_uses_step_lr_and_optimises_only_the_head():
    net = SeedNet(TinyBackbone(), NUM_CLASSES, hidden=16)
    module = TaggerModule(
        net, HEADS, CLASS_COUNTS, NORMALISE, loss="bce", imbalance="none", lr=5e-5, weight_decay=0.01, scheduler="step"
    )
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR) and config["lr_scheduler"]["interval"] == "epoch"
    assert (scheduler.step_size, scheduler.gamma) == (7, 0.1)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in net.head.parameters()}
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-6)


def test_label_smoothing_matches_torch_cross_entropy_over_labelled_rows():
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([0, 1, 2, IGNORE_INDEX, 3, 2, IGNORE_INDEX, 1])
    expected = nn.functional.cross_entropy(logits, target, label_smoothing=0.2, ignore_index=IGNORE_INDEX)
    assert torch.allclose(HeadLoss("none", [5, 5, 5, 5], label_smoothing=0.2)(logits, target), expected)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        HeadLoss("none", [5, 5], label_smoothing=1.0)


HIERARCHY_COUNTS = {"gender": [5, 5], "masterCategory": [4, 6], "subCategory": [3, 3, 4], "articleType": [2, 2, 2, 4]}


def test_conditioned_net_feeds_each_child_its_parents_probabilities_teacher_forced_in_training():
    net = ConditionedNet(TinyBackbone(), {head: len(counts) for head, counts in HIERARCHY_COUNTS.items()})
    width = TinyBackbone.head_hidden_size
    assert net.parents == {"subCategory": "masterCategory", "articleType": "subCategory"}
    assert [net.heads[head].in_features for head in HIERARCHY_COUNTS] == [width, width, width + 2, width + 3]
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[0, 0, 0, 0], [1, 1, 2, 3], [0, IGNORE_INDEX, 1, 1], [1, 0, IGNORE_INDEX, 2]])
    net.eval()
    free = net(images)
    forced = net(images, labels)
    assert list(free) == list(HIERARCHY_COUNTS)
    # Parents and unrelated heads do not depend on the labels; a child does, except where its parent is unlabelled.
    for head in ("gender", "masterCategory"):
        assert torch.equal(free[head], forced[head])
    assert not torch.allclose(free["subCategory"][:2], forced["subCategory"][:2])
    assert torch.allclose(free["subCategory"][2], forced["subCategory"][2])
    # Teacher forcing is the one-hot parent: the child's logits are the features' plus the parent class's column.
    features = net.backbone(images)
    child = net.heads["subCategory"]
    expected = features @ child.weight[:, :width].T + child.bias + child.weight[:, width:][:, labels[0, 1]]
    assert torch.allclose(forced["subCategory"][0], expected[0], atol=1e-6)


def test_ema_validates_with_the_averaged_weights_and_tta_averages_the_mirror():
    torch.manual_seed(0)
    module = TaggerModule(MultiHeadNet(TinyBackbone(), NUM_CLASSES), HEADS, CLASS_COUNTS, NORMALISE,
                          ema_decay=0.9, tta_flip=True)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader(0), loader(1))
    module.eval()
    assert not all(torch.equal(a, b) for a, b in zip(module.net.parameters(), module.ema.module.parameters()))
    assert module.inference_net is module.ema.module
    images = NORMALISE(random_batch(4, 2)["image"])
    with torch.no_grad():
        plain, mirrored = module.ema.module(images), module.ema.module(images.flip(dims=[3]))
        logits = module(images)
    for head in HEADS:
        assert torch.allclose(logits[head], (plain[head] + mirrored[head]) / 2)
        assert not torch.allclose(logits[head], plain[head])
    module.train()
    assert torch.equal(module(images)["gender"], module.net(images)["gender"])


class BatchesSeen(L.Callback):
    """The images each training and validation step was given (after the transfer hooks)."""

    def __init__(self) -> None:
        self.train, self.val = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train.append(batch["image"])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val.append(batch["image"])


@pytest.mark.parametrize(("precision", "channels_last", "dtype"), [
    ("32-true", False, torch.float32),
    ("bf16-mixed", True, torch.float32),  # autocast converts inside the net
    ("bf16-true", True, torch.bfloat16),  # Lightning converts a batch before the transfer: still uint8 then
])
def test_uint8_batches_reach_the_steps_normalised_in_the_modules_format(precision, channels_last, dtype):
    torch.manual_seed(0)
    module = TaggerModule(MultiHeadNet(TinyBackbone(), NUM_CLASSES), HEADS, CLASS_COUNTS, NORMALISE,
                          channels_last=channels_last)
    first_conv = module.net.backbone.layers[0].weight
    assert first_conv.is_contiguous(memory_format=torch.channels_last) == channels_last
    seen = BatchesSeen()
    trainer = L.Trainer(accelerator="cpu", precision=precision, fast_dev_run=True, logger=False, callbacks=[seen],
                        enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, train_dataloaders=loader(seed=4), val_dataloaders=loader(seed=5))
    assert math.isfinite(trainer.callback_metrics["train/loss"])
    for images, seed in ((seen.train[0], 4), (seen.val[0], 5)):
        uint8 = next(iter(loader(seed)))["image"]
        assert uint8.dtype == torch.uint8
        assert images.dtype == dtype and images.shape == uint8.shape
        assert images.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        torch.testing.assert_close(images, NORMALISE(uint8).to(dtype), rtol=0, atol=0)
