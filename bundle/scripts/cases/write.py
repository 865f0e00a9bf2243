"""A ``CaseResult``'s files on the input's own grid: written together or not at all, never over a user's files by
accident.

File names (``NAME`` = the case name of ``scripts.io.naming``; ``TASK`` = the label's name as a slug):
``NAME_seg.nii.gz`` label map, ``NAME_seg.json`` sidecar, ``NAME_task-TASK.nii.gz`` binary masks (optional),
``NAME_prob-TASK.nii.gz`` probabilities (optional), ``NAME_overlay.png`` quick-look picture (optional).

Every file of a case is written into a private staging folder inside the output folder, then moved into place, the
sidecar last: a case whose sidecar exists and lists only present files is complete. Files of an earlier run of the
same case that this run does not write again are removed when it commits, so a folder never mixes two runs' outputs
for one case.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..case_engine import AlreadyComplete
from ..errors import CaseError, SetupError
from ..io.files import write_json
from ..io.nifti import COMPRESSION_LEVELS, write_nifti
from ..io.output_folder import OutputFolder
from ..registry import slug
from .case import CaseResult, NativeGrid

MERGE_RULE = "mean probability of the listed tasks"
LABEL_RULE = "each voxel: the label whose probability is highest and above the threshold; 0 = none"


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


class CaseOutput:
    """The files of one case, staged; ``commit`` moves them into the output folder (sidecar last)."""

    def __init__(self, staging: Path, replaces: Sequence[Path], compression: str = "default") -> None:
        self.staging = staging
        self.compression = compression
        self.replaces = list(replaces)
        self.written: list[tuple[Path, Path]] = []  # (staged, final)

    def _stage(self, final: Path) -> Path:
        staged = self.staging / final.name
        self.written.append((staged, final))
        return staged

    def volume(self, final: Path, array: np.ndarray, grid: NativeGrid) -> None:
        if tuple(array.shape) != grid.shape:
            raise CaseError(f"{final}: internal shape mismatch {array.shape} vs input {grid.shape}")
        write_nifti(self._stage(final), array, grid.affine, like=grid.nifti_header, compression=self.compression)

    def picture(self, final: Path, draw: Callable[[Path], None]) -> None:
        draw(self._stage(final))

    def sidecar(self, final: Path, content: dict[str, Any]) -> None:
        write_json(content, self._stage(final))

    def commit(self) -> None:
        finals = {final for _, final in self.written}
        for stale in self.replaces:
            if stale not in finals:
                stale.unlink(missing_ok=True)
        ordered = sorted(self.written, key=lambda pair: pair[1].suffix == ".json")  # sidecar last
        for staged, final in ordered:
            os.replace(staged, final)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


class CaseWriter:
    """Knows the output names of a case, when a case is complete, and what may be replaced.

    ``label_names``: every label name a run can write (``task_selection.output_label_names``), so that an earlier
    run's masks of other labels are found by their literal names. ``compression``: ``fast`` or ``default`` gzip
    (``scripts.io.nifti.COMPRESSION_LEVELS``).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        overwrite: bool = False,
        skip_existing: bool = False,
        save_task_masks: bool = False,
        save_probabilities: bool = False,
        save_overlay: bool = False,
        label_names: Sequence[str] = (),
        compression: str = "default",
    ) -> None:
        self.folder = OutputFolder(output_dir)
        self.label_names = tuple(label_names)
        self.compression = str(compression)
        self.output_dir = self.folder.path
        self.overwrite = bool(overwrite)
        self.skip_existing = bool(skip_existing)
        self.save_task_masks = bool(save_task_masks)
        self.save_probabilities = bool(save_probabilities)
        self.save_overlay = bool(save_overlay)

    def prepare(self, lock: bool = True) -> Path:
        """Check the settings, create, check and lock the output folder (before any case is computed). ``lock``
        False: another process of the same run (a ``torchrun`` rank) holds the lock."""
        if self.compression not in COMPRESSION_LEVELS:
            raise SetupError(
                f"--compression: expected one of {', '.join(COMPRESSION_LEVELS)}, got {self.compression!r}"
            )
        return self.folder.claim(lock=lock)

    def paths(self, name: str, groups: Sequence[Any] = ()) -> OutputPaths:
        out = self.output_dir
        return OutputPaths(
            label_map=out / f"{name}_seg.nii.gz",
            sidecar=out / f"{name}_seg.json",
            overlay=out / f"{name}_overlay.png" if self.save_overlay else None,
            masks={g.label: out / f"{name}_task-{slug(g.name)}.nii.gz" for g in groups} if self.save_task_masks else {},
            probabilities=(
                {g.label: out / f"{name}_prob-{slug(g.name)}.nii.gz" for g in groups} if self.save_probabilities else {}
            ),
        )

    def existing(self, name: str) -> list[Path]:
        """Files of case ``name`` already in the output folder (any run's).

        Names are compared literally, never as patterns: a case called ``a*`` or ``b[1]`` owns only its own files,
        not those of ``ab`` or ``b1``. A case's files are its fixed names, what its sidecar lists, and the mask and
        probability names of every label a run of these weights can write (``label_names``).
        """
        candidates = {self.paths(name).label_map.name, self.paths(name).sidecar.name, f"{name}_overlay.png"}
        candidates.update(self._listed_in_sidecar(name))
        for label in self.label_names:
            candidates.update((f"{name}_task-{slug(label)}.nii.gz", f"{name}_prob-{slug(label)}.nii.gz"))
        return sorted(self.output_dir / c for c in candidates if (self.output_dir / c).is_file())

    def _listed_in_sidecar(self, name: str) -> list[str]:
        """File names an earlier run's sidecar of this case lists (inside the output folder only)."""
        try:
            content = json.loads(self.paths(name).sidecar.read_text())
        except (OSError, ValueError):
            return []
        if not isinstance(content, dict):
            return []
        listed = [content.get("label_map"), content.get("overlay")]
        for key in ("task_masks", "probabilities"):
            if isinstance(content.get(key), dict):
                listed.extend(content[key].values())
        return [str(n) for n in listed if isinstance(n, str) and n and Path(n).name == n]

    def is_complete(self, name: str) -> bool:
        """The case's sidecar exists and every file it lists is present."""
        sidecar = self.paths(name).sidecar
        try:
            content = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            return False
        listed = [
            content.get("label_map"),
            content.get("overlay"),
            *content.get("task_masks", {}).values(),
            *content.get("probabilities", {}).values(),
        ]
        return all((self.output_dir / name_).is_file() for name_ in listed if name_)

    def check(self, source: str, name: str) -> list[Path]:
        """Decide before any work: skip a complete case (``--skip_existing``), refuse to replace outputs unasked.

        Returns the files this case's commit will replace. Leftovers of an incomplete case (no valid sidecar) are
        replaced under ``--skip_existing`` too: they are an interrupted run's, not a finished result.
        """
        existing = self.existing(name)
        if self.skip_existing and self.is_complete(name):
            raise AlreadyComplete(f"already complete in {self.output_dir} (--skip_existing)")
        if existing and not (self.overwrite or self.skip_existing):
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise CaseError(
                f"{source}: output {existing[0]}{more} already exists; pass --overwrite true to replace, "
                "or --skip_existing true to keep complete cases"
            )
        return existing

    def open(self, name: str, replaces: Sequence[Path]) -> CaseOutput:
        return CaseOutput(self.folder.staging(name), replaces, self.compression)

    def write(
        self,
        result: CaseResult,
        replaces: Sequence[Path],
        weights: dict[str, str],
        draw_overlay: Callable[[Path, CaseResult], None] | None = None,
    ) -> OutputPaths:
        """Stage every file of ``result`` (label map, masks, probabilities, overlay), the sidecar last, and commit
        them together; returns the paths written."""
        case = result.case
        with case.clock.stage("write"):
            paths = self.paths(case.name, result.groups)
            output = self.open(case.name, replaces)
            try:
                output.volume(paths.label_map, result.labels, case.native)
                for label, path in paths.masks.items():
                    output.volume(path, result.masks[label], case.native)
                for label, path in paths.probabilities.items():
                    output.volume(path, result.probabilities[label], case.native)
                if paths.overlay is not None and draw_overlay is not None:
                    output.picture(paths.overlay, lambda tmp: draw_overlay(tmp, result))
                output.sidecar(paths.sidecar, sidecar_content(result, weights, paths))
                output.commit()
            finally:
                output.discard()
        return paths


def sidecar_content(result: CaseResult, weights: dict[str, str], paths: OutputPaths) -> dict[str, Any]:
    """The JSON sidecar of a label map: what each label value means and how the result was made."""
    case = result.case
    counts = np.bincount(result.labels.reshape(-1), minlength=len(result.groups) + 1)
    label_table = {"0": {"name": "background"}}
    for group in result.groups:
        label_table[str(group.label)] = {**group.as_json(), "voxels": int(counts[group.label])}
    content = {
        "input": str(Path(case.item["image"]).resolve()),
        "input_format": case.format,
        "label_map": paths.label_map.name,
        "labels": label_table,
        "label_rule": LABEL_RULE,
        "merge_rule": MERGE_RULE,
        "task_masks": {str(k): p.name for k, p in paths.masks.items()},
        "probabilities": {str(k): p.name for k, p in paths.probabilities.items()},
        "overlay": paths.overlay.name if paths.overlay else None,
        "modality": case.modality.as_json(),
        "weights": weights,
        "geometry": case.native.as_json(),
        "settings": result.settings,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if result.settings.get("profile"):
        content["profile_seconds"] = case.clock.as_json()
    return content
