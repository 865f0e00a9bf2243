"""StructSeg 2019 (Automatic Structure Segmentation for Radiotherapy Planning), tasks 1 and 3: 50 CT each.

Release: the challenge's training data, ``HaN_OAR/N/data.nii.gz`` + ``label.nii.gz`` (task 1, 22 head-and-neck
organs, ``structseg_head_oar``) and ``Thoracic_OAR/N/data.nii.gz`` + ``label.nii.gz`` (task 3, 6 thoracic organs,
``structseg_oar``), N 1-50. The published code has no script for the thoracic set; this reader reads both.
"""

from __future__ import annotations

from pathlib import Path

from ..cases import Found
from .common import load_pair, pairs

DATASETS = ("structseg_oar", "structseg_head_oar")
#: Dataset -> the folder of its challenge task.
FOLDERS = {"structseg_oar": "Thoracic_OAR", "structseg_head_oar": "HaN_OAR"}
RELEASE = "StructSeg 2019: HaN_OAR/N/ or Thoracic_OAR/N/ with data.nii.gz and label.nii.gz (N 1-50)"
load = load_pair


def find(src: Path, dataset: str) -> Found:
    images, labels = {}, {}
    folders = [src] if src.name == FOLDERS[dataset] else sorted(src.rglob(FOLDERS[dataset]))
    for folder in folders:
        for case in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()):
            key = str(int(case.name))
            if (case / "data.nii.gz").is_file():
                images[key] = case / "data.nii.gz"
            if (case / "label.nii.gz").is_file():
                labels[key] = case / "label.nii.gz"
    return pairs(dataset, images, labels)
