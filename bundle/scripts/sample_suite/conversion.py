"""Turning the fetched files into the suite's NIfTI cases, with the geometry MONAI reads from them.

NRRD (pyradiomics cases) and NIfTI (Colin27) are read by MONAI's own readers, which give the RAS affine MONAI's
transforms will use (NRRD's LPS world is turned into RAS by ``NrrdReader``), and written by the bundle's one NIfTI
writer; no affine is computed here. Colin27's AAL atlas regions are merged into the structure groups of
``catalogue.AAL_GROUPS``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nrrd
import numpy as np
from monai.data import NibabelReader, NrrdReader

from ..io.nifti import write_nifti
from .catalogue import AAL_GROUPS
from .errors import SampleDataError

#: NRRD world spaces ``NrrdReader`` maps to RAS correctly (it converts exactly the first one and keeps the second).
NRRD_SPACES = ("left-posterior-superior", "right-anterior-superior")


def read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The array (in the file's own data type and axis order) and the RAS affine ``NrrdReader`` gives for ``path``."""
    try:
        loaded = NrrdReader().read(str(path))  # pynrrd's array and header, not converted yet
    except (OSError, ValueError, nrrd.NRRDError) as err:
        raise SampleDataError(f"{path}: cannot read as NRRD ({err})") from err
    header: dict[str, Any] = loaded.header
    if header.get("dimension") != 3 or "space directions" not in header or "space origin" not in header:
        raise SampleDataError(f"{path}: not a 3D NRRD with 'space directions' and 'space origin'")
    if header.get("space") not in NRRD_SPACES:
        raise SampleDataError(f"{path}: unsupported NRRD space {header.get('space')!r} (expected one of {NRRD_SPACES})")
    array, meta = NrrdReader(dtype=loaded.array.dtype).get_data(loaded)
    return np.asarray(array), _checked_affine(
        meta["affine"], path, "'space directions' must be three finite, " "independent 3-vectors"
    )


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The array (stored data type) and the affine ``NibabelReader`` gives for a NIfTI file."""
    reader = NibabelReader()
    try:
        array, meta = reader.get_data(reader.read(str(path)))
    except (OSError, ValueError) as err:
        raise SampleDataError(f"{path}: cannot read as NIfTI ({err})") from err
    return np.asarray(array), _checked_affine(meta["affine"], path, "the affine is singular or not finite")


def _checked_affine(affine: Any, path: Path, problem: str) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise SampleDataError(f"{path}: {problem}")
    return affine


def _same_grid(label: np.ndarray, label_affine: np.ndarray, image: np.ndarray, image_affine: np.ndarray) -> bool:
    return label.shape == image.shape and np.allclose(label_affine, image_affine, atol=1e-4)


def convert_nrrd_pair(
    image_path: Path, label_path: Path, image_out: Path, label_out: Path, label_values: dict[int, int]
) -> None:
    """Write a NRRD image/label pair as NIfTI (image keeps its type, label uint8 remapped by ``label_values``).

    Nothing is written unless both files read, share one grid and the label has only the expected values.
    """
    image, affine = read_nrrd(image_path)
    label, label_affine = read_nrrd(label_path)
    if not _same_grid(label, label_affine, image, affine):
        raise SampleDataError(f"{label_path}: label grid {label.shape} does not match image {image_path} {image.shape}")
    unexpected = sorted(set(np.unique(label).tolist()) - set(label_values) - {0})
    if unexpected:
        raise SampleDataError(f"{label_path}: unexpected label values {unexpected} (expected {sorted(label_values)})")
    remapped = np.zeros(label.shape, dtype=np.uint8)
    for source_value, target_value in label_values.items():
        remapped[label == source_value] = target_value
    write_nifti(image_out, image, affine)
    write_nifti(label_out, remapped, affine, np.uint8)


def read_aal_names(path: Path) -> dict[int, str]:
    """Parse ``aal.nii.txt`` lines ``<value> <name> <code>`` into {value: name}."""
    names: dict[int, str] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            names[int(fields[0])] = fields[1]
    if not names:
        raise SampleDataError(f"{path}: no '<value> <name>' lines found")
    return names


def aal_group_of(region: str) -> int:
    """Group value (1-based index into ``AAL_GROUPS``) of an AAL region name; ``SampleDataError`` if none fits."""
    base = re.sub(r"_[LR]$", "", region)
    matches = [index for index, (_, pattern) in enumerate(AAL_GROUPS, start=1) if re.fullmatch(pattern, base)]
    if len(matches) != 1:
        raise SampleDataError(f"AAL region {region!r} matches {len(matches)} structure groups; fix AAL_GROUPS")
    return matches[0]


def convert_colin27(templates: Path, image_out: Path, label_out: Path) -> dict[str, list[str]]:
    """Write Colin27 T1 and its AAL regions grouped by ``AAL_GROUPS``; return {group: [AAL regions]}."""
    image, affine = read_nifti(templates / "ch2.nii.gz")
    regions, atlas_affine = read_nifti(templates / "aal.nii.gz")
    if not _same_grid(regions, atlas_affine, image, affine):
        raise SampleDataError(f"{templates}: aal.nii.gz is not on the grid of ch2.nii.gz")
    names = read_aal_names(templates / "aal.nii.txt")
    regions = regions.astype(np.int64)
    unnamed = sorted(set(np.unique(regions).tolist()) - set(names) - {0})
    if unnamed:
        raise SampleDataError(f"{templates / 'aal.nii.gz'}: values {unnamed} have no name in aal.nii.txt")
    lookup = np.zeros(max(names) + 1, dtype=np.uint8)
    for value, region in names.items():
        lookup[value] = aal_group_of(region)
    write_nifti(image_out, image, affine)
    write_nifti(label_out, lookup[regions], atlas_affine, np.uint8)
    groups: dict[str, list[str]] = {name: [] for name, _ in AAL_GROUPS}
    for value, region in sorted(names.items()):
        groups[AAL_GROUPS[lookup[value] - 1][0]].append(region)
    return groups
