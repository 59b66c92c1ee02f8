"""Per-head losses: softmax cross-entropy with a choice of imbalance strategy, and the seed's masked BCE.

Labels are int64 class indices with `IGNORE_INDEX` (-100) where a label is ignored (missing,
or a rare class under the "ignore" policy); every loss here averages over labelled rows only.

Imbalance strategies (`HeadLoss(strategy=...)`, core.model.options.Imbalance):

- ``none``: plain cross-entropy.
- ``class_weighted``: cross-entropy with each row weighted by its class's effective-number
  weight (Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of Samples"):
  w_c = (1 - β) / (1 - β^n_c), normalised to mean 1 over classes; the loss is the mean of
  w_y · CE over labelled rows, so the weights keep the loss on the scale of plain CE.
- ``logit_adjusted``: cross-entropy on logits + τ·log(prior_c) (Menon et al. 2021, "Long-tail
  learning via logit adjustment"). The adjustment is part of the loss only (train and val
  loss alike); predictions and metrics use the raw logits, which is what makes them balanced.
- ``focal``: (1 - p_y)^γ · CE (Lin et al. 2017); γ = 0 is plain cross-entropy, γ > 0
  down-weights the examples the model already gets right.

Label smoothing ε (any strategy) replaces the one-hot target by (1 - ε)·one-hot + ε/C
(Szegedy et al. 2016): CE becomes (1 - ε)·CE + ε·mean over classes of -log p_c.

A class with no example counts as one example, which keeps its weight and log-prior finite.
"""

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.data.schema import IGNORE_INDEX
from core.model.options import Imbalance


def _counts_tensor(counts: Sequence[int]) -> Tensor:
    """Class counts as a float tensor [C], zero counts raised to one."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() == 0 or (counts < 0).any():
        raise ValueError(f"class counts must be a non-empty list of counts >= 0, got {counts.tolist()}")
    return counts.clamp(min=1)


def effective_number_weights(counts: Sequence[int], beta: float = 0.999) -> Tensor:
    """Cui et al.'s class weights (1 - β) / (1 - β^n_c), normalised to mean 1: float32 [C]."""
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    counts = _counts_tensor(counts)
    weights = (1 - beta) / (1 - beta**counts)
    return (weights / weights.mean()).float()


def log_prior(counts: Sequence[int]) -> Tensor:
    """Log of the empirical class prior n_c / sum(n): float32 [C]."""
    counts = _counts_tensor(counts)
    return (counts / counts.sum()).log().float()


class HeadLoss(nn.Module):
    """One head's cross-entropy under an imbalance strategy (see the module docstring)."""

    def __init__(
        self,
        strategy: str,
        class_counts: Sequence[int],
        tau: float = 1.0,
        gamma: float = 2.0,
        beta: float = 0.999,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        strategy = Imbalance.parse(strategy, "imbalance strategy")
        if tau < 0 or gamma < 0:
            raise ValueError(f"tau and gamma must be >= 0, got tau={tau}, gamma={gamma}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.strategy, self.tau, self.gamma, self.label_smoothing = strategy, tau, gamma, label_smoothing
        # Buffers follow the module to the device; both are computed once, cheap to keep.
        self.register_buffer("class_weights", effective_number_weights(class_counts, beta), persistent=False)
        self.register_buffer("log_prior", log_prior(class_counts), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean loss over labelled rows.

        logits: float [B, C]; target: int64 [B], IGNORE_INDEX where ignored. Returns a scalar;
        0 (still attached to the graph) when no row is labelled.
        """
        # Masking with `where` rather than indexing avoids a host-device sync per step.
        labelled = target != IGNORE_INDEX
        safe_target = target.clamp(min=0)
        logits = logits.float()
        if self.strategy == Imbalance.LOGIT_ADJUSTED:
            logits = logits + self.tau * self.log_prior
        log_probs = F.log_softmax(logits, dim=-1)
        log_p = log_probs.gather(1, safe_target[:, None]).squeeze(1)
        loss = -log_p
        if self.label_smoothing:
            loss = (1 - self.label_smoothing) * loss - self.label_smoothing * log_probs.mean(dim=-1)
        if self.strategy == Imbalance.FOCAL:
            loss = loss * (1 - log_p.exp()) ** self.gamma
        elif self.strategy == Imbalance.CLASS_WEIGHTED:
            loss = loss * self.class_weights[safe_target]
        return torch.where(labelled, loss, 0.0).sum() / labelled.sum().clamp(min=1)


def masked_bce(logits_by_head: Mapping[str, Tensor], labels: Tensor) -> Tensor:
    """The seed's loss: BCE-with-logits on the concatenated one-hot labels, ignored heads masked.

    logits_by_head: head -> float [B, C_head], in the order of `labels`' columns;
    labels: int64 [B, n_heads], IGNORE_INDEX where ignored. A row's ignored head masks all of
    that head's columns. Returns the mean over unmasked elements (with nothing masked, exactly
    `BCEWithLogitsLoss()` on the concatenation); 0, still attached to the graph, if all are masked.
    """
    if len(logits_by_head) != labels.shape[1]:
        raise ValueError(f"{len(logits_by_head)} heads of logits but labels have {labels.shape[1]} columns")
    total, n_elements = 0, 0
    for logits, target in zip(logits_by_head.values(), labels.unbind(dim=1)):
        labelled = target != IGNORE_INDEX
        one_hot = F.one_hot(target.clamp(min=0), logits.shape[1]).to(logits.dtype)
        elementwise = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="none")
        total = total + torch.where(labelled[:, None], elementwise, 0.0).sum()
        n_elements = n_elements + labelled.sum() * logits.shape[1]
    return total / n_elements.clamp(min=1)
