"""What travels through the case pipeline: a ``Case`` read for the network and the ``CaseResult`` written for the
user, each carrying the seconds its stages took (``--profile true`` reports them)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

#: The stages a case goes through, in order (the keys of a profile).
STAGES = ("read", "resample", "modality", "windows", "invert", "write")


class StageClock:
    """Seconds per stage of one case. With ``sync`` (profiling on a GPU) each stage waits for the device's queued
    work before it stops, so a stage is charged for what it launched."""

    def __init__(self, sync: torch.device | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.sync = sync if sync is not None and sync.type == "cuda" else None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                torch.cuda.synchronize(self.sync)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - began

    def as_json(self) -> dict[str, float]:
        ordered = {name: self.seconds[name] for name in STAGES if name in self.seconds}
        ordered.update({k: v for k, v in self.seconds.items() if k not in ordered})
        return {name: round(value, 4) for name, value in ordered.items()}


@dataclass
class NativeGrid:
    """The input's own grid: voxel->RAS affine, shape, and what outputs on it keep of the input: a NIfTI input's
    header (q/sform codes), an NRRD input's header (space and space directions), a DICOM series' files in slice order
    (the source images a DICOM SEG references)."""

    affine: np.ndarray
    shape: tuple[int, ...]
    nifti_header: Any = None
    nrrd_header: dict[str, Any] | None = None
    dicom_files: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "affine_ras": np.round(self.affine, 6).tolist()}


@dataclass(frozen=True)
class ModalityDecision:
    """Which modality prior the case uses, its row, and the evidence (``--modality``, datalist, DICOM tag, head)."""

    name: str
    index: int
    source: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "index": self.index, "source": self.source}


@dataclass
class Case:
    """One scan as the network needs it.

    ``image`` is ``1 × spatial`` on the network grid (orientation, spacing, normalised intensities), on the compute
    device, a MetaTensor whose recorded transforms bring any channel back to ``native``; ``item`` is the input entry
    as collected (``dataset``, ``label_file`` and other datalist keys)."""

    source: str
    name: str
    format: str | None
    image: MetaTensor
    native: NativeGrid
    modality: ModalityDecision
    item: dict[str, Any]
    clock: StageClock = field(default_factory=StageClock)


@dataclass
class CaseResult:
    """What is written for a case, on the input's grid: the label map (uint8/uint16), the binary masks and float32
    probabilities the user asked for (by label value), and the label map on the network grid for the overlay."""

    case: Case
    groups: list[Any]
    labels: np.ndarray
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    probabilities: dict[int, np.ndarray] = field(default_factory=dict)
    network_labels: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)
