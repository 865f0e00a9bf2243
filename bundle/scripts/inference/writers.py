"""Write a case's outputs as NIfTI on the input's own grid, plus the JSON sidecar; never overwrite by accident.

File names (``NAME`` = the input's name without suffix, or the DICOM folder's name; ``TASK`` = the label's name
with spaces and slashes as ``-``):
``NAME_seg.nii.gz`` label map, ``NAME_seg.json`` sidecar, ``NAME_task-TASK.nii.gz`` binary masks (optional),
``NAME_prob-TASK.nii.gz`` probabilities (optional), ``NAME_overlay.png`` quick-look picture (optional).
Every file is written to a temporary name first and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .errors import CaseError
from .flags import as_flag
from .task_selection import TaskGroup


def task_slug(name: str) -> str:
    """``right kidney`` -> ``right-kidney``; ``amos_ct/liver`` -> ``amos_ct-liver``."""
    return re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-")


@dataclass
class OutputPaths:
    label_map: Path
    sidecar: Path
    overlay: Path | None
    masks: dict[int, Path]
    probabilities: dict[int, Path]

    def all(self) -> list[Path]:
        extra = [self.overlay] if self.overlay else []
        return [self.label_map, self.sidecar, *extra, *self.masks.values(), *self.probabilities.values()]


@dataclass
class NativeGrid:
    """The input's own grid: voxel→RAS affine, shape, and (for NIfTI inputs) its header to keep q/sform codes."""

    affine: np.ndarray
    shape: tuple[int, ...]
    nifti_header: Any = None


def native_grid(case: dict[str, Any], affine: Any, shape: Sequence[int]) -> NativeGrid:
    header = None
    if case.get("format") == "nifti":
        header = nib.load(case["image"]).header
    return NativeGrid(np.asarray(affine, dtype=np.float64), tuple(int(s) for s in shape), header)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the user's usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CaseWriter:
    """Knows the output names of a case, refuses to overwrite, and writes volumes and the sidecar."""

    def __init__(
        self,
        output_dir: str | os.PathLike,
        overwrite: bool = False,
        save_task_masks: bool = False,
        save_probabilities: bool = False,
        save_overlay: bool = False,
    ) -> None:
        self.output_dir = Path(str(output_dir)).expanduser()
        self.options = {"overwrite": overwrite, "save_task_masks": save_task_masks,
                        "save_probabilities": save_probabilities, "save_overlay": save_overlay}

    def check_options(self) -> None:
        """Raise SetupError for a switch that is not true/false (checked before any case runs)."""
        for name in self.options:
            self.flag(name)

    def flag(self, name: str) -> bool:
        """One of the true/false switches (given as words on the command line)."""
        return as_flag(self.options[name], name)

    def paths(self, name: str, groups: Sequence[TaskGroup] = ()) -> OutputPaths:
        out = self.output_dir
        return OutputPaths(
            label_map=out / f"{name}_seg.nii.gz",
            sidecar=out / f"{name}_seg.json",
            overlay=out / f"{name}_overlay.png" if self.flag("save_overlay") else None,
            masks={g.label: out / f"{name}_task-{task_slug(g.name)}.nii.gz" for g in groups}
            if self.flag("save_task_masks") else {},
            probabilities={g.label: out / f"{name}_prob-{task_slug(g.name)}.nii.gz" for g in groups}
            if self.flag("save_probabilities") else {},
        )

    def check_free(self, source: str, paths: OutputPaths) -> None:
        """Raise before any work when an output exists and ``--overwrite`` was not given."""
        if self.flag("overwrite"):
            return
        taken = [p for p in paths.all() if p.exists()]
        if taken:
            more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
            raise CaseError(f"{source}: output {taken[0]}{more} already exists; pass --overwrite to replace")

    def save_volume(self, path: Path, array: np.ndarray, grid: NativeGrid) -> None:
        """Save ``array`` (on the native grid) as NIfTI with the input's geometry."""
        if tuple(array.shape) != grid.shape:
            raise CaseError(f"{path}: internal shape mismatch {array.shape} vs input {grid.shape}")
        image = nib.Nifti1Image(array, grid.affine)
        if grid.nifti_header is not None:
            qform, qcode = grid.nifti_header.get_qform(coded=True)
            sform, scode = grid.nifti_header.get_sform(coded=True)
            if int(qcode) or int(scode):
                image.set_qform(qform if int(qcode) else None, code=int(qcode))
                image.set_sform(sform if int(scode) else None, code=int(scode))
            image.header.set_xyzt_units(*grid.nifti_header.get_xyzt_units())
        else:
            image.set_qform(grid.affine, code=1)
            image.set_sform(grid.affine, code=1)
        image.set_data_dtype(array.dtype)
        atomic_write(path, lambda tmp: nib.save(image, tmp))

    def save_sidecar(self, path: Path, content: dict[str, Any]) -> None:
        def write(tmp: str) -> None:
            Path(tmp).write_text(json.dumps(content, indent=1) + "\n")

        atomic_write(path, write)
