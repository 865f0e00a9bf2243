"""The JSON sidecar of a label map: what each label value means and how the result was made."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .task_selection import TaskGroup
from .writers import NativeGrid, OutputPaths

MERGE_RULE = "mean probability of the listed tasks"
LABEL_RULE = "each voxel: the label whose probability is highest and above the threshold; 0 = none"


def sidecar_content(
    case: dict[str, Any],
    groups: Sequence[TaskGroup],
    labels: np.ndarray,
    modality: dict[str, Any],
    weights: dict[str, str],
    paths: OutputPaths,
    grid: NativeGrid,
    settings: dict[str, Any],
) -> dict[str, Any]:
    counts = np.bincount(labels.reshape(-1), minlength=len(groups) + 1)
    label_table = {"0": {"name": "background"}}
    for group in groups:
        label_table[str(group.label)] = {**group.as_json(), "voxels": int(counts[group.label])}
    return {
        "input": str(Path(case["image"]).resolve()),
        "input_format": case.get("format"),
        "label_map": paths.label_map.name,
        "labels": label_table,
        "label_rule": LABEL_RULE,
        "merge_rule": MERGE_RULE,
        "task_masks": {str(k): p.name for k, p in paths.masks.items()},
        "probabilities": {str(k): p.name for k, p in paths.probabilities.items()},
        "overlay": paths.overlay.name if paths.overlay else None,
        "modality": modality,
        "weights": weights,
        "geometry": {"shape": list(grid.shape), "affine_ras": np.round(grid.affine, 6).tolist()},
        "settings": settings,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
