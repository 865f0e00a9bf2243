"""Read one DICOM series folder with pydicom and its exact geometry (a MONAI ``ImageReader`` for ``LoadImaged``).

MONAI's PydicomReader orders slices by InstanceNumber and derives the slice step from z alone; for tilted or
oblique series that misplaces the volume. This reader orders slices along the slice normal, checks that they
share orientation, pixel spacing and size and are evenly spaced, and builds the affine from
ImagePositionPatient / ImageOrientationPatient / PixelSpacing of the slices themselves.
Voxel order: (column, row, slice), as NIfTI tools write a DICOM series; the affine is RAS like every MONAI reader.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys

from ..errors import CaseError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_dicom_file(path: Path) -> bool:
    """True for a file with the DICOM preamble, or a ``.dcm`` file (some writers omit the preamble)."""
    if not path.is_file():
        return False
    return path.suffix.lower() == ".dcm" or pydicom.misc.is_dicom(str(path))


def dicom_files_in(folder: str | os.PathLike) -> list[Path]:
    """DICOM files directly inside ``folder`` (not in subfolders)."""
    return sorted(p for p in Path(folder).iterdir() if not p.name.startswith(".") and is_dicom_file(p))


@dataclass
class DicomSeries:
    """A series read into a (column, row, slice) float32 array with its RAS affine and key tags."""

    array: np.ndarray
    affine: np.ndarray
    modality: str
    series_uid: str
    files: list[str] = field(default_factory=list)


def _read_headers(folder: Path) -> list[tuple[Path, Any]]:
    files = dicom_files_in(folder)
    if not files:
        raise CaseError(f"{folder}: no DICOM files in this folder")
    headers = []
    for path in files:
        try:
            headers.append((path, pydicom.dcmread(path, stop_before_pixels=True, force=True)))
        except Exception as err:  # pydicom raises several types for damaged files
            raise CaseError(f"{path}: unreadable DICOM file ({type(err).__name__}: {err})") from err
    return headers


def _single_series(folder: Path, headers: list[tuple[Path, Any]]) -> list[tuple[Path, Any]]:
    by_uid: dict[str, list[tuple[Path, Any]]] = {}
    for path, ds in headers:
        by_uid.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), []).append((path, ds))
    if len(by_uid) > 1:
        listing = "; ".join(
            f"{uid or '<no SeriesInstanceUID>'} ({len(items)} files, {getattr(items[0][1], 'SeriesDescription', '')!s})"
            for uid, items in by_uid.items()
        )
        raise CaseError(
            f"{folder}: the folder holds {len(by_uid)} DICOM series, expected one: {listing}; "
            "put each series in its own folder"
        )
    return headers


def _geometry_tag(path: Path, ds: Any, keyword: str, size: int) -> np.ndarray:
    value = getattr(ds, keyword, None)
    if value is None or len(value) != size:
        raise CaseError(f"{path}: missing or malformed DICOM tag {keyword}; cannot place the slice in space")
    return np.asarray([float(v) for v in value], dtype=np.float64)


def _ordered_slices(folder: Path, headers: list[tuple[Path, Any]]) -> tuple[list[tuple[Path, Any]], np.ndarray]:
    """Slices sorted along the normal, checked for one orientation, spacing, size and an even step."""
    first_path, first = headers[0]
    orientation = _geometry_tag(first_path, first, "ImageOrientationPatient", 6)
    spacing = _geometry_tag(first_path, first, "PixelSpacing", 2)
    size = (int(getattr(first, "Rows", 0)), int(getattr(first, "Columns", 0)))
    for path, ds in headers[1:]:
        if not np.allclose(_geometry_tag(path, ds, "ImageOrientationPatient", 6), orientation, atol=1e-4):
            raise CaseError(f"{folder}: slices have different ImageOrientationPatient (e.g. {path.name})")
        if not np.allclose(_geometry_tag(path, ds, "PixelSpacing", 2), spacing, rtol=1e-4):
            raise CaseError(f"{folder}: slices have different PixelSpacing (e.g. {path.name})")
        if (int(getattr(ds, "Rows", 0)), int(getattr(ds, "Columns", 0))) != size:
            raise CaseError(f"{folder}: slices have different sizes (e.g. {path.name})")
    normal = np.cross(orientation[:3], orientation[3:])
    positions = [_geometry_tag(p, ds, "ImagePositionPatient", 3) for p, ds in headers]
    order = np.argsort([float(pos @ normal) for pos in positions], kind="stable")
    headers = [headers[i] for i in order]
    positions = np.stack([positions[i] for i in order])
    if len(headers) > 1:
        steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
        if steps.min() < 1e-3:
            raise CaseError(f"{folder}: two slices share one ImagePositionPatient; is a series repeated?")
        line = positions[0] + np.outer(np.arange(len(positions)), (positions[-1] - positions[0]) / (len(positions) - 1))
        if np.abs(positions - line).max() > 0.01 * steps.mean() + 1e-3:
            raise CaseError(
                f"{folder}: slices are not evenly spaced (steps {steps.min():.3g}-{steps.max():.3g} mm); "
                "resample the series or convert it to NIfTI first"
            )
    return headers, positions


def read_dicom_series(folder: str | os.PathLike) -> DicomSeries:
    """The single series of ``folder`` with voxel values rescaled (RescaleSlope / RescaleIntercept)."""
    folder = Path(folder)
    headers = _single_series(folder, _read_headers(folder))
    headers, positions = _ordered_slices(folder, headers)
    planes = []
    for path, _ in headers:
        try:
            ds = pydicom.dcmread(path, force=True)
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as err:  # missing pixel data, unsupported compression, truncated file
            raise CaseError(f"{path}: cannot decode the DICOM pixel data ({type(err).__name__}: {err})") from err
        if pixels.ndim != 2:
            raise CaseError(f"{path}: expected one 2D slice per file, found pixel data of shape {pixels.shape}")
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        planes.append((pixels * slope + intercept).T)  # (rows, columns) -> (column, row)
    first = headers[0][1]
    orientation = np.asarray([float(v) for v in first.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * column_spacing  # along a row: next column
    affine[:3, 1] = orientation[3:] * row_spacing  # along a column: next row
    if len(headers) > 1:
        affine[:3, 2] = (positions[-1] - positions[0]) / (len(headers) - 1)
    else:
        thickness = float(getattr(first, "SliceThickness", 1.0) or 1.0)
        affine[:3, 2] = np.cross(orientation[:3], orientation[3:]) * thickness
    affine[:3, 3] = positions[0]
    return DicomSeries(
        array=np.stack(planes, axis=-1),
        affine=LPS_TO_RAS @ affine,
        modality=str(getattr(first, "Modality", "")).upper(),
        series_uid=str(getattr(first, "SeriesInstanceUID", "")),
        files=[str(p) for p, _ in headers],
    )


class DicomSeriesReader(ImageReader):
    """``LoadImaged`` reader for a folder holding one DICOM series; adds ``dicom_modality`` to the metadata."""

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return len(names) == 1 and Path(names[0]).is_dir()

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> DicomSeries:
        folder = data if isinstance(data, (str, os.PathLike)) else data[0]
        return read_dicom_series(folder)

    def get_data(self, img: DicomSeries) -> tuple[np.ndarray, dict]:
        meta = {
            MetaKeys.AFFINE: img.affine.copy(),
            MetaKeys.ORIGINAL_AFFINE: img.affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(img.array.shape),
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
            MetaKeys.SPACE: SpaceKeys.RAS,
            "dicom_modality": img.modality,
            "dicom_series_uid": img.series_uid,
            "dicom_files": list(img.files),  # in slice order: what a DICOM SEG of this series references
        }
        return img.array, meta
