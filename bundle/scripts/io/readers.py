"""One ``LoadImaged`` reader for every supported input, picked by what the path is.

``LoadImage`` falls back to MONAI's default readers when the configured reader's ``read`` raises, so a folder our
DICOM reader rejects (two series, uneven slices) would be read anyway by another reader, and a corrupt file's
error would be buried under every reader's refusal. This reader therefore never fails in ``read``: it keeps the
error and raises it from ``get_data``, which ``LoadImage`` does not retry.

One instance serves every thread of a run (read-ahead workers, and writers reading an input's values again for
``--statistics``): which reader read an image is remembered per thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.data import ImageReader, NibabelReader, NrrdReader

from ..errors import CaseError
from .dicom import DicomSeriesReader


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class InputImageReader(ImageReader):
    """DICOM series folder -> :class:`DicomSeriesReader`, ``*.nrrd`` -> ``NrrdReader``, else ``NibabelReader``."""

    def __init__(self) -> None:
        super().__init__()
        self.readers = {"dicom": DicomSeriesReader(), "nrrd": NrrdReader(), "nifti": NibabelReader()}
        self._local = threading.local()  # .last: the reader of this thread's last read

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers started by spawn/forkserver get a pickled copy
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    @staticmethod
    def kind(path: str | os.PathLike) -> str:
        if Path(path).is_dir():
            return "dicom"
        return "nrrd" if str(path).lower().endswith(".nrrd") else "nifti"

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        return True

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        path = data if isinstance(data, (str, os.PathLike)) else data[0]
        self._local.last = self.readers[self.kind(path)]
        try:
            if self.kind(path) == "nifti":  # before MONAI's reader patches the header over
                check_nifti_header(nib.load(path))
            return self._local.last.read(data, **kwargs)
        except Exception as err:  # raised again from get_data, see the module docstring
            return _Failed(err)

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        if isinstance(img, _Failed):
            raise img.error
        return getattr(self._local, "last", self.readers["nifti"]).get_data(img)


def check_nifti_header(image: nib.Nifti1Image) -> None:
    """Refuse what MONAI's reader would otherwise patch over silently: no voxels, or a coded sform that places nothing
    (an all-zero or degenerate matrix: the reader falls back to the voxel sizes while every output would keep the
    broken sform)."""
    source = image.get_filename() or "image"
    shape = tuple(int(s) for s in image.header.get_data_shape())
    if not shape or 0 in shape:
        raise CaseError(f"{source}: image has no voxels (size {' x '.join(map(str, shape)) or 'empty'} in its header)")
    sform, code = image.header.get_sform(coded=True)
    if int(code) > 0 and (sform is None or abs(float(np.linalg.det(np.asarray(sform)[:3, :3]))) < 1e-9):
        raise CaseError(
            f"{source}: the header's sform (code {int(code)}) is all zeros or degenerate, so the image has no valid "
            "position in space; fix the sform, or set its code to 0 to use the qform"
        )
