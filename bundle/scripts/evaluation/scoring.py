"""Score one case in the two spaces the evaluation reports.

* resampled space: the thresholded probabilities on the network's grid (RAS, 1.5 mm) against the label resampled
  onto that grid with nearest neighbour; this is where the published Hermes evaluation measures;
* native space: the probabilities brought back to the image's own grid exactly as inference brings them
  (``scripts.cases.predict.CasePredictor.native_channels``), thresholded, against the label file as stored.

Each space uses its own voxel spacing (column norms of the affine) for HD95 and NSD.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage, ResampleToMatch
from monai.utils import convert_to_tensor

from ..cases.case import Case
from ..cases.predict import CasePredictor
from ..data.transforms import LabelToTaskChannelsd
from ..registry import TaskRegistry
from .cases import LABEL_FILE_KEY
from .metrics import MaskScores, score_masks


def spacing_of(affine: Any) -> tuple[float, float, float]:
    """Voxel size (mm) along each array axis: the column norms of the affine's 3×3 part."""
    matrix = np.asarray(convert_to_tensor(affine, track_meta=False).cpu(), dtype=float)[:3, :3]
    return tuple(float(v) for v in np.linalg.norm(matrix, axis=0))


def _ints(values: Any) -> list[int]:
    return [int(v) for v in torch.as_tensor(np.asarray(values, dtype=np.int64)).reshape(-1).tolist()]


class CaseScorer:
    """Dice, HD95 and NSD of every task of one case, in native and resampled space.

    Args:
        registry: names the tasks in the rows.
        threshold: probability above which a voxel belongs to a task (0.5, as inference).
        nsd_tolerance_mm: NSD tolerance in mm.
        nsd_use_subvoxels: surfel-area NSD (True) or boundary-voxel NSD (False).
        reader: the image reader of the inference preprocessing (an instance, class or dotted name, as ``LoadImage``
            takes it), so labels are read with the same geometry conventions as images (MONAI's defaults when None).
    """

    def __init__(
        self,
        registry: TaskRegistry,
        threshold: float = 0.5,
        nsd_tolerance_mm: float = 2.0,
        nsd_use_subvoxels: bool = True,
        reader: Any = None,
    ) -> None:
        self.registry = registry
        self.threshold = float(threshold)
        self.nsd_tolerance_mm = float(nsd_tolerance_mm)
        self.nsd_use_subvoxels = bool(nsd_use_subvoxels)
        self._load_label = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)
        self._to_model_grid = ResampleToMatch(mode="nearest", padding_mode="zeros")
        self._split = LabelToTaskChannelsd()

    def load_label(self, path: str) -> MetaTensor:
        """The label map (1 × native spatial) as stored; trailing singleton dimensions are dropped."""
        label = self._load_label(path)
        while label.ndim > 4 and label.shape[-1] == 1:
            label = label[..., 0]
        if label.ndim != 4 or label.shape[0] != 1:
            raise ValueError(f"label must be one 3D label map, got shape {tuple(label.shape)}")
        return label

    def native_prediction(self, case: Case, probs: torch.Tensor, predictor: CasePredictor) -> np.ndarray:
        """Binary masks (n × native spatial) from probabilities on the network grid, brought back as inference does."""
        chunks = [(native > self.threshold).cpu().numpy() for native in predictor.native_channels(case, probs)]
        return np.concatenate(chunks, axis=0)

    def score(self, case: Case, probs: torch.Tensor, predictor: CasePredictor) -> list[dict[str, Any]]:
        """Rows for every task of the case, given its per-task ``probs`` (network grid, any device)."""
        item = case.item
        task_ids = _ints(item["task_index"])
        label_values = _ints(item[self._split.label_values_key])
        image = case.image.cpu()
        if probs.shape[0] != len(task_ids) or tuple(probs.shape[1:]) != tuple(image.shape[1:]):
            raise ValueError(
                f"prediction shape {tuple(probs.shape)} does not fit {len(task_ids)} task(s) on the "
                f"network grid {tuple(image.shape[1:])}"
            )
        label_map = self.load_label(item[LABEL_FILE_KEY])
        native_shape = tuple(case.native.shape)
        native_affine = np.asarray(case.native.affine, dtype=float)
        label_affine = np.asarray(label_map.affine, dtype=float)
        if tuple(label_map.shape[1:]) != native_shape:
            raise ValueError(f"label size {tuple(label_map.shape[1:])} differs from its image's size {native_shape}")
        if not np.allclose(label_affine, native_affine, atol=1e-3):
            raise ValueError(
                "label and image lie on different grids (affines differ: "
                f"{np.round(label_affine, 3).tolist()} vs {np.round(native_affine, 3).tolist()})"
            )

        label_on_model = self._to_model_grid(label_map.float(), img_dst=image)
        native_spacing, model_spacing = spacing_of(label_affine), spacing_of(image.affine)
        native_pred = self.native_prediction(case, probs, predictor)
        probs = probs.cpu()
        scored: dict[str, list[MaskScores]] = {
            "native": score_masks(
                native_pred,
                self._split.split(label_map, label_values),
                native_spacing,
                self.nsd_tolerance_mm,
                self.nsd_use_subvoxels,
            ),
            "resampled": score_masks(
                probs > self.threshold,
                self._split.split(label_on_model, label_values),
                model_spacing,
                self.nsd_tolerance_mm,
                self.nsd_use_subvoxels,
            ),
        }
        rows = []
        for channel, task_id in enumerate(task_ids):
            row = {
                "case": item["case"],
                "image": item["image"],
                "dataset": item["dataset"],
                "modality": case.modality.name,
                "task_id": task_id,
                "task": self.registry.task_by_id(task_id).name,
                "native_spacing_mm": native_spacing,
                "resampled_spacing_mm": model_spacing,
                "error": "",
            }
            for space, scores in scored.items():
                row.update({f"{space}_{key}": value for key, value in scores[channel].as_dict().items()})
            rows.append(row)
        return rows
