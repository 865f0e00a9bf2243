"""KiTS19 (Kidney Tumor Segmentation Challenge 2019), 210 labelled CT volumes.

Release: the ``kits19`` repository's data as its ``get_imaging`` script leaves it (github.com/neheller/kits19, the
"interpolated" originals): ``data/case_NNNNN/imaging.nii.gz`` and ``segmentation.nii.gz``, cases 0-209 labelled
(210-299 have no labels and are not used). Labels: 1 kidney, 2 tumour. The volumes are stored slice-first with a
non-identity direction; they are truly reoriented like every case.
"""

from __future__ import annotations

from pathlib import Path

from ..cases import Found
from .common import load_pair, pairs

DATASETS = ("kits",)
RELEASE = "KiTS19 (github.com/neheller/kits19 data/): case_NNNNN/imaging.nii.gz and segmentation.nii.gz"
load = load_pair


def find(src: Path, dataset: str) -> Found:
    images, labels = {}, {}
    for path in sorted(src.rglob("imaging.nii.gz")):
        folder = path.parent
        if folder.name.startswith("case_") and folder.name[5:].isdigit():
            key = str(int(folder.name[5:]))
            images[key] = path
            if (folder / "segmentation.nii.gz").is_file():
                labels[key] = folder / "segmentation.nii.gz"
    return pairs(dataset, images, labels)
