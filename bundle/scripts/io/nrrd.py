"""The bundle's one NRRD writer (``--output_format nrrd``).

An output of an NRRD input keeps the input's own ``space``, ``space directions`` and ``space origin`` (so 3D Slicer
overlays it on the input exactly as the input was stored); any other input's grid is written in LPS, as Slicer writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: ``--compression`` -> gzip level of the NRRD outputs (pynrrd writes with zlib).
NRRD_GZIP_LEVELS = {"fast": 1, "default": 6}
KEPT_FIELDS = ("space", "space directions", "space origin", "measurement frame")


def nrrd_space(affine: Any, like: dict[str, Any] | None = None) -> dict[str, Any]:
    """The space fields of an output on the grid ``affine`` (voxel -> RAS): the input's own when ``like`` (an NRRD
    input's header) has them, else LPS fields from ``affine``."""
    if like is not None and all(key in like for key in KEPT_FIELDS[:3]):
        return {key: like[key] for key in KEPT_FIELDS if key in like}
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    return {"space": "left-posterior-superior", "space directions": lps[:3, :3].T, "space origin": lps[:3, 3]}


def write_nrrd(
    path: str | os.PathLike,
    array: Any,
    affine: Any,
    like: dict[str, Any] | None = None,
    compression: str = "fast",
    overwrite: bool = True,
) -> Path:
    """Write ``array`` (voxel order of ``affine``) as a gzip NRRD, atomically."""
    import nrrd

    data = np.asarray(array)
    header = {**nrrd_space(affine, like), "kinds": ["domain"] * data.ndim, "encoding": "gzip"}
    level = NRRD_GZIP_LEVELS.get(compression, 6)
    return atomic_write(
        path, lambda tmp: nrrd.write(str(tmp), data, header, compression_level=level), overwrite=overwrite
    )
