"""Hermes training loss: masked multi-task BCE + adaptive Dice on the task channels, plus a small modality loss.

Every (sample, task) pair is one binary problem. Pairs whose task id is the null task -1 (padding of datasets with
fewer tasks) get weight 0, and tasks a dataset does not annotate never appear in its list, so partially labelled
datasets train only what they annotate. Terms are computed in float32 even under autocast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Added to the denominators of the adaptive Dice (the published value; larger values damp bf16 noise).
DICE_SMOOTH = 1e-6
#: Bounds of the adaptive false-positive weight alpha.
ALPHA_RANGE = (0.2, 0.8)


def _plain_float(tensor: torch.Tensor) -> torch.Tensor:
    """A float32 plain tensor (MetaTensor metadata dropped: a loss is a number, not an image)."""
    if hasattr(tensor, "as_tensor"):
        tensor = tensor.as_tensor()
    return tensor.float()


def _pair_weights(task_index: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """1 for real (sample, task) pairs, 0 for null -1 entries, flattened to B*n."""
    task_index = task_index.reshape(shape[0], -1)
    if task_index.shape[1] != shape[1]:
        raise ValueError(
            f"task_index has {task_index.shape[1]} entries per sample but the logits have {shape[1]} channels"
        )
    return (task_index >= 0).reshape(-1).float()


def _weighted_mean(per_pair: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over real pairs; 0 (still differentiable) when a batch has none."""
    return (per_pair * weights).sum() / weights.sum().clamp_min(1.0)


def masked_bce_loss(logits: torch.Tensor, label: torch.Tensor, task_index: torch.Tensor) -> torch.Tensor:
    """BCE with logits averaged over voxels per (sample, task) pair, then over the non-null pairs.

    logits, label: B × n × spatial; task_index: B × n global task ids with -1 for padding.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits, target = _plain_float(logits), _plain_float(label)
        weights = _pair_weights(task_index, logits.shape)
        per_voxel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        per_pair = per_voxel.reshape(weights.numel(), -1).mean(dim=1)
        return _weighted_mean(per_pair, weights)


def adaptive_dice_loss(logits: torch.Tensor, label: torch.Tensor, task_index: torch.Tensor) -> torch.Tensor:
    """1 - adaptive Tversky Dice per (sample, task) pair, averaged over the non-null pairs.

    With p = sigmoid(logits) and soft counts TP = Σ p·y, FP = Σ p·(1-y), FN = Σ (1-p)·y over voxels:
    α = clamp(FP / (FP + FN + 1e-6), 0.2, 0.8), β = 1 - α, dice = TP / (TP + α·FP + β·FN + 1e-6). The weights follow
    whichever error dominates, so a pair that over-segments is pushed harder on false positives and vice versa.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits, target = _plain_float(logits), _plain_float(label)
        weights = _pair_weights(task_index, logits.shape)
        prob = torch.sigmoid(logits).reshape(weights.numel(), -1)
        target = target.reshape(weights.numel(), -1)
        tp = (prob * target).sum(dim=1)
        fp = (prob * (1.0 - target)).sum(dim=1)
        fn = ((1.0 - prob) * target).sum(dim=1)
        alpha = torch.clamp(fp / (fp + fn + DICE_SMOOTH), *ALPHA_RANGE)
        beta = 1.0 - alpha
        dice = tp / (tp + alpha * fp + beta * fn + DICE_SMOOTH)
        return _weighted_mean(1.0 - dice, weights)


def modality_loss(modality_logits: torch.Tensor, modality_index: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the modality head, ignoring samples of unknown modality (-1); 0 if all are unknown."""
    with torch.autocast(device_type=modality_logits.device.type, enabled=False):
        logits = _plain_float(modality_logits)
        target = modality_index.reshape(-1).long()
        if target.numel() != logits.shape[0]:
            raise ValueError(f"modality_index has {target.numel()} entries for {logits.shape[0]} samples")
        if bool((target < 0).all()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, ignore_index=-1)


class HermesLoss(nn.Module):
    """Segmentation loss (BCE + adaptive Dice) + ``modality_weight`` × modality cross-entropy.

    ``loss(pred, target)`` with pred = (seg_logits, modality_logits), the output of ``HermesResUNet``, and target
    the batch's ``HermesTargets`` (``scripts.training.batch``; any sequence starting with label, task_index,
    modality_index works, its dataset index is not used here). ``seg_logits`` may
    also be a list of deep-supervision outputs (Hermes-M), weighted by ``deep_supervision_weights`` (default: all 1;
    each output must match the label's size). The detached terms of the last call are kept in ``last_terms`` for
    logging.
    """

    def __init__(self, modality_weight: float = 0.01, deep_supervision_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.modality_weight = float(modality_weight)
        self.deep_supervision_weights = list(deep_supervision_weights) if deep_supervision_weights else None
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, pred: Sequence[Any], target: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(pred) != 2 or len(target) not in (3, 4):
            raise ValueError(
                "HermesLoss expects pred = (seg_logits, modality_logits) and "
                "target = (label, task_index, modality_index[, dataset_index])"
            )
        seg_logits, modality_logits = pred
        label, task_index, modality_index = target[:3]
        outputs = list(seg_logits) if isinstance(seg_logits, (list, tuple)) else [seg_logits]
        weights = self.deep_supervision_weights or [1.0] * len(outputs)
        if len(weights) != len(outputs):
            raise ValueError(f"{len(outputs)} segmentation outputs but {len(weights)} deep_supervision_weights")
        bce = sum(w * masked_bce_loss(out, label, task_index) for w, out in zip(weights, outputs))
        dice = sum(w * adaptive_dice_loss(out, label, task_index) for w, out in zip(weights, outputs))
        mod = modality_loss(modality_logits, modality_index)
        total = bce + dice + self.modality_weight * mod
        self.last_terms = {"bce": bce.detach(), "dice": dice.detach(), "modality": mod.detach()}
        return total
