"""Which modality prior to use for an image.

``--modality ct|pet|t1|t2|cine|mr`` is taken as given (``mr`` = MRI of unknown sequence, prior row -1).
``--modality auto`` (default), in this order:
1. a datalist item's own ``modality`` (a modality name, or a sequence key of the item's ``dataset``);
2. a DICOM series' Modality tag: CT -> ct, PT -> pet, MR -> mr (the tag does not say the sequence);
   other tags are an error asking for ``--modality``;
3. otherwise the network's modality head: one 128^3 window from the image centre, normalised like MRI/PET
   (percentile clip + z-score) and fed with the unknown-MRI prior (-1), which carries no modality of its own;
   the head's most probable class is used (its last class is the unknown-MRI row -> ``mr``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor

from .errors import CaseError, SetupError

# Agreed indices (configs/task_registry.json "modalities"); -1 selects the last prior row: MRI of unknown sequence.
MODALITY_INDEX: dict[str, int] = {"ct": 0, "pet": 1, "t1": 2, "t2": 3, "cine": 4, "mr": -1}
MR_FAMILY = ("mr", "t1", "t2", "cine")
DICOM_MODALITY = {"CT": "ct", "PT": "pet", "MR": "mr"}
CHOICES = ("auto", *MODALITY_INDEX)


def check_modality_choice(value: Any, source: str = "--modality") -> str:
    """Normalise a user's modality choice; unknown values name the accepted ones."""
    name = str(value).strip().lower() if value is not None else "auto"
    if name not in CHOICES:
        raise SetupError(f"{source}: unknown modality '{value}'; choose one of {', '.join(CHOICES)}")
    return name


def modality_names_of_dataset(registry: Any, dataset: str) -> set[str]:
    """Modality names a registry dataset covers (several when it has sequences, e.g. chaos: t1 and t2)."""
    info = registry.datasets[dataset]
    value = info["modality"] if isinstance(info, dict) else getattr(info, "modality")
    return set(value.values()) if isinstance(value, dict) else {value}


def datalist_modality(registry: Any, item_modality: str, dataset: str | None) -> str:
    """A datalist item's ``modality``: a modality name, or a sequence key of its dataset (``t1_in`` of chaos)."""
    key = str(item_modality).strip().lower()
    if key in MODALITY_INDEX:
        return key
    if dataset and dataset in registry.datasets:
        info = registry.datasets[dataset]
        value = info["modality"] if isinstance(info, dict) else getattr(info, "modality")
        if isinstance(value, dict) and key in value:
            return value[key]
    raise CaseError(f"datalist modality '{item_modality}' is neither a modality ({', '.join(MODALITY_INDEX)}) "
                    f"nor a sequence of dataset '{dataset}'")


def head_index_to_name(index: int, num_modalities: int) -> str:
    """The modality head's class ``index`` as a name; its last class is the unknown-MRI row."""
    if index == num_modalities - 1:
        return "mr"
    names = [n for n, i in MODALITY_INDEX.items() if i == index]
    return names[0] if names else "mr"


class ModalityProbe:
    """Asks the network's modality head which modality an image is (used for ``--modality auto`` without a tag)."""

    def __init__(
        self,
        network: torch.nn.Module,
        normalizer: Callable[[dict], dict],
        roi_size: Sequence[int],
        device: torch.device | str = "cpu",
    ) -> None:
        self.network = network
        self.normalizer = normalizer
        self.roi_size = [int(s) for s in roi_size]
        self.device = torch.device(device)

    def centre_window(self, image: torch.Tensor) -> torch.Tensor:
        """The image centre, zero-padded (the z-scored mean) to exactly ``roi_size``."""
        spatial = image.shape[1:]
        slices = [slice(max(0, (s - r) // 2), max(0, (s - r) // 2) + r) for s, r in zip(spatial, self.roi_size)]
        window = image[(slice(None), *slices)]
        pads = []
        for s, r in reversed(list(zip(window.shape[1:], self.roi_size))):
            pads.extend([(r - s) // 2, r - s - (r - s) // 2])
        return torch.nn.functional.pad(window, pads)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> str:
        normalized = self.normalizer({"image": image.clone(), "modality_index": torch.tensor(-1)})["image"]
        plain = normalized.as_tensor() if isinstance(normalized, MetaTensor) else torch.as_tensor(normalized)
        window = self.centre_window(plain.float())[None].to(self.device)  # plain tensor: no metadata overhead
        was_training = self.network.training
        self.network.eval()
        try:
            _, logits = self.network(
                window, torch.full((1, 1), -1, dtype=torch.long, device=self.device),
                torch.full((1,), -1, dtype=torch.long, device=self.device),
            )
        finally:
            self.network.train(was_training)
        return head_index_to_name(int(logits[0].argmax()), int(logits.shape[-1]))
