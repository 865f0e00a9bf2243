"""Where the subject lies in a scan: the label-free region whose intensity statistics resemble the training crops.

The published training arrays were cropped to the bounding box of their labelled anatomy plus a margin before the
z-score (docs/README.md, "Preprocessing"), so their statistics saw little of the air around a body.
A whole scan at inference has that air, which shifts every normalised intensity (40 HU: 1.33 over the sample lung CT,
0.95 over its lungs' box + 20 voxels). No label exists at inference; the bounding box of the body is the stand-in
that came closest to the training crops on the sample suite (``bench/normalization_study.py``).

The body is the largest 6-connected component above a threshold (CT: a fixed HU level between lung and soft tissue,
so the couch and noise specks drop out; MR: a fraction of the image's robust 2nd-98th percentile range). MONAI's
``KeepLargestConnectedComponent`` needs scikit-image or cuCIM, which the bundle does not require; scipy's labelling
(which MONAI's ``FillHoles`` uses too) does the job.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms.utils import generate_spatial_bounding_box
from monai.transforms.utils_pytorch_numpy_unification import percentile
from scipy import ndimage

#: CT voxels above this (HU) belong to the body: soft tissue, bone, and lung walls, not air or lung parenchyma.
CT_BODY_HU = -500.0
#: MR/PET voxels above p2 + this fraction of (p98 - p2) belong to the subject (air is near p2).
BODY_RANGE_FRACTION = 0.1


def body_threshold(image: torch.Tensor, is_ct: bool) -> float:
    """The intensity above which a voxel of ``image`` counts as body."""
    if is_ct:
        return CT_BODY_HU
    low, high = (float(v) for v in percentile(image, np.array([2.0, 98.0])))
    return low + BODY_RANGE_FRACTION * (high - low)


def body_mask(image: torch.Tensor, is_ct: bool) -> np.ndarray | None:
    """The body's voxels (spatial bool array) of ``image`` (C × spatial): the largest component above the body
    threshold in any channel; None when no voxel is above it (an all-air or constant image)."""
    plain = torch.as_tensor(image)
    labels, count = ndimage.label((plain > body_threshold(plain, is_ct)).any(dim=0).cpu().numpy())
    if count == 0:
        return None
    return labels == int(np.argmax(ndimage.histogram(labels, 1, count, count))) + 1  # voxels per component


def body_box(image: torch.Tensor, is_ct: bool) -> tuple[slice, ...] | None:
    """Slices (channel axis first, kept whole) of the body's bounding box in ``image`` (C × spatial), or None when
    there is no body (see ``body_mask``)."""
    mask = body_mask(image, is_ct)
    if mask is None:
        return None
    start, end = generate_spatial_bounding_box(mask[None])  # MONAI's CropForeground box
    return (slice(None), *(slice(int(a), int(b)) for a, b in zip(start, end)))
