"""The training grid and field of view of the published preparation, per dataset, as MONAI dictionary transforms.

The published preparation (``dataset_conversion/`` of the release) resampled every dataset to 1.5 mm, except
autoPET, which it resampled in-plane only (each study kept its own slice spacing), and then cropped image and label to
the bounding box of the labels plus a margin in voxels of that grid (none for brain structures; autoPET widened to at
least 128 voxels). Both facts are data of the task registry (``crop_margin``, ``crop_min_size``,
``keep_native_slice_spacing``), carried by every datalist item (``TaskRegistry.item_fields``); the two transforms
below read them per item:

- ``DatasetSpacingd`` replaces MONAI's ``Spacingd`` in the shared load chain (``load_transforms`` of train.json and
  inference.json): MONAI's own ``Spacingd``, with the first axis (S after ``Orientationd("SPL")``, the slice axis of
  axial scans) left at the file's own spacing for items whose dataset keeps it, when ``native_slices`` is on;
- ``CropToLabelBoxd`` crops image and label to that box after resampling and before the intensity normalisation, so
  the z-score statistics come from the crop, as published. Our crop runs on the training grid, not on the published
  1.5 mm one: margins are converted to voxels of the image's own spacing (rounded up, so the context in mm is never
  less than published), except along a slice axis kept native, where both grids count the same native slices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import InvertibleTransform, MapTransform, Spacingd, SpatialCrop
from monai.transforms.utils import generate_spatial_bounding_box
from monai.utils import TraceKeys, ensure_tuple

from ..errors import SetupError

#: Grid (mm) of the published preparation, on which the registry's crop margins and minimum sizes are counted.
PUBLISHED_SPACING_MM = 1.5
#: Item key saying the item's dataset keeps its native slice spacing (from ``TaskRegistry.item_fields``).
NATIVE_SLICES_KEY = "keep_native_slice_spacing"


def keeps_native_slices(
    data: Mapping[Hashable, Any],
    enabled: bool,
    key: str = NATIVE_SLICES_KEY,
    rule: Callable[[Mapping[Hashable, Any]], bool] | None = None,
) -> bool:
    """Whether this item is resampled in-plane only: the switch is on and the item's dataset asks for it (or, for an
    inference case that names no dataset, ``rule`` says so from what is known of its modality before resampling)."""
    if not enabled:
        return False
    if key in data or rule is None:
        return bool(data.get(key, False))
    return bool(rule(data))


def checked_spacing(pixdim: Sequence[float] | float) -> list[float]:
    """The network grid's voxel size per axis (one number for all three, or three); a ``SetupError`` naming
    ``--spacing`` for anything else (a zero divided inside every case; two numbers were padded silently)."""
    values = list(ensure_tuple(pixdim))
    try:
        sizes = [float(v) for v in values if not isinstance(v, bool)]
    except (TypeError, ValueError):
        sizes = []
    if len(values) not in (1, 3) or len(sizes) != len(values) or not all(0.0 < v < float("inf") for v in sizes):
        raise SetupError(f"--spacing {pixdim}: expected the voxel size in mm, one positive number or three")
    return sizes * 3 if len(sizes) == 1 else sizes


class DatasetSpacingd(MapTransform, InvertibleTransform):
    """MONAI ``Spacingd`` to ``pixdim``, or to ``pixdim`` in-plane only for items that keep their slice spacing.

    With ``native_slices`` on, an item whose ``native_key`` is true (autoPET in the release) keeps its own spacing
    along the first array axis; every other item, and every item with the switch off, is resampled to ``pixdim``.
    Invertible (``Invertd`` of inference and evaluation): the inverse is that of the ``Spacingd`` that ran.
    Further keyword arguments go to both ``Spacingd``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        pixdim: Sequence[float] | float,
        mode: Any = "bilinear",
        native_slices: bool = False,
        native_key: str = NATIVE_SLICES_KEY,
        native_rule: Callable[[Mapping[Hashable, Any]], bool] | None = None,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.native_rule = native_rule
        values = checked_spacing(pixdim)
        self.native_slices = bool(native_slices)
        self.native_key = native_key
        self.resample = Spacingd(keys, values, mode=mode, allow_missing_keys=allow_missing_keys, **kwargs)
        # a non-positive pixdim entry tells MONAI's Spacing to keep that axis' own spacing
        self.in_plane = Spacingd(keys, [0.0, *values[1:3]], mode=mode, allow_missing_keys=allow_missing_keys, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        native = keeps_native_slices(data, self.native_slices, self.native_key, self.native_rule)
        return (self.in_plane if native else self.resample)(data)

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            ran = d[key].applied_operations[-1][TraceKeys.ID] if isinstance(d[key], MetaTensor) else None
            chosen = self.in_plane if ran in _trace_ids(self.in_plane) else self.resample
            d[key] = chosen.spacing_transform.inverse(d[key])
        return d


def _trace_ids(spacingd: Spacingd) -> set[int]:
    """The ids a ``Spacingd`` records on what it resampled (its ``Spacing`` records through its resampler)."""
    spacing = spacingd.spacing_transform
    return {id(spacing), id(getattr(spacing, "sp_resample", spacing))}


class CropToLabelBoxd(MapTransform):
    """Crop ``keys`` to the bounding box of the item's labelled structures plus its dataset's margin.

    Foreground is every voxel of ``label_key`` whose value is one of the item's ``task_label_values`` (so background
    labels such as AMOS MR's 14 and 15 never widen the box). ``margin_key`` holds the margin ([z, y, x] voxels of
    the ``margin_spacing`` grid, None: no crop), ``min_size_key`` an optional minimum extent (the box grows evenly by
    half the shortfall of the labelled extent on both sides, as the published autoPET crop). The box is clipped to
    the image. An item without any labelled voxel is not cropped (the published lesion-free autoPET studies).

    Args:
        keys: the arrays to crop (image and label), channel first, on the training grid.
        native_slices: the same switch as ``DatasetSpacingd``'s: for items that kept their slice spacing, margins
            along the first axis count native slices (no conversion).
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        margin_key: str = "crop_margin",
        min_size_key: str = "crop_min_size",
        values_key: str = "task_label_values",
        native_slices: bool = False,
        native_key: str = NATIVE_SLICES_KEY,
        margin_spacing: float = PUBLISHED_SPACING_MM,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.margin_key = margin_key
        self.min_size_key = min_size_key
        self.values_key = values_key
        self.native_slices = bool(native_slices)
        self.native_key = native_key
        self.margin_spacing = float(margin_spacing)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        missing = [key for key in (self.margin_key, self.values_key) if key not in d]
        if missing:
            raise KeyError(
                f"CropToLabelBoxd needs the item's {missing} (added by scripts.data.datalist.read_datalist "
                "from the task registry)"
            )
        if d[self.margin_key] is None:
            return d
        box = self.box(d)
        if box is None:
            return d
        crop = SpatialCrop(roi_start=box[0], roi_end=box[1])
        for key in self.key_iterator(d):
            d[key] = crop(d[key])
        return d

    def box(self, data: Mapping[Hashable, Any]) -> tuple[list[int], list[int]] | None:
        """``(start, end)`` voxel indices of the crop on the label's grid, None when nothing is labelled."""
        label = data[self.label_key]
        values = torch.as_tensor(data[self.values_key]).reshape(-1)
        classes = torch.as_tensor(label)
        classes = torch.round(classes) if classes.is_floating_point() else classes
        start, end = generate_spatial_bounding_box(classes, lambda x: torch.isin(x, values.to(x.device, x.dtype)))
        if start == end:
            return None
        scale = self.scale(data, label)
        margin = _voxels(data[self.margin_key], scale)
        min_size = _voxels(data.get(self.min_size_key) or [0, 0, 0], scale)
        shape = label.shape[1:]
        first, last = [], []
        for axis in range(3):
            context = margin[axis] + max(0, (min_size[axis] - (end[axis] - start[axis])) // 2)
            first.append(max(0, int(start[axis]) - context))
            last.append(min(int(shape[axis]), int(end[axis]) + context))
        return first, last

    def scale(self, data: Mapping[Hashable, Any], label: Any) -> list[float]:
        """Registry voxels -> voxels of ``label``'s grid, per axis (1 along a slice axis kept native)."""
        affine = getattr(label, "affine", None)
        spacing = affine_to_spacing(torch.as_tensor(affine), r=3).tolist() if affine is not None else None
        scale = [1.0] * 3 if spacing is None else [self.margin_spacing / float(s) for s in spacing]
        if keeps_native_slices(data, self.native_slices, self.native_key):
            scale[0] = 1.0
        return scale


def _voxels(counts: Sequence[int] | int, scale: Sequence[float]) -> list[int]:
    """Registry voxel counts on this grid, rounded up (never less context in mm than declared)."""
    values = list(counts) if isinstance(counts, (list, tuple)) else [counts] * 3
    return [math.ceil(float(v) * s - 1e-6) for v, s in zip(values, scale)]
