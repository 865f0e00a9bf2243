"""A prepared case appears complete or not at all.

A case is a folder ``<out>/<dataset>/<case_id>/`` holding ``<case_id>.nii.gz`` (image) and ``<case_id>_label.nii.gz``.
Both files are written (through the bundle's NIfTI writer) into a staging folder named after the writing process,
then the folder is renamed into place in one step; ``--overwrite`` moves the old folder aside first and deletes it
only after the new one is in place. Staging folders of a run that was killed are removed by the next run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..io.nifti import write_nifti
from .cases import Volume

STAGING = ".staging"


def case_dir(out_dir: Path, dataset: str, case_id: str) -> Path:
    return out_dir / dataset / case_id


def case_files(folder: Path) -> tuple[Path, Path]:
    """(image, label) of a prepared case folder."""
    return folder / f"{folder.name}.nii.gz", folder / f"{folder.name}_label.nii.gz"


def is_prepared(folder: Path) -> bool:
    return all(path.is_file() for path in case_files(folder))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(dataset_dir: Path) -> list[Path]:
    """Delete staging folders left by runs that no longer run (a case killed half way never reached its place)."""
    removed = []
    staging = dataset_dir / STAGING
    for entry in staging.glob("*.*") if staging.is_dir() else []:
        pid = entry.name.rsplit(".", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def write_case(folder: Path, image: Volume, label: Volume) -> Path:
    """Write both files of the case in a staging folder and move it onto ``folder`` in one rename."""
    staging = folder.parent / STAGING / f"{folder.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staged_image, staged_label = (staging / path.name for path in case_files(folder))
    try:
        write_nifti(staged_image, image.array, image.affine)
        write_nifti(staged_label, label.array, label.affine)
    except BaseException:  # a full disk, Ctrl-C: nothing of this case is left behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if folder.exists():
        old = folder.parent / STAGING / f"{folder.name}.old.{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(staging, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return folder
