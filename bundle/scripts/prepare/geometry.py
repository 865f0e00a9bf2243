"""Reading NIfTI volumes, comparing an image's and a label's grids, and a true reorientation.

The published preparation set each header's direction to identity and left the voxels where they were (a header
rewrite that moves the anatomy); here the voxels are permuted and flipped together with the affine, so every voxel
keeps its world position, and oblique rotations stay in the affine (nothing is resampled).
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from .cases import CaseProblem, Volume

#: The voxel order prepared files are stored in (nibabel's canonical RAS+); training reorients to its own code anyway.
STORED_AXCODES = ("R", "A", "S")


def read_nifti(path: str | os.PathLike, frame: int | None = None) -> Volume:
    """A 3D NIfTI volume (or one frame of a 4D one); any reading problem is one ``CaseProblem`` naming the file."""
    try:
        image = nib.load(str(path))
        data = image.dataobj[..., frame] if frame is not None else image.dataobj
        array = np.asanyarray(data)
    except Exception as err:  # nibabel raises several types for truncated or foreign files
        raise CaseProblem(f"{path} cannot be read as NIfTI ({type(err).__name__}: {err})") from err
    array = array.reshape(array.shape[:3] + tuple(n for n in array.shape[3:] if n != 1))
    if array.ndim != 3:
        raise CaseProblem(f"{path} holds a {array.ndim}D array of shape {array.shape}; expected one 3D volume")
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    return Volume(array, np.asarray(image.affine, dtype=np.float64))


def frames_of(path: str | os.PathLike) -> int:
    """Time frames of a 4D NIfTI file (1 for a 3D file)."""
    try:
        shape = nib.load(str(path)).shape
    except Exception as err:
        raise CaseProblem(f"{path} cannot be read as NIfTI ({type(err).__name__}: {err})") from err
    return int(shape[3]) if len(shape) > 3 else 1


def with_spacing(affine: np.ndarray, spacing: list[float]) -> np.ndarray:
    """``affine`` with its voxel sizes replaced (directions and origin kept): a header correction, as ITK's
    ``SetSpacing`` does it."""
    fixed = np.array(affine, dtype=np.float64)
    directions = fixed[:3, :3] / np.linalg.norm(fixed[:3, :3], axis=0)
    fixed[:3, :3] = directions * np.asarray(spacing, dtype=np.float64)
    return fixed


def grid_difference(shape: tuple[int, ...], affine: np.ndarray, other: np.ndarray) -> float:
    """Largest distance (mm) between where the two affines put the corners of a grid of ``shape``."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape[:3]], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    return float(np.linalg.norm((affine @ corners - other @ corners)[:3], axis=0).max())


def check_same_grid(image: Volume, label: Volume) -> Volume:
    """The label on the image's grid: same size, and affines within a tenth of a voxel at every corner.

    Within that tolerance the label takes the image's affine (float noise between two headers); beyond it the case
    is refused, never silently re-gridded.
    """
    if image.array.shape != label.array.shape:
        raise CaseProblem(f"image size {image.array.shape} differs from label size {label.array.shape}")
    difference = grid_difference(image.array.shape, image.affine, label.affine)
    tolerance = 0.1 * float(image.spacing.min())
    if difference > tolerance:
        raise CaseProblem(
            f"the label's geometry differs from the image's: its grid is {difference:.3g} mm away at a corner "
            f"(allowed {tolerance:.3g} mm); image spacing {np.round(image.spacing, 4).tolist()}, label spacing "
            f"{np.round(label.spacing, 4).tolist()}"
        )
    return Volume(label.array, image.affine.copy())


def reorient(volume: Volume, axcodes: tuple[str, str, str] = STORED_AXCODES) -> Volume:
    """The same voxels in the axis order ``axcodes`` (closest axes; flips and permutations only)."""
    current = nib.orientations.io_orientation(volume.affine)
    transform = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt(axcodes))
    array = nib.orientations.apply_orientation(volume.array, transform)
    affine = volume.affine @ nib.orientations.inv_ornt_aff(transform, volume.array.shape)
    return Volume(np.ascontiguousarray(array), affine)
