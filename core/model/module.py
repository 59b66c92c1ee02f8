"""The multi-head tagger: networks (a backbone plus one output per label head) and the LightningModule.

The networks are injected (lightning-hydra-template style): `TaggerModule(net=...)` takes any
module mapping images [B, 3, H, W] (and, while training, optionally the batch's labels) to a dict
head -> logits [B, C_head]. Three are provided:

- `MultiHeadNet`: our default, one linear head per label head on a trainable timm backbone;
- `ConditionedNet`: the same, with each child head of the catalogue's hierarchy (subCategory,
  articleType) also fed its parent head's class probabilities (Condition-CNN);
- `SeedNet`: the seed notebook's recipe, a frozen backbone under one MLP whose output is
  the concatenation of all heads' classes, sliced back into per-head logits.

Batches arrive as dicts {"image": uint8 [B, 3, H, W], "labels": int64 [B, n_heads] (IGNORE_INDEX
where ignored, columns in `heads` order), "id": int64 [B]} (core.model.datamodule); after the transfer to
the device, `on_after_batch_transfer` makes "image" the net's input there: float, normalised
(core.images.transforms.Normalise), in the module's memory format. The steps see that batch.
"""

import math
from collections.abc import Mapping, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from core.data.schema import IGNORE_INDEX
from core.images.transforms import Normalise
from core.model.losses import HeadLoss, masked_bce
from core.model.options import Imbalance, Loss, Scheduler
from core.trust.taxonomy import HIERARCHY


class MultiHeadNet(nn.Module):
    """A backbone and one linear head per label head.

    backbone: a timm model created with `num_classes=0`, mapping images to pooled features
    [B, head_hidden_size]. (timm's `num_features` is the width before the pooling head, which
    differs for MobileNetV3-style models with a convolution after pooling.)
    """

    def __init__(self, backbone: nn.Module, num_classes: Mapping[str, int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict({head: nn.Linear(backbone.head_hidden_size, n) for head, n in num_classes.items()})

    def forward(self, images: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """images: float [B, 3, H, W] -> head -> logits [B, C_head]. (labels: unused.)"""
        features = self.backbone(images)
        return {head: linear(features) for head, linear in self.heads.items()}


class ConditionedNet(nn.Module):
    """A backbone and one linear head per label head, where each child head of `HIERARCHY`
    (masterCategory -> subCategory -> articleType) whose parent is also learned reads the pooled
    features and its parent's class probabilities (Condition-CNN, Kolisnik et al. 2021).

    While training with labels, the parent's probabilities are teacher-forced: the one-hot true
    parent where the row has one, else the parent head's own (detached) softmax. Without labels
    (validation, prediction) the child reads the parent's softmax, so one photo's heads agree.
    num_classes: head -> classes, in the order of the labels' columns.
    """

    def __init__(self, backbone: nn.Module, num_classes: Mapping[str, int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.columns = {head: column for column, head in enumerate(num_classes)}
        learned = [head for head in HIERARCHY if head in num_classes]
        self.parents = {child: parent for parent, child in zip(learned, learned[1:])}
        # Parents before children, the other heads after, each head once.
        self.order = [*learned, *(head for head in num_classes if head not in learned)]
        width = backbone.head_hidden_size
        self.heads = nn.ModuleDict(
            {head: nn.Linear(width + (num_classes[self.parents[head]] if head in self.parents else 0), n)
             for head, n in num_classes.items()}
        )

    def forward(self, images: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """images: float [B, 3, H, W]; labels: int64 [B, n_heads] (IGNORE_INDEX where ignored) to
        teacher-force the parents while training, or None -> head -> logits [B, C_head]."""
        features = self.backbone(images)
        logits: dict[str, Tensor] = {}
        for head in self.order:
            parent = self.parents.get(head)
            if parent is None:
                logits[head] = self.heads[head](features)
                continue
            condition = logits[parent].detach().float().softmax(dim=-1)
            if labels is not None:
                truth = labels[:, self.columns[parent]]
                one_hot = F.one_hot(truth.clamp(min=0), condition.shape[1]).to(condition.dtype)
                condition = torch.where((truth != IGNORE_INDEX)[:, None], one_hot, condition)
            logits[head] = self.heads[head](torch.cat([features, condition.to(features.dtype)], dim=1))
        return {head: logits[head] for head in self.columns}


class SeedNet(nn.Module):
    """The seed's network: backbone -> Linear(head_hidden_size, hidden)-ReLU-Dropout-Linear(hidden, sum of classes).

    backbone: as for `MultiHeadNet`. With `freeze_backbone` the backbone is fixed: no gradients, and it stays in eval
    mode so its batch-norm statistics do not drift either.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: Mapping[str, int],
        hidden: int = 1024,
        dropout: float = 0.5,
        freeze_backbone: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.freeze_backbone = freeze_backbone
        self.backbone.requires_grad_(not freeze_backbone)
        self.num_classes = dict(num_classes)
        self.head = nn.Sequential(
            nn.Linear(backbone.head_hidden_size, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, sum(self.num_classes.values())),
        )

    def train(self, mode: bool = True) -> "SeedNet":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def forward(self, images: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """images: float [B, 3, H, W] -> head -> logits [B, C_head], slices of the concatenated output.
        (labels: unused.)"""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            features = self.backbone(images)
        logits = self.head(features)
        return dict(zip(self.num_classes, logits.split(list(self.num_classes.values()), dim=1)))


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear rise to 1 over `warmup_steps`, then cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class TaggerModule(L.LightningModule):
    """Trains any multi-head net with per-head losses, and logs per-head, per-split metrics.

    net: images -> dict head -> logits (e.g. `MultiHeadNet`, `SeedNet`).
    heads: the label heads, in the order of the batch's label columns.
    class_counts: head -> training counts per class, in class-index order (from the label schema).
    normalise: uint8 images -> the net's float input (`Normalise.from_config` of the backbone's
        data config); also what a Predictor feeds the net through.
    channels_last: the net's weights, and each batch's images on arrival, in NHWC memory format.
    loss: "ce" (per-head softmax cross-entropy under `imbalance`, summed with `head_weights`,
        default 1 each) or "bce" (the seed's masked BCE over the concatenated one-hot labels;
        takes neither imbalance strategy nor head weights).
    imbalance, tau, focal_gamma, beta: see `core.model.losses` (`HeadLoss`).
    lr, weight_decay: AdamW over the trainable parameters.
    scheduler: "cosine" (linear warmup over `warmup_fraction` of the steps, then cosine to 0,
        stepped per batch) or "step" (StepLR(step_size, gamma), stepped per epoch).
    label_smoothing: share of each "ce" target spread over the head's classes (`HeadLoss`).
    ema_decay: None, or keep an exponential moving average of the net's weights (timm's
        ModelEmaV3, decay warming up to `ema_decay`) and validate and predict with it.
    tta_flip: outside training, each head's logits are the mean of the photo's and its mirror's.

    Logs `train/loss`, `val/loss`, `val/mean_macro_f1` (mean over heads) and, per head, `<split>/<head>/acc` (micro
    accuracy) and `<split>/<head>/macro_f1`, all over labelled rows only, from the raw logits.
    """

    def __init__(
        self,
        net: nn.Module,
        heads: Sequence[str],
        class_counts: Mapping[str, Sequence[int]],
        normalise: Normalise,
        imbalance: str = "logit_adjusted",
        loss: str = "ce",
        head_weights: Mapping[str, float] | None = None,
        tau: float = 1.0,
        focal_gamma: float = 2.0,
        beta: float = 0.999,
        lr: float = 3e-4,
        weight_decay: float = 0.05,
        scheduler: str = "cosine",
        warmup_fraction: float = 0.05,
        step_size: int = 7,
        gamma: float = 0.1,
        label_smoothing: float = 0.0,
        ema_decay: float | None = None,
        tta_flip: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "normalise"])
        # Checked, and kept as the plain str given: hyperparameters travel inside checkpoints.
        Loss.parse(loss, "loss")
        Scheduler.parse(scheduler, "scheduler")
        missing = [head for head in heads if head not in class_counts]
        if missing:
            raise ValueError(f"no class counts for heads {missing}; counts given for {sorted(class_counts)}")
        too_few = {head: len(class_counts[head]) for head in heads if len(class_counts[head]) < 2}
        if too_few:
            raise ValueError(f"every head needs at least 2 classes, got {too_few}")
        if loss == Loss.BCE and (imbalance != Imbalance.NONE or head_weights is not None):
            raise ValueError(
                f"loss='bce' (the seed's) takes imbalance='none' and no head_weights, "
                f"got imbalance={imbalance!r}, head_weights={head_weights!r}"
            )
        unknown = sorted(set(head_weights or {}) - set(heads))
        if unknown:
            raise ValueError(f"head_weights for unknown heads {unknown}; heads: {list(heads)}")
        if not 0 <= warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay}")

        self.net = net
        self.normalise = normalise
        self.input_format = torch.channels_last if channels_last else torch.contiguous_format
        self.heads = tuple(heads)
        self.head_weights = {head: (head_weights or {}).get(head, 1.0) for head in self.heads}
        self.head_losses = nn.ModuleDict(
            {head: HeadLoss(imbalance, class_counts[head], tau, focal_gamma, beta, label_smoothing)
             for head in self.heads}
        )
        # warmup_power 3/4: the average covers the run so far early on and reaches ema_decay later.
        self.ema = None if ema_decay is None else ModelEmaV3(net, decay=ema_decay, use_warmup=True, warmup_power=0.75)
        if self.ema is not None:  # follow the module's train/eval mode like any submodule (it only runs in eval)
            self.ema.module.train(net.training)
        num_classes = {head: len(class_counts[head]) for head in self.heads}
        self.train_metrics = _split_metrics("train", num_classes)
        self.val_metrics = _split_metrics("val", num_classes)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """images: float [B, 3, H, W], normalised -> head -> raw logits [B, C_head].

        Training: the net, given `labels` (int64 [B, n_heads]) for a net that teacher-forces.
        Otherwise the weight average when there is one, and with `tta_flip` the mean of the
        logits of the images and of their mirror images.
        """
        if self.training:
            return self.net(images, labels)
        net = self.inference_net
        logits = net(images)
        if self.hparams.tta_flip:
            mirrored = net(images.flip(dims=[3]))
            logits = {head: (values + mirrored[head]) / 2 for head, values in logits.items()}
        return logits

    def predict_with_features(self, images: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Outside training: (head -> raw logits [B, C_head], the backbone's pooled features [B, D]) of
        normalised images, the features averaged over the photo and its mirror like the logits
        (core.trust.typicality compares photos on them)."""
        captured: list[Tensor] = []
        net = self.inference_net
        hook = net.backbone.register_forward_hook(lambda module, inputs, output: captured.append(output))
        try:
            logits = self(images)
        finally:
            hook.remove()
        return logits, torch.stack(captured).mean(dim=0)

    @property
    def inference_net(self) -> nn.Module:
        """The weights that validate and predict: the moving average when the module keeps one."""
        return self.net if self.ema is None else self.ema.module

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.net, step=self.global_step)

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict[str, Tensor]:
        """The batch's uint8 images -> the net's input, on the device they were copied to (the GPU's
        work, not the loader's), then in the precision's input dtype (Lightning converts a batch
        for "bf16-true" and the like before the transfer, when its images are still uint8)."""
        images = self.normalise(batch["image"], self.input_format)
        return {**batch, "image": self.trainer.precision_plugin.convert_input(images)}

    def _loss(self, logits: dict[str, Tensor], labels: Tensor) -> Tensor:
        if self.hparams.loss == Loss.BCE:
            return masked_bce({head: logits[head] for head in self.heads}, labels)
        return sum(
            self.head_weights[head] * self.head_losses[head](logits[head], labels[:, i])
            for i, head in enumerate(self.heads)
        )

    def _step(self, batch: dict[str, Tensor], split: str, metrics: nn.ModuleDict) -> Tensor:
        labels = batch["labels"]
        logits = self(batch["image"], labels)
        loss = self._loss(logits, labels)
        batch_size = labels.shape[0]
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size)
        for i, head in enumerate(self.heads):
            metrics[head].update(logits[head].detach(), labels[:, i])
            self.log_dict(metrics[head], on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train", self.train_metrics)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val", self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        # One number for early stopping and "best": every head counts the same.
        macro_f1 = torch.stack([self.val_metrics[head]["macro_f1"].compute() for head in self.heads])
        self.log("val/mean_macro_f1", macro_f1.mean(), prog_bar=True)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict:
        """-> {"id": int64 [B], "probs": head -> float [B, C_head], "features": float [B, D]}.

        Probabilities are the softmax of each head's raw logits, for the seed's BCE-trained net
        too (its per-head slice is normalised the same way, so every head's probs sum to 1);
        features are the backbone's pooled output (`predict_with_features`).
        """
        logits, features = self.predict_with_features(batch["image"])
        return {"id": batch["id"], "probs": {head: logits[head].softmax(dim=-1) for head in self.heads},
                "features": features}

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            [p for p in self.parameters() if p.requires_grad], lr=hp.lr, weight_decay=hp.weight_decay
        )
        if hp.scheduler == Scheduler.STEP:
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp.step_size, gamma=hp.gamma)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        total_steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(total_steps):
            raise ValueError("scheduler='cosine' needs a finite run: set the trainer's max_epochs or max_steps")
        total_steps = int(total_steps)
        warmup_steps = int(hp.warmup_fraction * total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _split_metrics(split: str, num_classes: Mapping[str, int]) -> nn.ModuleDict:
    """Per head, micro accuracy and macro-F1 over labelled rows, logged as `<split>/<head>/acc|macro_f1`.

    Lightning computes and resets them at the end of each epoch.
    """
    return nn.ModuleDict(
        {
            head: MetricCollection(
                {
                    "acc": MulticlassAccuracy(n, average="micro", ignore_index=IGNORE_INDEX),
                    "macro_f1": MulticlassF1Score(n, average="macro", ignore_index=IGNORE_INDEX),
                },
                prefix=f"{split}/{head}/",
            )
            for head, n in num_classes.items()
        }
    )
