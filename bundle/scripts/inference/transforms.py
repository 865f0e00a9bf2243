"""Dictionary transforms of the inference preprocessing that MONAI lacks: input checks, modality and task choice.

They sit in configs/inference.json's ``preprocessing`` between MONAI's own transforms. None of them is
invertible, so ``Invertd`` skips them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch
from monai.transforms import MapTransform

from .errors import CaseError
from .modality import DICOM_MODALITY, MODALITY_INDEX, check_modality_choice, datalist_modality
from .task_selection import TaskSelector


def _source(data: Mapping[Hashable, Any], image: Any) -> str:
    if data.get("source"):
        return str(data["source"])
    meta = getattr(image, "meta", {}) or {}
    return str(meta.get("filename_or_obj", "image"))


class CheckImaged(MapTransform):
    """Reject what the network cannot segment (2D, 4D or multi-channel, NaN/Inf voxels) with one clear line.

    Runs right after ``LoadImaged`` (no channel axis yet); records the input's own grid as ``native_affine`` and
    ``native_shape`` (written into every output) and a DICOM series' Modality tag as ``dicom_modality``.
    """

    def __init__(self, keys: str = "image") -> None:
        super().__init__(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            source = _source(d, image)
            shape = tuple(int(s) for s in image.shape)
            while len(shape) > 3 and shape[-1] == 1:  # a 3D NIfTI stored with trailing singleton dimensions
                image = image[..., 0]
                shape = shape[:-1]
            if len(shape) < 3 or min(shape[:3]) == 1:
                raise CaseError(f"{source}: image is 2D (shape {shape}); a 3D volume is needed")
            if len(shape) > 3:
                raise CaseError(f"{source}: image is 4D or multi-channel (shape {shape}); give one 3D volume "
                                "(split the channels or time points into separate files)")
            finite = torch.isfinite(torch.as_tensor(image))
            if not bool(finite.all()):
                raise CaseError(f"{source}: image has {int((~finite).sum())} NaN or infinite voxels")
            d[key] = image
            meta = getattr(image, "meta", {}) or {}
            d["native_affine"] = torch.as_tensor(image.affine, dtype=torch.float64).clone()
            d["native_shape"] = shape
            if meta.get("dicom_modality"):
                d["dicom_modality"] = str(meta["dicom_modality"])
        return d


class ResolveModalityd(MapTransform):
    """Set ``modality_name``, ``modality_index`` and ``modality_source`` (rules: ``scripts.inference.modality``)."""

    def __init__(
        self,
        keys: str = "image",
        requested: str = "auto",
        registry: Any = None,
        probe: Callable[[torch.Tensor], str] | None = None,
    ) -> None:
        super().__init__(keys)
        self.requested = requested
        self.registry = registry
        self.probe = probe

    def choose(self, data: Mapping[Hashable, Any]) -> tuple[str, str]:
        """(modality name, how it was chosen)."""
        requested = check_modality_choice(self.requested)
        if requested != "auto":
            return requested, "--modality"
        if data.get("modality"):
            return datalist_modality(self.registry, data["modality"], data.get("dataset")), "datalist"
        tag = data.get("dicom_modality")
        if tag:
            if tag not in DICOM_MODALITY:
                raise CaseError(f"{_source(data, None)}: DICOM Modality '{tag}' is not one the model knows "
                                f"({', '.join(DICOM_MODALITY)}); pass --modality")
            return DICOM_MODALITY[tag], f"DICOM Modality tag {tag}"
        if self.probe is None:
            raise CaseError(f"{_source(data, None)}: cannot tell the modality; pass --modality")
        return self.probe(data[self.first_key(data)]), "network modality head"

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        name, source = self.choose(d)
        d["modality_name"] = name
        d["modality_index"] = torch.tensor(MODALITY_INDEX[name], dtype=torch.long)
        d["modality_source"] = source
        return d


class SelectTasksd(MapTransform):
    """Set ``task_groups`` (one per output label) and ``task_index`` (the distinct task ids the network runs)."""

    def __init__(self, selector: TaskSelector, keys: str = "image") -> None:
        super().__init__(keys)
        self.selector = selector

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        try:
            groups = self.selector.resolve(d["modality_name"])
        except CaseError as err:
            raise CaseError(f"{_source(d, None)}: {err}") from err
        ids = list(dict.fromkeys(i for g in groups for i in g.task_ids))
        d["task_groups"] = groups
        d["task_index"] = torch.tensor(ids, dtype=torch.long)
        return d
