"""Read an input into a ``Case``: load and check it, check it fits in memory, bring it to the network grid (on the
compute device when that is a GPU, so resampling runs there), decide its modality once, normalise its intensities."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch

from ..errors import CaseError, error_chain, one_line
from ..inference.modality import ModalityStep
from .case import Case, ModalityDecision, NativeGrid, StageClock

GIB = 1024**3


def available_host_bytes() -> int | None:
    """Memory the kernel says a new allocation can still get (``MemAvailable``), or None where it cannot tell."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def source_header(case: dict[str, Any]) -> Any:
    """A NIfTI input's nibabel header or an NRRD input's header dict, read once per case without the voxels (the
    memory estimate and the outputs use it); None for DICOM or a header that cannot be read (the reading itself
    then reports why)."""
    try:
        if case.get("format") == "nifti":
            return nib.load(case["image"]).header
        if case.get("format") == "nrrd":
            import nrrd

            return dict(nrrd.read_header(case["image"]))
    except Exception:  # reported with its reason by the reading that follows
        return None
    return None


def header_geometry(header: Any) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
    """Shape and voxel size from a :func:`source_header` (None when it cannot tell)."""
    if isinstance(header, nib.Nifti1Header):
        return tuple(int(s) for s in header.get_data_shape()), tuple(float(z) for z in header.get_zooms())
    if isinstance(header, dict) and "sizes" in header:
        directions = np.asarray(header.get("space directions", np.eye(3)), dtype=float)
        return tuple(int(s) for s in header["sizes"]), tuple(float(v) for v in np.linalg.norm(directions, axis=1))
    return None


def estimated_host_bytes(
    shape: Sequence[int], voxel_size: Sequence[float], spacing: Sequence[float], channels: int, invert_chunk: int
) -> int:
    """What one case holds at its peak on the host when it runs on the CPU (float32 everywhere): the native image
    and a copy, the network-grid image, the stitched probabilities with their count map, one chunk of channels on the
    native grid, and the label map with its running maximum."""
    native = math.prod(int(s) for s in shape[:3])
    network = math.prod(
        max(1, math.ceil(int(s) * float(z) / float(t))) for s, z, t in zip(shape[:3], voxel_size, spacing)
    )
    return 4 * (2 * native + network * (channels + 2) + native * max(1, invert_chunk)) + 5 * native


class CaseReader:
    """``load`` (MONAI load, checks, channel axis), ``to_grid`` (to the compute device, orientation and spacing: on a
    GPU the resampling runs there), then the modality step, then ``normalize``.

    Args:
        channels: the most task channels a pass over a case can stitch (for the memory estimate).
        spacing: the network grid's voxel size (for the memory estimate).
        invert_chunk: channels brought back to the input's grid at a time (for the memory estimate).
        memory_check: refuse a case whose estimated host memory exceeds what is available (CPU runs).
        profile: time the stages on the device's clock (a GPU's queued work is waited for at each stage's end).
    """

    def __init__(
        self,
        load: Callable[[dict], dict],
        to_grid: Callable[[dict], dict],
        modality: ModalityStep,
        normalize: Callable[[dict], dict],
        device: torch.device | str = "cpu",
        channels: int = 16,
        spacing: Sequence[float] = (1.5, 1.5, 1.5),
        invert_chunk: int = 4,
        memory_check: bool = True,
        available: Callable[[], int | None] = available_host_bytes,
        profile: bool = False,
    ) -> None:
        self.load = load
        self.to_grid = to_grid
        self.profile = bool(profile)
        self.modality = modality
        self.normalize = normalize
        self.device = torch.device(device)
        self.channels = int(channels)
        self.spacing = [float(s) for s in spacing]
        self.invert_chunk = int(invert_chunk)
        self.memory_check = bool(memory_check)
        self.available = available

    def check_memory(self, case: dict[str, Any], header: Any) -> None:
        """Refuse, before reading the voxels, a case that would not fit in the host's memory."""
        if not self.memory_check or self.device.type == "cuda":
            return
        geometry = header_geometry(header)
        available = self.available()
        if geometry is None or available is None:
            return
        shape, voxel_size = geometry
        need = estimated_host_bytes(shape, voxel_size, self.spacing, self.channels, self.invert_chunk)
        if need > available:
            raise CaseError(
                f"{case['source']}: a {'x'.join(map(str, shape[:3]))} volume needs about {need / GIB:.1f} GiB of "
                f"memory here and {available / GIB:.1f} GiB is available; run it on a GPU, ask for fewer --tasks, "
                "pass --invert_chunk 1, or crop the scan"
            )

    def __call__(self, item: dict[str, Any]) -> Case:
        clock = StageClock(self.device if self.profile else None)
        source = str(item.get("source", item.get("image")))
        header = source_header(item)
        self.check_memory(item, header)
        with clock.stage("read"):
            data = self._apply(self.load, dict(item), source)
        with clock.stage("resample"):
            data = self._apply(self.to_grid, data, source)
        with clock.stage("modality"):
            name, how = self.modality(data)
            index = self.modality.registry.modality_index(name)
            data["modality_index"] = torch.tensor(index, dtype=torch.long)
            data = self.normalize(data)
        native = NativeGrid(
            np.asarray(torch.as_tensor(data["native_affine"]).cpu(), dtype=np.float64),
            tuple(int(s) for s in data["native_shape"]),
            header if item.get("format") == "nifti" else None,
            header if item.get("format") == "nrrd" else None,
            tuple(data.get("dicom_files", ())),
        )
        return Case(
            source=source,
            name=str(item["name"]),
            format=item.get("format"),
            image=data["image"],
            native=native,
            modality=ModalityDecision(name, index, how),
            item=dict(item),
            clock=clock,
        )

    @staticmethod
    def _apply(transforms: Callable[[dict], dict], data: dict[str, Any], source: str) -> dict[str, Any]:
        try:
            return transforms(data)
        except Exception as err:  # MONAI wraps a failing transform's error; ours are kept as they are
            if any(isinstance(e, CaseError) for e in error_chain(err)):
                raise CaseError(one_line(err)) from err
            raise CaseError(f"{source}: cannot read or preprocess the image ({one_line(err)})") from err
