"""Per-structure statistics of a label map on its image's own grid (``--statistics true``; evaluation's reference
labels too).

A structure is the voxels of one label value (as in the label map: each voxel counts for the one label it carries).
Coordinates are patient coordinates in RAS millimetres (+x Right, +y Anterior, +z Superior: the bundle's world
convention, as every affine in it; DICOM's LPS values are x and y negated) of voxel centres: the bounding box is the
smallest RAS-axis-aligned box holding every voxel centre of the structure, the centre of mass their mean.
Intensity statistics are of the input's own values (HU for CT, the PET input's values, SUV when it is SUV); ``std``
is the population standard deviation, the percentiles interpolate linearly (numpy's default).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..io.atomic import atomic_text, unused_path
from .case import Case

INTENSITY_FIELDS = ("mean", "median", "std", "min", "max", "p5", "p95")
#: The columns of a statistics CSV (inference's batch table and evaluation's reference table).
CSV_COLUMNS = (
    "case",
    "structure",
    "label",
    "voxels",
    "volume_ml",
    "intensity_unit",
    *INTENSITY_FIELDS,
    "bbox_min_ras_mm",
    "bbox_max_ras_mm",
    "centre_of_mass_ras_mm",
)


def intensity_unit(modality: str, dicom_units: str | None = None) -> str:
    """What the input's values are: HU for CT; for PET the DICOM Units tag (GML = SUV in g/ml) or, for files, SUV (the
    bundle's PET convention, e.g. autoPET's SUV volumes); MR values have no unit (empty)."""
    if modality == "ct":
        return "HU"
    if modality == "pet":
        if dicom_units:
            return "SUV (g/ml)" if dicom_units.upper() == "GML" else dicom_units
        return "SUV"
    return ""


def dicom_units(case: Case) -> str | None:
    """The Units tag of a DICOM series (PET: BQML, GML...), or None."""
    if not case.native.dicom_files:
        return None
    import pydicom

    header = pydicom.dcmread(case.native.dicom_files[0], stop_before_pixels=True, force=True)
    return str(header.get("Units", "")) or None


def case_intensities(load: Callable[[dict], dict], case: Case) -> tuple[np.ndarray, str]:
    """The case's input values on its own grid, read again from the source by ``load`` (the inference's reading
    transforms), and their unit. Reading again costs one read per case; keeping the native image from the read to
    the write would hold one more native volume for every case in flight (read ahead, predicting, writing)."""
    image = load(dict(case.item))["image"]
    values = np.asarray(image.cpu() if hasattr(image, "cpu") else image, dtype=np.float32)
    return values.reshape(case.native.shape), intensity_unit(case.modality.name, dicom_units(case))


def _intensity(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return dict.fromkeys(INTENSITY_FIELDS)
    values = values.astype(np.float64, copy=False)
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    return {
        "mean": float(values.mean()),
        "median": float(median),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "p5": float(p5),
        "p95": float(p95),
    }


def structure_statistics(
    labels: np.ndarray,
    intensities: np.ndarray | None,
    affine: np.ndarray,
    names: Mapping[int, str],
    unit: str = "",
) -> dict[str, dict[str, Any]]:
    """Statistics of each label value in ``names`` (label map and intensities on one grid, ``affine`` voxel -> RAS),
    keyed by structure name; an absent structure has 0 voxels and no intensity or position values."""
    labels = np.asarray(labels)
    affine = np.asarray(affine, dtype=np.float64)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    boxes = ndimage.find_objects(labels.astype(np.int64, copy=False)) if labels.size else []
    result: dict[str, dict[str, Any]] = {}
    for label, name in sorted(names.items()):
        row: dict[str, Any] = {"label": int(label), "voxels": 0, "volume_ml": 0.0, "intensity_unit": unit}
        box = boxes[label - 1] if 0 < label <= len(boxes) else None
        if box is None:
            row.update(dict.fromkeys(INTENSITY_FIELDS))
            row.update(bbox_min_ras_mm=None, bbox_max_ras_mm=None, centre_of_mass_ras_mm=None)
            result[name] = row
            continue
        inside = labels[box] == label
        index = np.stack(np.nonzero(inside), axis=1) + np.asarray([s.start for s in box])
        ras = index @ affine[:3, :3].T + affine[:3, 3]
        row["voxels"] = int(len(index))
        row["volume_ml"] = row["voxels"] * voxel_ml
        row.update(_intensity(np.asarray(intensities)[box][inside]) if intensities is not None else {})
        row["bbox_min_ras_mm"] = ras.min(axis=0).tolist()
        row["bbox_max_ras_mm"] = ras.max(axis=0).tolist()
        row["centre_of_mass_ras_mm"] = ras.mean(axis=0).tolist()
        result[name] = row
    return result


def statistics_rows(case: str, statistics: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One CSV row per structure of a case."""
    return [{"case": case, "structure": name, **values} for name, values in statistics.items()]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return " ".join(f"{float(v):.6g}" for v in value)
    return str(value)


def write_statistics_csv(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike, overwrite: bool = False) -> Path:
    """The table of ``rows``; without ``overwrite`` an existing file is kept and the table gets a new name
    (``statistics_1.csv``...). Returns the path written."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(row.get(key)) for key in CSV_COLUMNS})
    target = Path(path) if overwrite else unused_path(path)
    return atomic_text(target, buffer.getvalue(), overwrite=overwrite)
