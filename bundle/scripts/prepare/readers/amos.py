"""AMOS 2022 (Multi-Modality Abdominal Multi-Organ Segmentation), its labelled CT and MRI scans.

Release: ``amos22.zip`` of the challenge (zenodo.org/records/7262581): ``amos22/imagesTr``, ``labelsTr``,
``imagesVa``, ``labelsVa`` holding ``amos_NNNN.nii.gz`` (``imagesTs`` has no labels and is not used). Ids below 500
are CT (``amos_ct``), from 500 MRI (``amos_mr``). Labels 1-15; the MRI scans do not annotate 14 (bladder) and 15
(prostate/uterus), which the task registry lists as ``amos_mr`` background labels, so they become 0.
"""

from __future__ import annotations

from pathlib import Path

from ..cases import Found
from .common import load_pair, pairs

DATASETS = ("amos_ct", "amos_mr")
RELEASE = "AMOS 2022 (amos22.zip): imagesTr/labelsTr and imagesVa/labelsVa with amos_NNNN.nii.gz"
#: The first MRI id of AMOS.
FIRST_MRI_ID = 500
load = load_pair


def find(src: Path, dataset: str) -> Found:
    images, labels = {}, {}
    for image_dir in sorted([*src.rglob("imagesTr"), *src.rglob("imagesVa")]):
        label_dir = image_dir.with_name("labels" + image_dir.name[len("images") :])
        for path in sorted(image_dir.glob("amos_*.nii.gz")):
            number = path.name[len("amos_") : -len(".nii.gz")]
            if not number.isdigit() or (int(number) >= FIRST_MRI_ID) != (dataset == "amos_mr"):
                continue
            images[str(int(number))] = path
            if (label_dir / path.name).is_file():
                labels[str(int(number))] = label_dir / path.name
    return pairs(dataset, images, labels)
