"""Hermes losses: the reference fixture's BCE and Dice, null masking, alpha clamping, modality loss, float32 under autocast."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scripts.training.batch import HermesTargets
from scripts.training.losses import HermesLoss, adaptive_dice_loss, masked_bce_loss, modality_loss


@pytest.fixture(scope="module")
def reference(shared_fixtures: Path) -> dict:
    return torch.load(shared_fixtures / "hermes_reference" / "hermes_reference_io.pt", weights_only=True)


def test_losses_equal_the_reference_fixture(reference: dict) -> None:
    logits, label, tasks = reference["seg_logits"], reference["label"], reference["task_index"]
    assert (tasks == -1).any()  # the fixture pads one sample with a null task ...
    assert label[tasks == -1].float().sum() > 0  # ... whose label channel is not empty: it must be ignored
    assert torch.allclose(masked_bce_loss(logits, label, tasks), reference["bce_loss"], rtol=1e-6, atol=1e-7)
    assert torch.allclose(adaptive_dice_loss(logits, label, tasks), reference["dice_loss"], rtol=1e-6, atol=1e-7)


def test_null_pairs_get_no_weight() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, 4)
    label = (torch.rand(2, 3, 4, 4, 4) > 0.5).to(torch.uint8)
    tasks = torch.tensor([[0, 1, -1], [2, -1, -1]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, label.float(), reduction="none").mean(dim=(2, 3, 4))
    expected = (bce[0, 0] + bce[0, 1] + bce[1, 0]) / 3
    assert torch.allclose(masked_bce_loss(logits, label, tasks), expected)
    # changing logits or labels of null pairs changes nothing
    logits2, label2 = logits.clone(), label.clone()
    logits2[tasks == -1] = 50.0
    label2[tasks == -1] = 0
    for loss in (masked_bce_loss, adaptive_dice_loss):
        assert torch.allclose(loss(logits, label, tasks), loss(logits2, label2, tasks))
    all_null = torch.full((2, 3), -1)
    assert masked_bce_loss(logits, label, all_null) == 0 and adaptive_dice_loss(logits, label, all_null) == 0


def test_adaptive_dice_formula_and_alpha_clamp() -> None:
    # one pair, 4 voxels; p = sigmoid(logit)
    probs = torch.tensor([0.9, 0.6, 0.2, 0.7])
    target = torch.tensor([1.0, 1.0, 0.0, 0.0])
    logits = torch.logit(probs).reshape(1, 1, 4)
    tp = 0.9 + 0.6
    fp = 0.2 + 0.7
    fn = 0.1 + 0.4
    alpha = min(max(fp / (fp + fn + 1e-6), 0.2), 0.8)  # 0.643: inside the clamp
    dice = tp / (tp + alpha * fp + (1 - alpha) * fn + 1e-6)
    assert adaptive_dice_loss(logits, target.reshape(1, 1, 4), torch.tensor([[3]])).item() == pytest.approx(1 - dice, rel=1e-5)
    # empty target: TP = 0, so the loss is 1 whatever alpha is
    assert adaptive_dice_loss(torch.full((1, 1, 4), -2.0), torch.zeros(1, 1, 4), torch.tensor([[0]])).item() == pytest.approx(1.0)
    # no false positives: alpha would be 0, the clamp raises it to 0.2 (beta = 0.8)
    fn = float((1 - torch.sigmoid(torch.full((4,), 2.0))).sum())
    tp = 4 - fn
    dice = tp / (tp + 0.2 * 0.0 + 0.8 * fn + 1e-6)
    full = torch.ones(1, 1, 4)
    assert adaptive_dice_loss(torch.full((1, 1, 4), 2.0), full, torch.tensor([[0]])).item() == pytest.approx(1 - dice, rel=1e-5)
    unclamped = tp / (tp + 0.0 + 1.0 * fn + 1e-6)
    assert 1 - dice != pytest.approx(1 - unclamped, rel=1e-3)  # the clamp matters here


def test_modality_loss_ignores_unknown_modality() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, 1.0, 1.0]], requires_grad=True)
    target = torch.tensor([[0], [-1], [2]])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], torch.tensor([0, 2]))
    assert torch.allclose(modality_loss(logits, target), expected)
    none_known = modality_loss(logits, torch.tensor([-1, -1, -1]))
    assert none_known.item() == 0.0
    none_known.backward()  # still part of the graph
    assert logits.grad is not None and torch.count_nonzero(logits.grad) == 0


def test_hermes_loss_sums_terms_in_float32_under_autocast(reference: dict) -> None:
    logits, label, tasks = reference["seg_logits"], reference["label"], reference["task_index"]
    modality_logits, modality_index = reference["modality_logits"], reference["modality_index"]
    loss_fn = HermesLoss(modality_weight=0.01)
    total = loss_fn((logits, modality_logits), (label, tasks, modality_index))
    expected = reference["bce_loss"] + reference["dice_loss"] + 0.01 * modality_loss(modality_logits, modality_index)
    assert torch.allclose(total, expected, rtol=1e-6)
    assert set(loss_fn.last_terms) == {"bce", "dice", "modality"}
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        low = HermesLoss()((logits.to(torch.bfloat16), modality_logits.to(torch.bfloat16)), (label, tasks, modality_index))
    assert low.dtype == torch.float32
    assert torch.allclose(low, total, rtol=2e-2)  # only the bf16 rounding of the logits differs
    # gradients reach the logits; deep supervision sums weighted outputs
    seg = logits.clone().requires_grad_(True)
    HermesLoss()((seg, modality_logits), (label, tasks, modality_index)).backward()
    assert seg.grad is not None and torch.isfinite(seg.grad).all() and seg.grad[tasks == -1].abs().sum() == 0
    deep = HermesLoss(deep_supervision_weights=[1.0, 0.5])(([logits, logits], modality_logits), (label, tasks, modality_index))
    seg_terms = reference["bce_loss"] + reference["dice_loss"]
    assert torch.allclose(deep, 1.5 * seg_terms + 0.01 * modality_loss(modality_logits, modality_index), rtol=1e-5)
    with pytest.raises(ValueError, match="task_index has 4 entries per sample but the logits have 5 channels"):
        masked_bce_loss(logits, label, tasks[:, :4])


def test_hermes_loss_takes_the_batch_targets(reference: dict) -> None:
    """The trainer hands the loss the prepare step's HermesTargets; the dataset index does not change the loss."""
    logits, label, tasks = reference["seg_logits"], reference["label"], reference["task_index"]
    modality_logits, modality_index = reference["modality_logits"], reference["modality_index"]
    targets = HermesTargets(label, tasks, modality_index, torch.zeros(label.shape[0], dtype=torch.long))
    loss_fn = HermesLoss(modality_weight=0.01)
    expected = reference["bce_loss"] + reference["dice_loss"] + 0.01 * modality_loss(modality_logits, modality_index)
    assert torch.allclose(loss_fn((logits, modality_logits), targets), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="target = \\(label, task_index, modality_index\\[, dataset_index\\]\\)"):
        loss_fn((logits, modality_logits), (label, tasks))
