"""Which modality prior a case uses: an explicit step of every run, in this order of evidence.

1. ``--modality ct|pet|t1|t2|cine|mr`` (any name of the registry's modality table) is taken as given;
2. a datalist item's own ``modality`` (a modality name, or a sequence key of the item's ``dataset``);
3. a DICOM series' Modality tag, mapped by the registry (CT -> ct, PT -> pet, MR -> mr; the tag does not say the
   MRI sequence); other tags are an error asking for ``--modality``;
4. otherwise the network's modality head: one window from the image centre, normalised as MRI/PET are
   (percentile clip + z-score) and fed with the unknown-MRI prior (-1), which carries no modality of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor

from ..errors import CaseError
from ..registry import TaskRegistry


def centre_window(image: torch.Tensor, roi_size: Sequence[int]) -> torch.Tensor:
    """The image centre (``C × spatial``), zero-padded symmetrically to exactly ``roi_size``."""
    spatial = image.shape[1:]
    slices = [slice(max(0, (s - r) // 2), max(0, (s - r) // 2) + r) for s, r in zip(spatial, roi_size)]
    window = image[(slice(None), *slices)]
    pads: list[int] = []
    for s, r in reversed(list(zip(window.shape[1:], roi_size))):
        pads.extend([(r - s) // 2, r - s - (r - s) // 2])
    return torch.nn.functional.pad(window, pads)


class ModalityStep:
    """``(modality name, how it was chosen)`` for a loaded case (before intensity normalisation)."""

    def __init__(
        self,
        registry: TaskRegistry,
        requested: Any = "auto",
        predictor: Any = None,
        normalizer: Callable[[dict], dict] | None = None,
        roi_size: Sequence[int] = (128, 128, 128),
        device: torch.device | str = "cpu",
    ) -> None:
        self.registry = registry
        self.requested = requested
        self.predictor = predictor
        self.normalizer = normalizer
        self.roi_size = roi_size  # checked with the network's own divisor by CasePredictor.check, before any case
        self.device = torch.device(device)

    def check(self) -> str:
        """The validated ``--modality`` choice (a ``SetupError`` before any case for an unknown name)."""
        return self.registry.parse_modality_choice(self.requested)

    def stated(self, data: dict[str, Any]) -> tuple[str, str] | None:
        """The modality the case states before any image analysis (rules 1-3), or None."""
        source = data.get("source", "image")
        requested = self.check()
        if requested != "auto":
            return requested, "--modality"
        if data.get("modality"):
            try:
                return self.registry.item_modality(data["modality"], data.get("dataset")), "datalist"
            except KeyError as err:
                raise CaseError(f"{source}: {err.args[0]}") from None
        tag = data.get("dicom_modality")
        if tag:
            name = self.registry.modality_from_dicom(tag)
            if name is None:
                known = ", ".join(self.registry.dicom_modalities)
                raise CaseError(
                    f"{source}: DICOM Modality '{tag}' is not one the model knows ({known}); pass --modality"
                )
            return name, f"DICOM Modality tag {tag}"
        return None

    def keeps_native_slices(self, data: dict[str, Any]) -> bool:
        """For ``--native_slice_spacing true``: a case whose stated modality is one whose published datasets kept their
        slice spacing (PET: autoPET) is resampled in-plane only, as those datasets were."""
        stated = self.stated(data)
        return stated is not None and any(
            self.registry.datasets[d].get("keep_native_slice_spacing", False)
            for d in self.registry.datasets_for_modality(stated[0])
        )

    def __call__(self, data: dict[str, Any]) -> tuple[str, str]:
        stated = self.stated(data)
        if stated is not None:
            return stated
        source = data.get("source", "image")
        if self.predictor is None or self.normalizer is None:
            raise CaseError(f"{source}: cannot tell the modality; pass --modality")
        return self.probe(data["image"]), "network modality head"

    @torch.no_grad()
    def probe(self, image: Any) -> str:
        """Ask the modality head about the image's centre window."""
        unknown_mr = -1  # the modality table's last row: MRI of unknown sequence
        normalized = self.normalizer({"image": image.clone(), "modality_index": torch.tensor(unknown_mr)})["image"]
        plain = normalized.as_tensor() if isinstance(normalized, MetaTensor) else torch.as_tensor(normalized)
        window = centre_window(plain.float(), self.roi_size)[None].to(self.device)
        logits = self.predictor.modality_logits(window, unknown_mr)
        return self.registry.modality_of_head_class(int(logits[0].argmax()))
