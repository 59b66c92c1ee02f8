import pytest
import torch
import torch.nn.functional as F

from core.data.schema import IGNORE_INDEX
from core.model.losses import HeadLoss, effective_number_weights, masked_bce
from core.model.options import Imbalance

COUNTS = [500, 50, 5]  # a long tail: the strategies must treat these classes differently


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [8, 3] and targets with two ignored rows."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 3, generator=generator) * 2
    target = torch.tensor([0, 1, 2, IGNORE_INDEX, 0, 2, IGNORE_INDEX, 1])
    return logits, target


def kept(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    labelled = target != IGNORE_INDEX
    return logits[labelled], target[labelled]


def test_effective_number_weights_follow_cui_et_al():
    beta = 0.9
    raw = torch.tensor([(1 - beta) / (1 - beta**n) for n in COUNTS])
    weights = effective_number_weights(COUNTS, beta)
    torch.testing.assert_close(weights, (raw / raw.mean()).float())
    assert weights.mean().item() == pytest.approx(1.0)
    assert weights[0] < weights[1] < weights[2]  # the rarer, the heavier


def test_effective_number_weights_count_an_empty_class_as_one_and_reject_bad_beta():
    torch.testing.assert_close(effective_number_weights([10, 0]), effective_number_weights([10, 1]))
    with pytest.raises(ValueError, match="beta must be in"):
        effective_number_weights(COUNTS, beta=1.0)
    with pytest.raises(ValueError, match=r"\[5.0, -1.0\]"):
        effective_number_weights([5, -1])


def test_unknown_strategy_names_the_valid_ones():
    with pytest.raises(ValueError, match="'balanced'.*none, class_weighted, logit_adjusted, focal"):
        HeadLoss("balanced", COUNTS)


def test_none_is_cross_entropy_over_the_labelled_rows_only(batch):
    logits, target = batch
    loss = HeadLoss("none", COUNTS)(logits, target)
    torch.testing.assert_close(loss, F.cross_entropy(*kept(logits, target)))
    # Ignored rows have no say, whatever their logits.
    changed = logits.clone()
    changed[target == IGNORE_INDEX] = 1e4
    torch.testing.assert_close(HeadLoss("none", COUNTS)(changed, target), loss)


@pytest.mark.parametrize("strategy", list(Imbalance))
def test_all_ignored_batch_gives_zero_with_a_gradient(strategy):
    logits = torch.randn(4, 3, requires_grad=True)
    loss = HeadLoss(strategy, COUNTS)(logits, torch.full((4,), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros(4, 3))


def test_class_weighted_is_cross_entropy_weighted_by_effective_numbers(batch):
    logits, target = batch
    weights = effective_number_weights(COUNTS, beta=0.99)
    loss = HeadLoss("class_weighted", COUNTS, beta=0.99)(logits, target)
    logits_kept, target_kept = kept(logits, target)
    per_row = F.cross_entropy(logits_kept, target_kept, reduction="none")
    torch.testing.assert_close(loss, (weights[target_kept] * per_row).mean())
    assert loss.item() != pytest.approx(HeadLoss("none", COUNTS)(logits, target).item())


def test_logit_adjusted_is_cross_entropy_on_logits_plus_tau_log_prior(batch):
    logits, target = batch
    prior = torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS)
    loss = HeadLoss("logit_adjusted", COUNTS, tau=0.5)(logits, target)
    logits_kept, target_kept = kept(logits, target)
    torch.testing.assert_close(loss, F.cross_entropy(logits_kept + 0.5 * prior.log(), target_kept))
    assert loss.item() != pytest.approx(HeadLoss("none", COUNTS)(logits, target).item())
    # A uniform prior shifts every logit equally: softmax, hence the loss, is unchanged.
    uniform = [7, 7, 7]
    torch.testing.assert_close(
        HeadLoss("logit_adjusted", uniform)(logits, target), HeadLoss("none", uniform)(logits, target)
    )


def test_focal_with_gamma_zero_is_cross_entropy_and_down_weights_easy_examples(batch):
    logits, target = batch
    torch.testing.assert_close(
        HeadLoss("focal", COUNTS, gamma=0.0)(logits, target), HeadLoss("none", COUNTS)(logits, target)
    )
    easy, hard = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    target0 = torch.tensor([0])
    for example in (easy, hard):
        p = example.softmax(-1)[0, 0]
        expected = -((1 - p) ** 2) * p.log()
        torch.testing.assert_close(HeadLoss("focal", COUNTS, gamma=2.0)(example, target0), expected)

    def kept_fraction(example: torch.Tensor) -> float:
        return (HeadLoss("focal", COUNTS)(example, target0) / HeadLoss("none", COUNTS)(example, target0)).item()

    assert kept_fraction(easy) < 0.01 < 0.5 < kept_fraction(hard)  # (1 - 0.96)^2 vs (1 - 0.21)^2


def test_masked_bce_without_masking_is_the_seeds_bce_on_the_concatenation():
    logits = {"a": torch.randn(5, 3), "b": torch.randn(5, 2)}
    labels = torch.tensor([[0, 1], [2, 0], [1, 1], [0, 0], [2, 1]])
    one_hot = torch.cat([F.one_hot(labels[:, 0], 3), F.one_hot(labels[:, 1], 2)], dim=1).float()
    expected = torch.nn.BCEWithLogitsLoss()(torch.cat([logits["a"], logits["b"]], dim=1), one_hot)
    torch.testing.assert_close(masked_bce(logits, labels), expected)


def test_masked_bce_masks_every_column_of_an_ignored_head():
    logits = {"a": torch.randn(3, 3), "b": torch.randn(3, 2)}
    labels = torch.tensor([[0, 1], [IGNORE_INDEX, 0], [1, IGNORE_INDEX]])
    elementwise = {
        head: F.binary_cross_entropy_with_logits(
            logits[head], F.one_hot(labels[:, i].clamp(min=0), logits[head].shape[1]).float(), reduction="none"
        )
        for i, head in enumerate(logits)
    }
    kept_elements = torch.cat([elementwise["a"][[0, 2]].flatten(), elementwise["b"][[0, 1]].flatten()])
    loss = masked_bce(logits, labels)
    torch.testing.assert_close(loss, kept_elements.mean())
    logits["a"][1] = 1e4  # the ignored head's logits change nothing
    torch.testing.assert_close(masked_bce(logits, labels), loss)


def test_masked_bce_all_ignored_is_zero_and_wrong_width_fails():
    logits = {"a": torch.randn(2, 3, requires_grad=True)}
    loss = masked_bce(logits, torch.full((2, 1), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits["a"].grad, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="1 heads of logits but labels have 2 columns"):
        masked_bce(logits, torch.zeros(2, 2, dtype=torch.long))
