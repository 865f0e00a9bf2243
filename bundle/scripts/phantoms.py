"""Seeded synthetic phantoms for what the real sample cases cannot cover.

No package registry ships a PET volume, and the handful of real cases is far too few to check that a small
network *learns*. These generators draw simple, clearly synthetic volumes (every dataset and task name says
"synthetic") from a seeded random generator, so the same arguments always give the same arrays:

* ``make_pet_phantom``: a whole-body-like SUV map (cool body, warm liver/kidneys, hot brain and bladder) with a few
  hot lesions; only the lesions are labelled, as in autoPET.
* ``make_phantom_datasets``: two small CT-like datasets with *different* label sets whose images share structures,
  so a structure is visible in a dataset's images but annotated only by the other dataset (the partial-label
  situation Hermes is built for).

The small writers at the top (``write_nifti``, ``write_json``) write to a temporary name and rename, so an
interrupted run never leaves a half file that looks complete; the sample suite uses them too.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

MODALITIES = {"ct": 0, "pet": 1, "t1": 2, "t2": 3, "cine": 4, "mr": -1}

PHANTOM_MARKER = ".hermes_phantoms.json"
PHANTOM_VERSION = 3  # bump when the drawing changes, so folders written by older code are regenerated
PHANTOM_TASK_ID_START = 96  # far above the sample suite's ids (72-82), so both extra registries can be merged
PHANTOM_STRUCTURES = {"organ": 1, "box": 2, "marker": 3}  # values in each case's "structures" map
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
PHANTOM_HU = {"air": -1000.0, "body": 0.0, "organ": 200.0, "box": -200.0, "marker": -600.0, "noise_sd": 20.0}


# ----------------------------------------------------------------------------------------------- atomic writers
@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (same suffixes) and rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache shared between users must stay readable
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1) + "\n")
    return Path(path)


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike, dtype: Any) -> Path:
    """Write ``array`` (x, y, z index order) with a RAS ``affine`` as NIfTI-1, atomically; sform and qform both set."""
    image = nib.Nifti1Image(np.asarray(array, dtype=dtype), np.asarray(affine, dtype=np.float64))
    image.set_sform(image.affine, code=1)
    image.set_qform(image.affine, code=1)
    image.header.set_xyzt_units("mm")
    with atomic_output(path) as tmp:
        nib.save(image, tmp)
    return Path(path)


# ------------------------------------------------------------------------------------------------- geometry
def _shape3(size: int | tuple[int, int, int]) -> tuple[int, int, int]:
    shape = (size,) * 3 if isinstance(size, int) else tuple(int(s) for s in size)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"phantom size must be an int or 3 ints, each >= 8; got {size!r}")
    return shape  # type: ignore[return-value]


def centred_affine(shape: tuple[int, int, int], spacing: float) -> np.ndarray:
    """RAS affine with isotropic ``spacing`` that puts the volume centre at world (0, 0, 0)."""
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (np.asarray(shape) - 1) / 2.0
    return affine


def _world_grid(shape: tuple[int, int, int], spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    axes = [spacing * (np.arange(n) - (n - 1) / 2.0) for n in shape]
    return tuple(np.meshgrid(*axes, indexing="ij", sparse=True))  # type: ignore[return-value]


def _ellipsoid(grid, centre, semi_axes) -> np.ndarray:
    return sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, semi_axes)) <= 1.0


def _box(grid, centre, half_sizes) -> np.ndarray:
    inside = np.ones(np.broadcast_shapes(*(g.shape for g in grid)), dtype=bool)
    for g, c, h in zip(grid, centre, half_sizes):
        inside &= np.abs(g - c) <= h
    return inside


# ----------------------------------------------------------------------------------------------- PET phantom
def make_pet_phantom(rng: np.random.Generator, size: int = 96, spacing: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(suv float32, lesion label uint8, RAS affine)`` of a synthetic whole-body-like PET volume.

    Axis 0 runs right-left (+x = right in RAS world), axis 2 feet-head. Values are SUV-like: ~0.05 air,
    ~0.7 body, 2 liver, 3 kidneys, ~7 brain, ~15 bladder, 4-12 lesions; blurred by a ~6 mm PSF with
    signal-dependent noise.
    """
    shape = _shape3(size)
    x, y, z = grid = _world_grid(shape, spacing)
    half = spacing * (np.asarray(shape) - 1) / 2.0
    scale = rng.uniform(0.9, 1.05)
    activity = np.full(shape, 0.02, dtype=np.float64)

    torso_a, torso_b = 0.85 * half[0] * scale, 0.6 * half[1] * scale
    torso = ((x / torso_a) ** 2 + (y / torso_b) ** 2 <= 1.0) & (z <= 0.35 * half[2])
    head_centre = (0.0, 0.0, 0.72 * half[2])
    head = _ellipsoid(grid, head_centre, (0.38 * half[0], 0.45 * half[1], 0.3 * half[2]))
    neck = ((x / (0.18 * half[0])) ** 2 + (y / (0.2 * half[1])) ** 2 <= 1.0) & (z > 0.3 * half[2]) & (z < 0.6 * half[2])
    body = torso | head | neck
    activity[body] = rng.uniform(0.6, 0.8)
    lungs = _ellipsoid(grid, (0.42 * torso_a, 0.0, 0.15 * half[2]), (0.3 * torso_a, 0.55 * torso_b, 0.2 * half[2]))
    lungs |= _ellipsoid(grid, (-0.42 * torso_a, 0.0, 0.15 * half[2]), (0.3 * torso_a, 0.55 * torso_b, 0.2 * half[2]))
    activity[lungs & torso] = 0.3
    liver = _ellipsoid(grid, (0.4 * torso_a, 0.1 * torso_b, -0.15 * half[2]), (0.35 * torso_a, 0.5 * torso_b, 0.14 * half[2]))
    activity[liver & torso] = rng.uniform(1.8, 2.4)
    for side in (-1.0, 1.0):
        kidney = _ellipsoid(grid, (side * 0.45 * torso_a, -0.45 * torso_b, -0.35 * half[2]), (0.12 * torso_a, 0.2 * torso_b, 0.09 * half[2]))
        activity[kidney & torso] = rng.uniform(2.5, 3.5)
    brain = _ellipsoid(grid, head_centre, (0.3 * half[0], 0.36 * half[1], 0.22 * half[2]))
    activity[brain] = rng.uniform(6.0, 8.0)
    bladder = _ellipsoid(grid, (0.0, 0.1 * torso_b, -0.78 * half[2]), (0.14 * torso_a, 0.2 * torso_b, 0.08 * half[2]))
    activity[bladder] = rng.uniform(10.0, 20.0)

    lesions = np.zeros(shape, dtype=bool)
    allowed = torso & ~bladder & ~_ellipsoid(grid, (0.0, 0.0, 0.0), (0.2 * torso_a, 0.2 * torso_b, 2 * half[2]))
    for _ in range(int(rng.integers(2, 5))):
        radius = rng.uniform(4.0, 10.0)
        for _attempt in range(50):
            centre = rng.uniform(-1.0, 1.0, 3) * np.array([0.7 * torso_a, 0.7 * torso_b, 0.75 * half[2]])
            centre[2] = min(centre[2], 0.3 * half[2] - radius)
            index = tuple(int(round((c + h) / spacing)) for c, h in zip(centre, half))
            if allowed[index] and not lesions[index]:
                break
        sphere = _ellipsoid(grid, centre, (radius,) * 3) & torso
        activity[sphere] = rng.uniform(4.0, 12.0)
        lesions |= sphere

    sigma_vox = (6.0 / 2.3548) / spacing  # 6 mm FWHM point spread
    blurred = ndimage.gaussian_filter(activity, sigma_vox)
    noisy = blurred + rng.normal(0.0, 1.0, shape) * 0.12 * np.sqrt(blurred * 2.0 + 0.01)
    suv = np.clip(noisy, 0.0, None).astype(np.float32)
    return suv, lesions.astype(np.uint8), centred_affine(shape, spacing)


# ------------------------------------------------------------------------------------------------ CT phantoms
def make_ct_phantom(rng: np.random.Generator, size: int | tuple[int, int, int] = 32, spacing: float = 1.5,
                    with_marker: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(HU float32, structures uint8, RAS affine)`` of a small CT-like phantom.

    ``structures`` holds every drawn structure with the values of ``PHANTOM_STRUCTURES`` (1 ellipsoid "organ",
    2 box "lesion", 3 sphere "marker" only when ``with_marker``); the structures never overlap. Every image has the
    organ and the box, whatever a dataset annotates.
    """
    shape = _shape3(size)
    grid = _world_grid(shape, spacing)
    half = spacing * (np.asarray(shape) - 1) / 2.0
    image = np.full(shape, PHANTOM_HU["air"], dtype=np.float64)
    x, y, _ = grid
    body = (x / (0.92 * half[0])) ** 2 + (y / (0.85 * half[1])) ** 2 <= 1.0
    body = np.broadcast_to(body, shape)
    image[body] = PHANTOM_HU["body"]
    structures = np.zeros(shape, dtype=np.uint8)

    def place(draw, extent: np.ndarray) -> np.ndarray:
        """Draw a shape at a random centre inside the body, not touching what was placed before."""
        occupied = ndimage.binary_dilation(structures > 0, iterations=2) | ~body
        for _attempt in range(200):
            centre = rng.uniform(-1.0, 1.0, 3) * np.maximum(0.85 * half - extent, spacing)
            mask = draw(centre)
            if mask.sum() > 8 and not (mask & occupied).any():
                return mask
        raise ValueError(f"could not place a phantom structure in a volume of size {shape}; use a larger size")

    organ_axes = rng.uniform(0.22, 0.32, 3) * half
    organ = place(lambda c: _ellipsoid(grid, c, organ_axes), organ_axes)
    structures[organ] = PHANTOM_STRUCTURES["organ"]
    box_half = rng.uniform(0.17, 0.23, 3) * half
    box = place(lambda c: _box(grid, c, box_half), box_half)
    structures[box] = PHANTOM_STRUCTURES["box"]
    if with_marker:
        radius = rng.uniform(0.2, 0.26) * float(half.min())
        marker = place(lambda c: _ellipsoid(grid, c, (radius,) * 3), np.full(3, radius))
        structures[marker] = PHANTOM_STRUCTURES["marker"]
    for name, value in PHANTOM_STRUCTURES.items():
        image[structures == value] = PHANTOM_HU[name]
    image += rng.normal(0.0, PHANTOM_HU["noise_sd"], shape)
    return image.astype(np.float32), structures, centred_affine(shape, spacing)


def phantom_registry() -> dict[str, Any]:
    """Extra task registry (schema of ``configs/task_registry.json``) for the two CT phantom datasets."""
    tasks, datasets, next_id = [], {}, PHANTOM_TASK_ID_START
    for dataset, annotated in PHANTOM_DATASETS.items():
        datasets[dataset] = {"modality": "ct", "sample_weight": 1.0, "intensity_aug_prob": 0.1,
                             "source": "synthetic (seeded CT-like phantom, scripts.phantoms)"}
        for structure, label in sorted(annotated.items(), key=lambda item: item[1]):
            tasks.append({"id": next_id, "dataset": dataset, "name": PHANTOM_TASK_NAMES[structure], "label": label})
            next_id += 1
    return {
        "description": "Synthetic CT-like phantoms for learning checks. Both datasets' images contain an ellipsoid "
                       "organ and a box lesion; synthetic_phantom_a annotates only the organ, synthetic_phantom_b "
                       "the box and a sphere marker drawn only in its images.",
        "modalities": dict(MODALITIES), "reserved_ids": [], "datasets": datasets, "tasks": tasks,
    }


def _phantom_label(structures: np.ndarray, annotated: dict[str, int]) -> np.ndarray:
    label = np.zeros_like(structures, dtype=np.uint8)
    for structure, value in annotated.items():
        label[structures == PHANTOM_STRUCTURES[structure]] = value
    return label


def _claim_folder(root: Path, marker: str, params: dict[str, Any]) -> bool:
    """Return True when ``root`` already holds this exact output; refuse a non-empty folder we did not create."""
    marker_path = root / marker
    if marker_path.is_file():
        return json.loads(marker_path.read_text()).get("params") == params
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty and was not written by this generator; choose an empty folder")
    root.mkdir(parents=True, exist_ok=True)
    return False


def make_phantom_datasets(root: str | os.PathLike, n_cases: int = 4, size: int | tuple[int, int, int] = 32,
                          seed: int = 0, n_holdout: int = 2, spacing: float = 1.5) -> dict[str, Any]:
    """Write the two synthetic CT phantom datasets under ``root``; return their datalist and registry paths.

    Each dataset gets ``n_cases`` training and ``n_holdout`` validation cases. Datalist items carry, besides
    ``image``/``label``/``dataset``, a ``structures`` map (values in ``PHANTOM_STRUCTURES``) so a check can score a
    structure in images whose dataset does not annotate it. Case ``i`` of dataset ``d`` depends only on
    ``(seed, d, i)``. A second call with the same arguments reuses the files.
    """
    if n_cases < 1 or n_holdout < 1:
        raise ValueError(f"n_cases and n_holdout must be >= 1; got {n_cases}, {n_holdout}")
    root = Path(root)
    shape = _shape3(size)
    params = {"version": PHANTOM_VERSION, "n_cases": n_cases, "size": list(shape), "seed": seed, "n_holdout": n_holdout, "spacing": spacing}
    result = {"root": str(root), "datalist": str(root / "datalist.json"), "task_registry": str(root / "task_registry.json"),
              "structure_labels": dict(PHANTOM_STRUCTURES)}
    if _claim_folder(root, PHANTOM_MARKER, params) and all(Path(result[k]).is_file() for k in ("datalist", "task_registry")):
        return result
    datalist: dict[str, list[dict[str, str]]] = {"training": [], "validation": []}
    for dataset_index, (dataset, annotated) in enumerate(PHANTOM_DATASETS.items()):
        for case_index in range(n_cases + n_holdout):
            rng = np.random.default_rng([seed, dataset_index, case_index])
            image, structures, affine = make_ct_phantom(rng, shape, spacing, with_marker="marker" in annotated)
            stem = f"{dataset}/case{case_index:03d}"
            write_nifti(image, affine, root / f"{stem}_image.nii.gz", np.float32)
            write_nifti(_phantom_label(structures, annotated), affine, root / f"{stem}_label.nii.gz", np.uint8)
            write_nifti(structures, affine, root / f"{stem}_structures.nii.gz", np.uint8)
            item = {"image": f"{stem}_image.nii.gz", "label": f"{stem}_label.nii.gz", "dataset": dataset,
                    "structures": f"{stem}_structures.nii.gz"}
            datalist["training" if case_index < n_cases else "validation"].append(item)
    write_json(phantom_registry(), result["task_registry"])
    write_json(datalist, result["datalist"])
    write_json({"params": params}, root / PHANTOM_MARKER)
    return result
