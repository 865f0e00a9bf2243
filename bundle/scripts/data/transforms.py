"""Dictionary transforms for Hermes that MONAI does not provide; everything else in the chain is MONAI's own.

``CheckImaged`` (below) follows ``LoadImaged`` in every workflow: it rejects what no network can segment with one
line naming the file, and records the input's own grid for the outputs.

Training chain of the published recipe (configs/train.json), written with MONAI transforms plus the three below and
the two of ``scripts.data.spatial`` (keys "image"/"label"; ``crop`` = 128, ``margin`` = 30, spacing 1.5 mm):

1. ``LoadImaged`` (image, label), ``EnsureChannelFirstd``, ``Orientationd`` and ``DatasetSpacingd(pixdim=1.5,
   mode=("bilinear", "nearest"))`` (MONAI's ``Spacingd``; with ``native_slices`` the datasets that the published
   preparation resampled in-plane only, autoPET, keep their slice spacing). Axis order: the published arrays are each
   file's stored ITK (z, y, x) order; for the usual identity-direction files that is MONAI
   ``Orientationd(axcodes="SPL")``. Use "SPL" when the published weights are used or fine-tuned; any fixed code is
   fine when training from scratch.
2. ``CropToLabelBoxd``: image and label cropped to the labels' bounding box plus the dataset's registry margin, as the
   published preparation did offline, so that the statistics of step 3 come from the crop.
3. ``HermesNormalizeIntensityd`` (below): per-modality clip then z-score, before any padding (pad value 0 = the mean).
4. ``SpatialPadd(spatial_size=crop)`` (the published data were zero-padded to at least 128 after normalisation).
5. ``RandSpatialCropd(roi_size=crop + margin)`` (a random block), then ``OneOf`` with weights (0.5, 0.5) of
   ``RandAffined(spatial_size=[crop] * 3, prob=1, rotate_range=(pi/6,)*3, scale_range=((-0.3, 0.4286),)*3,
   shear_range=(0.1,)*6, mode=("bilinear", "nearest"), padding_mode="zeros")``, which resamples the block's centre,
   and ``RandSpatialCropd(roi_size=crop)``, a random crop anywhere inside the block: the published code applies the
   random affine with probability 0.5 and takes the central crop (so rotated corners are rarely empty), else a random
   crop. (``RandAffined(prob=0.5)`` alone would centre-crop when the affine is not drawn.) Its scale factor is drawn
   from [1 - 0.3, 1 / (1 - 0.3)], its shear entries from ±0.1 (a default of its affine helper), no translation.
6. Intensity augmentations, each wrapped in ``RandomizeByDatasetProbd`` so that it fires with the probability of the
   item's dataset (``intensity_aug_prob``: 0.1 CT/PET, 0.2 MR in the release), in the published order:
   ``RandScaleIntensityd(factors=0.3)`` (×[0.7, 1.3]); ``RandShiftIntensityd(offsets=0.1)`` (published: N(0, 0.1)
   shift; MONAI draws it uniformly); ``RandAdjustContrastd(gamma=(0.7, 1.5), retain_stats=True)``;
   ``RandScaleIntensityFixedMeand(factors=0.3, fixed_mean=True, preserve_range=True)`` (contrast ×[0.7, 1.3]);
   ``RandGaussianSmoothd(sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0))``;
   ``RandGaussianNoised(std=0.1, sample_std=True)`` (std drawn from [0, 0.1]).
7. ``LabelToTaskChannelsd`` (below): one binary channel per task of the dataset, in ``task_index`` order.
8. ``EnsureTyped(keys=["task_index", "modality_index"], dtype=torch.long, track_meta=False)``.

Batches are formed with ``scripts.data.collate.pad_tasks_collate`` (every sample gets at least one null task).
Training validation uses steps 1, 2, 3 and 7 (the published validation arrays were the same crops); inference
(configs/inference.json, evaluation included) uses steps 1 and 3, and takes the CT/MR z-score statistics from the
body's bounding box (``statistics="body"``), since whole scans have air around the body that the training crops lacked.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform, Transform
from monai.transforms.utils_pytorch_numpy_unification import percentile
from monai.utils import convert_to_dst_type, convert_to_tensor

from .. import cli
from ..errors import CaseError, SetupError
from .body import body_box

#: CT window of the published preprocessing (HU), applied before the z-score.
CT_CLIP_RANGE = (-991.0, 500.0)
#: Percentiles that bound MR and PET intensities before the z-score.
MR_PET_PERCENTILES = (2.0, 98.0)
#: Where ``HermesNormalizeIntensityd`` takes its statistics from (training: "image"; inference: "body").
STATISTICS_REGIONS = ("image", "body")


class HermesNormalizeIntensityd(MapTransform):
    """Clip by modality, then z-score, as the published preprocessing does.

    CT (modality index ``ct_index``, 0) is clipped to [-991, 500] HU; every other modality (PET, T1, T2, cine and
    unknown MR sequence -1) is clipped to its own 2nd-98th percentile range. Then ``(x - mean) / std`` with the
    population std of the clipped image. A constant image only has its mean removed (the published code would divide
    by zero). The modality is read per sample from ``modality_key``, so one chain serves every dataset.

    ``statistics`` says where the percentiles, mean and std come from; every voxel is then mapped with them:
    - ``"image"`` (training): the whole given image, exactly the published formula (the published arrays were crops
      around labelled anatomy, so at training the image is that crop);
    - ``"body"`` (inference): the bounding box of the body (``scripts.data.body.body_box``), the label-free stand-in
      for those crops, which keeps the air around a whole scan out of the statistics; PET (``pet_index``) keeps the
      whole image (autoPET crops kept at least 128 voxels of context, lesion-free studies were not cropped), and so
      does an image without body voxels (all air). Measured in ``bench/normalization_study.py``.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        modality_key: str = "modality_index",
        ct_index: int = 0,
        ct_range: Sequence[float] = CT_CLIP_RANGE,
        percentiles: Sequence[float] = MR_PET_PERCENTILES,
        statistics: str = "image",
        pet_index: int = 1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if statistics not in STATISTICS_REGIONS:
            raise SetupError(
                f"HermesNormalizeIntensityd: statistics must be one of {', '.join(STATISTICS_REGIONS)}, "
                f"got {statistics!r}"
            )
        self.modality_key = modality_key
        self.ct_index = int(ct_index)
        self.pet_index = int(pet_index)
        self.ct_range = (float(ct_range[0]), float(ct_range[1]))
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        self.statistics = statistics

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.modality_key not in d:
            raise KeyError(
                f"HermesNormalizeIntensityd needs the item's '{self.modality_key}' (0 = CT, anything else = MR/PET); "
                "items from scripts.data.datalist.read_datalist carry it"
            )
        modality = int(torch.as_tensor(d[self.modality_key]).reshape(-1)[0])
        for key in self.key_iterator(d):
            d[key] = self.normalize(d[key], modality)
        return d

    def normalize(self, image: Any, modality: int) -> Any:
        """Clip and z-score one image (any array type; returned as float32 of the same kind, meta kept)."""
        img = convert_to_tensor(image, dtype=torch.float32, track_meta=False)
        low, high, mean, std = self.statistics_of(img, modality)
        img = img.clamp(low, high) - mean
        if std > 0:
            img = img / std
        return convert_to_dst_type(img, dst=image, dtype=torch.float32)[0]

    def statistics_of(self, image: torch.Tensor, modality: int) -> tuple[float, float, float, float]:
        """``(low, high, mean, std)``: the clip bounds and the clipped moments ``normalize`` maps ``image`` with."""
        is_ct = modality == self.ct_index
        box = body_box(image, is_ct) if self.statistics == "body" and modality != self.pet_index else None
        region = image if box is None else image[box]
        if is_ct:
            low, high = self.ct_range
        else:
            low, high = (float(v) for v in percentile(region, np.array(self.percentiles)))
        region = region.clamp(low, high)
        return low, high, float(region.mean()), float(region.std(unbiased=False))


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
                f"RandomizeByDatasetProbd needs the item's '{self.prob_key}' (added by scripts.data.datalist.read_datalist) "
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
                "scripts.data.datalist.read_datalist)"
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


def _source(data: Mapping[Hashable, Any], key: Hashable, image: Any) -> str:
    meta = getattr(image, "meta", {}) or {}
    if key == "image" and data.get("source"):
        return str(data["source"])
    return str(meta.get("filename_or_obj", data.get(key) if isinstance(data.get(key), str) else key))


#: An "image" with at most this many distinct values, all integers, looks like a label map.
LABEL_LIKE_MAX_VALUES = 16


class CheckImaged(MapTransform):
    """Reject what the network cannot segment (2D, 4D or multi-channel, NaN/Inf voxels, a degenerate affine).

    Runs right after ``LoadImaged`` (before any channel axis is added); squeezes trailing singleton dimensions of 3D
    files, records the first key's own grid as ``native_affine`` / ``native_shape`` (written into every output), a
    DICOM series' Modality tag as ``dicom_modality`` and its files in slice order as ``dicom_files`` (what a DICOM SEG
    references). An image that holds only a few integer values (a label map given as the image, most likely) is
    reported through ``warn`` (one stderr line by default; None: not reported).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        warn: Callable[[str], None] | None = cli.warn,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.warn = warn

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for index, key in enumerate(self.key_iterator(d)):
            image = d[key]
            source = _source(d, key, image)
            shape = tuple(int(s) for s in image.shape)
            while len(shape) > 3 and shape[-1] == 1:  # a 3D NIfTI stored with trailing singleton dimensions
                image = image[..., 0]
                shape = shape[:-1]
            if len(shape) < 3 or min(shape[:3]) == 1:
                raise CaseError(f"{source}: image is 2D (shape {shape}); a 3D volume is needed")
            if len(shape) > 3:
                raise CaseError(
                    f"{source}: image is 4D or multi-channel (shape {shape}); give one 3D volume "
                    "(split the channels or time points into separate files)"
                )
            affine = torch.as_tensor(getattr(image, "affine", torch.eye(4)), dtype=torch.float64)
            if not bool(torch.isfinite(affine).all()) or abs(float(torch.linalg.det(affine[:3, :3]))) < 1e-9:
                raise CaseError(
                    f"{source}: the file's affine (voxel-to-world matrix) is degenerate "
                    f"({affine[:3, :3].tolist()}); fix the header's pixdim / qform / sform"
                )
            pixels = torch.as_tensor(image)
            finite = torch.isfinite(pixels) if pixels.is_floating_point() else None
            if finite is not None and not bool(finite.all()):
                raise CaseError(f"{source}: image has {int((~finite).sum())} NaN or infinite voxels")
            d[key] = image
            if index == 0:
                self._record(d, image, shape, affine, source, pixels, key)
        return d

    def _record(
        self, d: dict, image: Any, shape: tuple, affine: torch.Tensor, source: str, pixels: torch.Tensor, key: Hashable
    ) -> None:
        meta = getattr(image, "meta", {}) or {}
        d["native_affine"] = affine.clone()
        d["native_shape"] = shape
        if meta.get("dicom_modality"):
            d["dicom_modality"] = str(meta["dicom_modality"])
        if meta.get("dicom_files"):
            d["dicom_files"] = [str(f) for f in meta["dicom_files"]]
        if key == "image" and self.warn is not None and looks_like_labels(pixels):
            self.warn(f"{source}: the image holds only a few integer values; is it a label map rather than a scan?")


def looks_like_labels(pixels: torch.Tensor) -> bool:
    """Few distinct integer values: what a label map has and a scan does not."""
    sample = pixels.reshape(-1)[:: max(1, pixels.numel() // 200_000)]
    values = torch.unique(sample)
    if values.numel() > LABEL_LIKE_MAX_VALUES:
        return False
    return bool(torch.all(values == torch.round(values.float())))
