"""BTCV (Multi-Atlas Labeling Beyond the Cranial Vault, MICCAI 2015), abdomen: 30 labelled CT volumes.

Release: ``RawData.zip`` of the Synapse project syn3193805 (Abdomen): ``RawData/Training/img/imgNNNN.nii.gz`` and
``RawData/Training/label/labelNNNN.nii.gz`` (the ``Testing`` folder has no labels and is not used). Labels 1-13.
"""

from __future__ import annotations

from pathlib import Path

from ..cases import Found
from .common import load_pair, pairs

DATASETS = ("bcv",)
RELEASE = "BTCV abdomen (Synapse RawData.zip): Training/img/imgNNNN.nii.gz and Training/label/labelNNNN.nii.gz"
load = load_pair


def find(src: Path, dataset: str) -> Found:
    images, labels = {}, {}
    for path in sorted(src.rglob("img*.nii.gz")):
        if path.parent.name != "img" or not path.name[3:7].isdigit():
            continue
        official = path.name[: -len(".nii.gz")]
        images[official] = path
        label = path.parent.parent / "label" / path.name.replace("img", "label", 1)
        if label.is_file():
            labels[official] = label
    return pairs(dataset, images, labels)
