"""Two synthetic CT phantom datasets for learning checks, written as a datalist that names its own task registry.

Both datasets' images contain an ellipsoid organ and a box lesion (``scripts.phantoms.make_ct_phantom``), but
``synthetic_phantom_a`` annotates only the organ and ``synthetic_phantom_b`` only the box and a sphere marker drawn
in its images alone: a structure is visible in a dataset's images but annotated only by the other dataset, the
partial-label situation Hermes is built for. Every name says "synthetic".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SetupError
from ..io.files import write_json
from ..io.nifti import write_nifti
from ..phantoms import DRAWING_VERSION, PHANTOM_STRUCTURES, make_ct_phantom, phantom_shape
from .cache import claim_folder
from .catalogue import DATALIST_FILE, REGISTRY_FILE

#: Marker of a folder written here; holds the arguments of the last complete run (reused when they match).
PHANTOM_MARKER = ".hermes_phantoms.json"
#: Bump when the files written here change (4: the datalist names its registry, the registry has no modalities;
#: 5: the registry declares the training crop; 6: the CT drawing's larger structures, further apart in intensity).
LAYOUT_VERSION = 6
PHANTOM_TASK_ID_START = 96  # far above the sample suite's ids (72-82), so both extra registries can be merged
PHANTOM_DATASETS: dict[str, dict[str, int]] = {
    # dataset -> {structure annotated: label value}; "organ" and "box" appear in the images of both datasets
    "synthetic_phantom_a": {"organ": 1},
    "synthetic_phantom_b": {"box": 1, "marker": 2},
}
PHANTOM_TASK_NAMES = {
    "organ": "synthetic ellipsoid organ",
    "box": "synthetic box lesion",
    "marker": "synthetic sphere marker",
}


def phantom_registry() -> dict[str, Any]:
    """Extra task registry for the two datasets (the base ``configs/task_registry.json`` owns the modalities)."""
    tasks, datasets, next_id = [], {}, PHANTOM_TASK_ID_START
    for dataset, annotated in PHANTOM_DATASETS.items():
        # organ datasets: the published abdominal crop (labels' box + 20 voxels at 1.5 mm, scripts.data.spatial)
        datasets[dataset] = {
            "modality": "ct",
            "sample_weight": 1.0,
            "intensity_aug_prob": 0.1,
            "source": "synthetic (seeded CT-like phantom, scripts.phantoms)",
            "crop_margin": [20, 20, 20],
        }
        for structure, label in sorted(annotated.items(), key=lambda item: item[1]):
            tasks.append({"id": next_id, "dataset": dataset, "name": PHANTOM_TASK_NAMES[structure], "label": label})
            next_id += 1
    return {
        "description": "Synthetic CT-like phantoms for learning checks. Both datasets' images contain an ellipsoid "
        "organ and a box lesion; synthetic_phantom_a annotates only the organ, synthetic_phantom_b "
        "the box and a sphere marker drawn only in its images.",
        "datasets": datasets,
        "tasks": tasks,
    }


def phantom_label(structures: np.ndarray, annotated: dict[str, int]) -> np.ndarray:
    """The label a dataset gives a phantom: its annotated structures with its label values, the rest background."""
    label = np.zeros_like(structures, dtype=np.uint8)
    for structure, value in annotated.items():
        label[structures == PHANTOM_STRUCTURES[structure]] = value
    return label


def _complete(root: Path, params: dict[str, Any], outputs: list[str]) -> bool:
    try:
        recorded = json.loads((root / PHANTOM_MARKER).read_text(encoding="utf-8")).get("params")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False
    return recorded == params and all(Path(path).is_file() for path in outputs)


def make_phantom_datasets(
    root: str | os.PathLike,
    n_cases: int = 4,
    size: int | tuple[int, int, int] = 32,
    seed: int = 0,
    n_holdout: int = 2,
    spacing: float = 1.5,
) -> dict[str, Any]:
    """Write the two synthetic CT phantom datasets under ``root``; return {"root", "datalist", "task_registry",
    "structure_labels"}.

    Each dataset gets ``n_cases`` training and ``n_holdout`` validation cases. Datalist items carry, besides
    ``image``/``label``/``dataset``, a ``structures`` map (values in ``structure_labels``) so a check can score a
    structure in images whose dataset does not annotate it. Case ``i`` of dataset ``d`` depends only on
    ``(seed, d, i)``. A second call with the same arguments reuses the files; a user's non-empty folder is refused.
    Paths are absolute and resolved, the form ``own_registries`` gives for the datalist's registry.
    """
    if n_cases < 1 or n_holdout < 1:
        raise SetupError(f"n_cases and n_holdout must be >= 1; got {n_cases}, {n_holdout}")
    root = Path(root).expanduser().resolve()
    shape = phantom_shape(size)
    params = {
        "version": [DRAWING_VERSION, LAYOUT_VERSION],
        "n_cases": n_cases,
        "size": list(shape),
        "seed": seed,
        "n_holdout": n_holdout,
        "spacing": spacing,
    }
    result = {
        "root": str(root),
        "datalist": str(root / DATALIST_FILE),
        "task_registry": str(root / REGISTRY_FILE),
        "structure_labels": dict(PHANTOM_STRUCTURES),
    }
    claim_folder(root, PHANTOM_MARKER, "synthetic phantom")
    if _complete(root, params, [result["datalist"], result["task_registry"]]):
        return result
    write_json({"params": None}, root / PHANTOM_MARKER)  # incomplete until the end
    datalist: dict[str, Any] = {"task_registry": REGISTRY_FILE, "training": [], "validation": []}
    for dataset_index, (dataset, annotated) in enumerate(PHANTOM_DATASETS.items()):
        for case_index in range(n_cases + n_holdout):
            rng = np.random.default_rng([seed, dataset_index, case_index])
            image, structures, affine = make_ct_phantom(rng, shape, spacing, with_marker="marker" in annotated)
            stem = f"{dataset}/case{case_index:03d}"
            item = {
                "image": f"{stem}_image.nii.gz",
                "label": f"{stem}_label.nii.gz",
                "dataset": dataset,
                "structures": f"{stem}_structures.nii.gz",
            }
            write_nifti(root / item["image"], image, affine, np.float32)
            write_nifti(root / item["label"], phantom_label(structures, annotated), affine, np.uint8)
            write_nifti(root / item["structures"], structures, affine, np.uint8)
            datalist["training" if case_index < n_cases else "validation"].append(item)
    write_json(phantom_registry(), result["task_registry"])
    write_json(datalist, result["datalist"])
    write_json({"params": params}, root / PHANTOM_MARKER)
    return result
