"""Dictionary transforms for Hermes that MONAI does not provide; everything else in the chain is MONAI's own.

Training chain of the published recipe, written with MONAI transforms plus the three below (keys "image"/"label";
``crop`` = 128, ``margin`` = 30, spacing 1.5 mm), in this order:

1. ``LoadImaged`` (image, label), ``EnsureChannelFirstd``, ``Orientationd`` and ``Spacingd(pixdim=1.5,
   mode=("bilinear", "nearest"))``. Axis order: the published preprocessing re-oriented every volume to the identity
   direction in ITK (LPS) and fed arrays indexed (z, y, x), i.e. MONAI ``Orientationd(axcodes="SPL")``. Use "SPL" when
   the published weights are used or fine-tuned; any fixed code is fine when training from scratch.
2. ``HermesNormalizeIntensityd`` (below): per-modality clip then z-score, before any padding (pad value 0 = the mean).
3. ``SpatialPadd(spatial_size=crop)`` (the published data were zero-padded to at least 128 after normalisation).
4. ``RandSpatialCropd(roi_size=crop + margin)`` then ``RandAffined(spatial_size=[crop] * 3, prob=0.5,
   rotate_range=(pi/6,)*3, scale_range=((-0.3, 0.4286),)*3, shear_range=(0.1,)*6, mode=("bilinear", "nearest"),
   padding_mode="zeros")``: the published code crops a slightly larger block, applies the random affine with
   probability 0.5 and takes the central crop (so rotated corners are rarely empty). Its scale factor is drawn from
   [1 - 0.3, 1 / (1 - 0.3)], its shear entries from ±0.1 (a default of its affine helper), no translation.
5. Intensity augmentations, each wrapped in ``RandomizeByDatasetProbd`` so that it fires with the probability of the
   item's dataset (``intensity_aug_prob``: 0.1 CT/PET, 0.2 MR in the release), in the published order:
   ``RandScaleIntensityd(factors=0.3)`` (×[0.7, 1.3]); ``RandShiftIntensityd(offsets=0.1)`` (published: N(0, 0.1)
   shift; MONAI draws it uniformly); ``RandAdjustContrastd(gamma=(0.7, 1.5), retain_stats=True)``;
   ``RandScaleIntensityFixedMeand(factors=0.3, fixed_mean=True, preserve_range=True)`` (contrast ×[0.7, 1.3]);
   ``RandGaussianSmoothd(sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0))``;
   ``RandGaussianNoised(std=0.1, sample_std=True)`` (std drawn from [0, 0.1]).
6. ``LabelToTaskChannelsd`` (below): one binary channel per task of the dataset, in ``task_index`` order.
7. ``EnsureTyped(keys=["task_index", "modality_index"], dtype=torch.long, track_meta=False)``.

Batches are formed with ``scripts.collate.pad_tasks_collate``. Inference and validation use steps 1, 2 (and 6 for
validation labels) with the same settings.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform, Transform
from monai.transforms.utils_pytorch_numpy_unification import percentile
from monai.utils import convert_to_dst_type, convert_to_tensor

#: CT window of the published preprocessing (HU), applied before the z-score.
CT_CLIP_RANGE = (-991.0, 500.0)
#: Percentiles that bound MR and PET intensities before the z-score.
MR_PET_PERCENTILES = (2.0, 98.0)


class HermesNormalizeIntensityd(MapTransform):
    """Clip by modality, then z-score over the whole image, as the published preprocessing does.

    CT (modality index ``ct_index``, 0) is clipped to [-991, 500] HU; every other modality (PET, T1, T2, cine and
    unknown MR sequence -1) is clipped to its own 2nd-98th percentile range. Then ``(x - mean) / std`` with the
    population std of the clipped image. A constant image only has its mean removed (the published code would divide
    by zero). The modality is read per sample from ``modality_key``, so one chain serves every dataset.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        modality_key: str = "modality_index",
        ct_index: int = 0,
        ct_range: Sequence[float] = CT_CLIP_RANGE,
        percentiles: Sequence[float] = MR_PET_PERCENTILES,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.modality_key = modality_key
        self.ct_index = int(ct_index)
        self.ct_range = (float(ct_range[0]), float(ct_range[1]))
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.modality_key not in d:
            raise KeyError(
                f"HermesNormalizeIntensityd needs the item's '{self.modality_key}' (0 = CT, anything else = MR/PET); "
                "items from scripts.datalist.load_datalist carry it"
            )
        modality = int(torch.as_tensor(d[self.modality_key]).reshape(-1)[0])
        for key in self.key_iterator(d):
            d[key] = self.normalize(d[key], is_ct=modality == self.ct_index)
        return d

    def normalize(self, image: Any, is_ct: bool) -> Any:
        """Clip and z-score one image (any array type; returned as float32 of the same kind, meta kept)."""
        img = convert_to_tensor(image, dtype=torch.float32, track_meta=False)
        if is_ct:
            low, high = self.ct_range
        else:
            low, high = (float(percentile(img, q)) for q in self.percentiles)
        img = img.clamp(low, high)
        mean = img.mean()
        std = img.std(unbiased=False)
        img = img - mean
        if std > 0:
            img = img / std
        return convert_to_dst_type(img, dst=image, dtype=torch.float32)[0]


class RandomizeByDatasetProbd(RandomizableTransform):
    """Apply a MONAI (dictionary) transform with a probability read from each item, e.g. its dataset's.

    Hermes augments intensities more often for MR (0.2) than for CT and PET (0.1), per dataset. MONAI's ``Rand*``
    transforms take one fixed ``prob``; this wrapper draws its own decision with the item's ``prob_key`` value and
    runs the wrapped transform with its ``prob`` forced to 1.0 (so the item's probability is the only one).
    The wrapped transform shares this wrapper's random state, so ``Compose.set_random_state`` and MONAI's data-loader
    worker seeding reach it.
    """

    def __init__(
        self, transform: Transform, prob_key: str = "intensity_aug_prob", default_prob: float | None = None
    ) -> None:
        super().__init__(prob=1.0)
        if not callable(transform):
            raise TypeError(f"RandomizeByDatasetProbd wraps a transform, got {type(transform).__name__}")
        if isinstance(transform, RandomizableTransform):
            transform.prob = 1.0
        self.transform = transform
        self.prob_key = prob_key
        self.default_prob = default_prob

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandomizeByDatasetProbd:
        super().set_random_state(seed, state)
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(state=self.R)
        return self

    def item_prob(self, data: Mapping[Hashable, Any]) -> float:
        """The probability this item asks for (``default_prob`` when the key is absent and a default is set)."""
        if self.prob_key in data:
            return float(torch.as_tensor(data[self.prob_key]).reshape(-1)[0])
        if self.default_prob is None:
            raise KeyError(
                f"RandomizeByDatasetProbd needs the item's '{self.prob_key}' (added by scripts.datalist.load_datalist) "
                "or a default_prob"
            )
        return float(self.default_prob)

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:
        self.prob = min(max(self.item_prob(data), 0.0), 1.0)
        self.randomize(None)
        if not self._do_transform:
            return dict(data)
        return self.transform(data)


class LabelToTaskChannelsd(MapTransform):
    """Turn a label map (1 × spatial, class values) into one binary channel per task of the item's dataset.

    Channel i is ``label == task_label_values[i]`` (from the datalist item, ordered like the item's ``task_index``).
    Values that are no task of the dataset (background, ``background_labels``) are 0 in every
    channel. The result keeps the label's MetaTensor metadata; ``dtype`` uint8 keeps 20+-channel labels small.
    (The key does not start with "label_": MONAI's Spacingd treats such keys as the label's meta dictionary.)
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        label_values_key: str = "task_label_values",
        dtype: torch.dtype = torch.uint8,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_values_key = label_values_key
        self.dtype = dtype

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.label_values_key not in d:
            raise KeyError(
                f"LabelToTaskChannelsd needs the item's '{self.label_values_key}' (added by "
                "scripts.datalist.load_datalist)"
            )
        values = [int(v) for v in torch.as_tensor(d[self.label_values_key]).reshape(-1).tolist()]
        for key in self.key_iterator(d):
            d[key] = self.split(d[key], values)
        return d

    def split(self, label: Any, values: Sequence[int]) -> Any:
        """Binary channels of ``label`` for ``values`` (MetaTensor in, MetaTensor out)."""
        plain = convert_to_tensor(label, track_meta=False)
        if plain.ndim < 2 or plain.shape[0] != 1:
            raise ValueError(
                f"LabelToTaskChannelsd expects a label map with one channel (1 × spatial), got shape "
                f"{tuple(plain.shape)}; apply it once, after the spatial transforms"
            )
        classes = torch.round(plain[0]) if plain.is_floating_point() else plain[0]
        wanted = torch.as_tensor(values, dtype=classes.dtype, device=classes.device)
        channels = classes.unsqueeze(0) == wanted.reshape((-1,) + (1,) * classes.ndim)
        if isinstance(label, MetaTensor):
            return MetaTensor(channels.to(self.dtype), meta=label.meta, applied_operations=label.applied_operations)
        return convert_to_dst_type(channels, dst=label, dtype=self.dtype)[0]
