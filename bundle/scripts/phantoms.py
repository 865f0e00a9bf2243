"""Seeded synthetic phantoms for what the real sample cases cannot cover: arrays and affines, nothing written.

No package registry ships a PET volume, and the handful of real cases is far too few to check that a small
network *learns*. These generators draw simple, clearly synthetic volumes from a seeded random generator, so the
same generator state always gives the same arrays:

* ``make_pet_phantom``: a whole-body-like SUV map (cool body, warm liver/kidneys, hot brain and bladder) with a few
  hot lesions; only the lesions are labelled, as in autoPET.
* ``make_ct_phantom``: a small CT-like volume with an ellipsoid organ, a box lesion and optionally a sphere marker,
  the structures the learning-check datasets of ``scripts.sample_suite.phantom_datasets`` annotate in part.

Writing them, naming them and registering their tasks is the sample suite's job.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import SetupError

#: Bump when the PET drawing changes, so sample-suite caches written from older drawings are rebuilt (the CT phantoms'
#: folders carry their own version: ``sample_suite.phantom_datasets.LAYOUT_VERSION``).
DRAWING_VERSION = 3
PHANTOM_STRUCTURES = {"organ": 1, "box": 2, "marker": 3}  # values in make_ct_phantom's structure map
#: Each structure stands out from the body and from its neighbours in intensity by about 300 HU or more (15 noise SDs):
#: with the organ at +200 and the box at -200 a small network long answered "not body" for both, and the learning
#: tests' box lesion needed most of their run (tests/learning.py has the measurements).
PHANTOM_HU = {"air": -1000.0, "body": 0.0, "organ": 300.0, "box": -400.0, "marker": -700.0, "noise_sd": 20.0}
#: Sizes drawn per structure, as fractions of the volume's half extent: (low, high) of the organ's semi-axes, the
#: box's half sides and the marker's radius. Large (about 2 % of a 32³ volume each) so every step has many voxels of
#: each structure to learn from.
PHANTOM_EXTENT = {"organ": (0.3, 0.4), "box": (0.26, 0.32), "marker": (0.26, 0.32)}
#: Structures are placed at least this far apart (world distance).
PLACEMENT_GAP_MM = 3.0


# ------------------------------------------------------------------------------------------------- geometry
def phantom_shape(size: int | tuple[int, int, int]) -> tuple[int, int, int]:
    """``size`` as three ints (an int means a cube); each must be >= 8 for the structures to fit."""
    shape = (size,) * 3 if isinstance(size, int) else tuple(int(s) for s in size)
    if len(shape) != 3 or min(shape) < 8:
        raise SetupError(f"phantom size must be an int or 3 ints, each >= 8; got {size!r}")
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
def make_pet_phantom(
    rng: np.random.Generator, size: int = 96, spacing: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(suv float32, lesion label uint8, RAS affine)`` of a synthetic whole-body-like PET volume.

    Axis 0 runs right-left (+x = right in RAS world), axis 2 feet-head. Values are SUV-like: ~0.05 air,
    ~0.7 body, 2 liver, 3 kidneys, ~7 brain, ~15 bladder, 4-12 lesions; blurred by a ~6 mm PSF with
    signal-dependent noise.
    """
    shape = phantom_shape(size)
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
    liver = _ellipsoid(
        grid, (0.4 * torso_a, 0.1 * torso_b, -0.15 * half[2]), (0.35 * torso_a, 0.5 * torso_b, 0.14 * half[2])
    )
    activity[liver & torso] = rng.uniform(1.8, 2.4)
    for side in (-1.0, 1.0):
        kidney = _ellipsoid(
            grid,
            (side * 0.45 * torso_a, -0.45 * torso_b, -0.35 * half[2]),
            (0.12 * torso_a, 0.2 * torso_b, 0.09 * half[2]),
        )
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
def make_ct_phantom(
    rng: np.random.Generator, size: int | tuple[int, int, int] = 32, spacing: float = 1.5, with_marker: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(HU float32, structures uint8, RAS affine)`` of a small CT-like phantom.

    ``structures`` holds every drawn structure with the values of ``PHANTOM_STRUCTURES`` (1 ellipsoid "organ",
    2 box "lesion", 3 sphere "marker" only when ``with_marker``); the structures never overlap. Every image has the
    organ and the box, whatever a dataset annotates.
    """
    shape = phantom_shape(size)
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
        occupied = (ndimage.distance_transform_edt(structures == 0, sampling=spacing) <= PLACEMENT_GAP_MM) | ~body
        for _attempt in range(200):
            centre = rng.uniform(-1.0, 1.0, 3) * np.maximum(0.85 * half - extent, spacing)
            mask = draw(centre)
            if mask.sum() > 8 and not (mask & occupied).any():
                return mask
        raise SetupError(f"could not place a phantom structure in a volume of size {shape}; use a larger size")

    organ_axes = rng.uniform(*PHANTOM_EXTENT["organ"], 3) * half
    organ = place(lambda c: _ellipsoid(grid, c, organ_axes), organ_axes)
    structures[organ] = PHANTOM_STRUCTURES["organ"]
    box_half = rng.uniform(*PHANTOM_EXTENT["box"], 3) * half
    box = place(lambda c: _box(grid, c, box_half), box_half)
    structures[box] = PHANTOM_STRUCTURES["box"]
    if with_marker:
        radius = rng.uniform(*PHANTOM_EXTENT["marker"]) * float(half.min())
        marker = place(lambda c: _ellipsoid(grid, c, (radius,) * 3), np.full(3, radius))
        structures[marker] = PHANTOM_STRUCTURES["marker"]
    for name, value in PHANTOM_STRUCTURES.items():
        image[structures == value] = PHANTOM_HU[name]
    image += rng.normal(0.0, PHANTOM_HU["noise_sd"], shape)
    return image.astype(np.float32), structures, centred_affine(shape, spacing)
