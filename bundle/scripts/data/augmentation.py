"""The published online augmentation of Hermes training, as one list of MONAI transforms.

Spatial: a random block of ``roi_size + block_margin`` voxels (published 158 = 128 + 30); with probability
``affine_prob`` a random affine (rotation ±30°, scale 0.7–1/0.7, shear ±0.1) resamples its centre to ``roi_size``,
otherwise ``roi_size`` is cropped at random inside it. Intensity: brightness, shift, gamma, contrast, blur and noise,
each with the item's dataset probability (``intensity_aug_prob``: 0.1 CT/PET, 0.2 MR in the registry).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.transforms import (
    OneOf,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandShiftIntensityd,
    RandSpatialCropd,
    SpatialPadd,
    Transform,
)

from .transforms import RandomizeByDatasetProbd


def spatial_augmentation(
    keys: Sequence[str], roi_size: Sequence[int], block_margin: int, affine_prob: float, mode: Sequence[str]
) -> list[Transform]:
    """Pad to the window, take the random block, then the random affine or the random crop."""
    keys = list(keys)
    return [
        SpatialPadd(keys, spatial_size=roi_size),
        RandSpatialCropd(keys, roi_size=[s + block_margin for s in roi_size], random_size=False),
        OneOf(
            [
                RandAffined(
                    keys,
                    spatial_size=roi_size,
                    prob=1.0,
                    rotate_range=[math.pi / 6] * 3,
                    scale_range=[(-0.3, 0.4286)] * 3,
                    shear_range=[0.1] * 6,
                    mode=list(mode),
                    padding_mode="zeros",
                ),
                RandSpatialCropd(keys, roi_size=roi_size, random_size=False),
            ],
            weights=[affine_prob, 1.0 - affine_prob],
        ),
    ]


def intensity_augmentation(key: str = "image") -> list[Transform]:
    """The six intensity augmentations, each drawn with the item's dataset probability."""
    return [
        RandomizeByDatasetProbd(t)
        for t in (
            RandScaleIntensityd(key, factors=0.3, prob=1.0),
            RandShiftIntensityd(key, offsets=0.1, prob=1.0),
            RandAdjustContrastd(key, gamma=(0.7, 1.5), retain_stats=True, prob=1.0),
            RandScaleIntensityFixedMeand(key, factors=0.3, fixed_mean=True, preserve_range=True, prob=1.0),
            RandGaussianSmoothd(key, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=1.0),
            RandGaussianNoised(key, std=0.1, sample_std=True, prob=1.0),
        )
    ]


def published_augmentation(
    keys: Sequence[str], roi_size: Sequence[int], block_margin: int, affine_prob: float, mode: Sequence[str]
) -> list[Transform]:
    """Spatial, then intensity augmentation (the image key is the first of ``keys``)."""
    return spatial_augmentation(keys, roi_size, block_margin, affine_prob, mode) + intensity_augmentation(keys[0])
