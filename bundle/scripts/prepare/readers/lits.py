"""LiTS (Liver Tumor Segmentation Challenge, MICCAI 2017), training set of 131 CT volumes.

Release: the challenge's training data ("Training Batch 1": volumes 0-27, "Training Batch 2": 28-130, as distributed
on CodaLab / Zenodo), ``volume-N.nii`` with ``segmentation-N.nii`` (or ``.nii.gz``), N 0-130, in any sub-folders.
Labels: 1 liver, 2 tumour.

17 volumes of batch 2 carry wrong voxel sizes; the published preparation set their spacing to [1, 1, z] with the z
values listed below, and so does this reader (direction and origin kept, as ITK's ``SetSpacing`` does).
"""

from __future__ import annotations

from pathlib import Path

from ...registry import TaskRegistry
from ..cases import Found, SourceCase, Volume
from ..geometry import with_spacing
from .common import load_pair, matching, pairs

DATASETS = ("lits",)
RELEASE = "the LiTS 2017 training set: volume-N.nii[.gz] and segmentation-N.nii[.gz] (N 0-130) in any sub-folders"
#: Volume -> slice spacing (mm) of the published header fix; the in-plane spacing becomes 1 mm.
SPACING_FIXES = {
    28: 1.7, 31: 2.5, 32: 1.5, 33: 1.8, 34: 1.7, 35: 1.9, 36: 2.0, 37: 1.7, 38: 1.7,
    40: 1.7, 41: 1.8, 42: 1.6, 43: 1.8, 44: 2.0, 45: 2.5, 46: 2.5, 47: 1.7,
}  # fmt: skip


def find(src: Path, dataset: str) -> Found:
    images = {str(int(k)): p for k, p in matching(src, "volume-*.nii*", r"volume-(\d+)\.nii(?:\.gz)?").items()}
    labels = {
        str(int(k)): p for k, p in matching(src, "segmentation-*.nii*", r"segmentation-(\d+)\.nii(?:\.gz)?").items()
    }
    return pairs(dataset, images, labels)


def load(case: SourceCase, registry: TaskRegistry) -> tuple[Volume, Volume]:
    image, label = load_pair(case, registry)
    slice_spacing = SPACING_FIXES.get(int(case.official_id))
    if slice_spacing is not None:
        image.affine = with_spacing(image.affine, [1.0, 1.0, slice_spacing])
        label.affine = with_spacing(label.affine, [1.0, 1.0, slice_spacing])
    return image, label
