"""The bundle's one NIfTI writer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .atomic import atomic_write


def write_nifti(
    path: str | os.PathLike,
    array: Any,
    affine: Any,
    dtype: Any = None,
    like: nib.Nifti1Header | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``array`` (voxel order of ``affine``, RAS world) as NIfTI-1, atomically.

    ``like``: the header of the NIfTI input the output belongs to (same grid); its qform/sform and their codes and
    units are kept, so a label map says what its image says. Without it both forms are ``affine`` with code 1
    (scanner) and units mm.
    """
    data = np.asarray(array, dtype=dtype) if dtype is not None else np.asarray(array)
    affine = np.asarray(affine, dtype=np.float64)
    image = nib.Nifti1Image(data, affine)
    if like is not None:  # the input's own matrices and codes (they may differ from each other)
        qform, qcode = like.get_qform(coded=True)
        sform, scode = like.get_sform(coded=True)
        if int(qcode) or int(scode):
            image.set_qform(qform if int(qcode) else None, code=int(qcode))
            image.set_sform(sform if int(scode) else None, code=int(scode))
        image.header.set_xyzt_units(*like.get_xyzt_units())
    else:
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        image.header.set_xyzt_units("mm")
    image.set_data_dtype(data.dtype)
    return atomic_write(path, lambda tmp: nib.save(image, tmp), overwrite=overwrite)
