"""Per-task segmentation metrics (Dice, HD95, NSD) with explicit empty-mask conventions.

MONAI's metric functions do the geometry (edge extraction, Euclidean distance transforms in millimetres
with the voxel spacing); this module only decides what happens when a mask is empty, because Hermes
evaluates partially annotated datasets where a structure may be absent from a case:

* label present, prediction present -> Dice, HD95 (mm), NSD computed normally; status ``ok``.
* label present, prediction empty   -> Dice 0, NSD 0, HD95 NaN; status ``missed`` (an HD95 failure).
* label empty, prediction present   -> Dice 0, NSD 0, HD95 NaN; status ``false_positive``.
* both empty                        -> Dice 1, NSD 1, HD95 NaN; status ``absent``.

Summaries (see ``tables.py``) average only cases whose label contains the structure, as the published
Hermes validation does; ``false_positive`` and ``absent`` rows are kept in the CSV and counted separately.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

STATUS_OK = "ok"
STATUS_MISSED = "missed"
STATUS_FALSE_POSITIVE = "false_positive"
STATUS_ABSENT = "absent"


@dataclass(frozen=True)
class MaskScores:
    """Scores of one binary prediction against one binary label."""

    dice: float
    hd95_mm: float
    nsd: float
    status: str
    label_voxels: int
    pred_voxels: int

    def as_dict(self) -> dict:
        return asdict(self)


def _as_bool_tensor(mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask.detach())
    return tensor.cpu() > 0.5 if tensor.is_floating_point() else tensor.cpu() != 0


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    values = tuple(float(s) for s in np.asarray(spacing, dtype=float).reshape(-1))
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"voxel spacing must hold {ndim} positive finite values (mm), got {spacing!r}")
    return values


def score_masks(
    pred: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    nsd_tolerance_mm: float = 2.0,
    nsd_use_subvoxels: bool = True,
) -> list[MaskScores]:
    """Score ``pred`` against ``label``, both (n, *spatial) binary masks, one channel per task.

    ``spacing`` is the voxel size in mm of the grid both masks live on; HD95 and the NSD tolerance are in mm.
    ``nsd_use_subvoxels`` selects the surfel-area NSD of Nikolov et al. (DeepMind surface-distance);
    False counts boundary voxels instead.
    """
    pred_t, label_t = _as_bool_tensor(pred), _as_bool_tensor(label)
    if pred_t.shape != label_t.shape:
        raise ValueError(f"prediction shape {tuple(pred_t.shape)} differs from label shape {tuple(label_t.shape)}")
    if pred_t.ndim < 3:
        raise ValueError(f"masks must be (tasks, *spatial) with 2 or 3 spatial dims, got shape {tuple(pred_t.shape)}")
    if not (nsd_tolerance_mm >= 0 and math.isfinite(nsd_tolerance_mm)):
        raise ValueError(f"NSD tolerance must be a finite non-negative number of mm, got {nsd_tolerance_mm!r}")
    spacing_mm = _check_spacing(spacing, pred_t.ndim - 1)

    pred_f, label_f = pred_t[None].float(), label_t[None].float()
    dice = compute_dice(pred_f, label_f, include_background=True, ignore_empty=False)[0]
    label_voxels = label_t.flatten(1).sum(1)
    pred_voxels = pred_t.flatten(1).sum(1)

    scores = []
    for c in range(pred_t.shape[0]):
        has_label, has_pred = bool(label_voxels[c]), bool(pred_voxels[c])
        hd95, nsd = math.nan, float(has_label == has_pred)
        if has_label and has_pred:
            status = STATUS_OK
            one_pred, one_label = pred_f[:, c : c + 1], label_f[:, c : c + 1]
            with warnings.catch_warnings():  # MONAI's own deprecated-argument notice, not ours
                warnings.simplefilter("ignore", FutureWarning)
                hd95 = float(
                    compute_hausdorff_distance(
                        one_pred, one_label, include_background=True, percentile=95, spacing=spacing_mm
                    )[0, 0]
                )
                nsd = float(
                    compute_surface_dice(
                        one_pred,
                        one_label,
                        [float(nsd_tolerance_mm)],
                        include_background=True,
                        spacing=spacing_mm,
                        use_subvoxels=nsd_use_subvoxels,
                    )[0, 0]
                )
        elif has_label:
            status = STATUS_MISSED
        elif has_pred:
            status = STATUS_FALSE_POSITIVE
        else:
            status = STATUS_ABSENT
        scores.append(
            MaskScores(
                dice=float(dice[c]),
                hd95_mm=hd95,
                nsd=nsd,
                status=status,
                label_voxels=int(label_voxels[c]),
                pred_voxels=int(pred_voxels[c]),
            )
        )
    return scores
