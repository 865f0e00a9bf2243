"""M&Ms (Multi-Centre, Multi-Vendor and Multi-Disease Cardiac Segmentation, MICCAI 2020): 320 short-axis cines.

Release: the M&Ms "OpenDataset" (www.ub.edu/mnms): ``Training/Labeled/<id>/``, ``Validation/<id>/`` and
``Testing/<id>/``, each holding the 4D cine ``<id>_sa.nii.gz`` and ``<id>_sa_gt.nii.gz``, whose two labelled frames
are end-diastole and end-systole. Each gives two cases, ``mnm_<id>_0`` and ``mnm_<id>_1``: the labelled frames in
time order, each a 3D volume with the cine's full geometry (the published preparation dropped the direction).
Labels: 1 left ventricle, 2 myocardium, 3 right ventricle.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

from ...registry import TaskRegistry
from ..cases import CaseProblem, Found, SourceCase, Volume, case_name
from ..geometry import read_nifti

DATASETS = ("mnm",)
RELEASE = "M&Ms OpenDataset: {Training/Labeled,Validation,Testing}/<id>/<id>_sa.nii.gz and <id>_sa_gt.nii.gz"
#: Labelled frames per cine (end-diastole and end-systole).
LABELLED_FRAMES = 2


def find(src: Path, dataset: str) -> Found:
    found = Found()
    for cine in sorted(src.rglob("*_sa.nii.gz"), key=lambda p: p.parent.name):
        patient = cine.parent.name
        if cine.name != f"{patient}_sa.nii.gz":
            continue
        label = cine.with_name(f"{patient}_sa_gt.nii.gz")
        for part in range(LABELLED_FRAMES):
            name = case_name(dataset, patient, part)
            if not label.is_file():
                found.problems.append((patient, name, f"missing case: {cine} has no label file {label.name}"))
                continue
            found.cases.append(SourceCase(dataset, patient, name, {"image": str(cine), "label": str(label)}, part=part))
    return found


@lru_cache(maxsize=4)
def labelled_frames(label_path: str) -> tuple[int, ...]:
    """Time frames of the 4D label file that hold any label, in time order."""
    try:
        data = np.asanyarray(nib.load(label_path).dataobj)
    except Exception as err:
        raise CaseProblem(f"{label_path} cannot be read as NIfTI ({type(err).__name__}: {err})") from err
    if data.ndim != 4:
        raise CaseProblem(f"{label_path} is {data.ndim}D; an M&Ms label is a 4D cine (x, y, slice, time)")
    return tuple(int(t) for t in np.flatnonzero(data.reshape(-1, data.shape[3]).any(axis=0)))


def load(case: SourceCase, registry: TaskRegistry) -> tuple[Volume, Volume]:
    frames = labelled_frames(case.files["label"])
    if len(frames) != LABELLED_FRAMES:
        raise CaseProblem(
            f"{case.files['label']} has labels in {len(frames)} time frames {list(frames)[:6]}; expected "
            f"{LABELLED_FRAMES} (end-diastole and end-systole)"
        )
    frame = frames[case.part or 0]
    return read_nifti(case.files["image"], frame=frame), read_nifti(case.files["label"], frame=frame)
