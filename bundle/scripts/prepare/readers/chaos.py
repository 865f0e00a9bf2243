"""CHAOS (Combined Healthy Abdominal Organ Segmentation, ISBI 2019), MR part: 20 patients, three series each.

Release: ``CHAOS_Train_Sets.zip`` (zenodo.org/records/3431873): ``Train_Sets/MR/<patient>/T1DUAL/DICOM_anon/InPhase``,
``.../OutPhase`` (DICOM), ``T1DUAL/Ground`` (PNG, one per slice, shared by both T1 phases), ``T2SPIR/DICOM_anon`` and
``T2SPIR/Ground``. Each patient gives three cases, ``chaos_<patient>_t1_in``, ``_t1_out`` and ``_t2`` (the item's
``modality`` is that sequence key of the task registry).

The slices of a series are ordered by their position along the slice normal (``scripts.io.dicom``), never by file
name; each ground-truth PNG belongs to the DICOM file of the same rank in file-name order (the challenge names both
``IMG-<series>-<instance>``), so it lands on that file's slice wherever the file system lists it. A PNG count that
differs from the series' slice count refuses the case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import CaseError
from ...registry import TaskRegistry
from ..cases import CaseProblem, Found, SourceCase, Volume, case_name
from ..labels import label_of
from .common import natural_key

DATASETS = ("chaos",)
RELEASE = (
    "CHAOS MR training set (CHAOS_Train_Sets.zip): MR/<patient>/T1DUAL/DICOM_anon/{InPhase,OutPhase}, "
    "MR/<patient>/T1DUAL/Ground, MR/<patient>/T2SPIR/DICOM_anon and MR/<patient>/T2SPIR/Ground"
)
#: Sequence key -> (DICOM folder, ground-truth folder), relative to the patient folder.
SERIES = {
    "t1_in": ("T1DUAL/DICOM_anon/InPhase", "T1DUAL/Ground"),
    "t1_out": ("T1DUAL/DICOM_anon/OutPhase", "T1DUAL/Ground"),
    "t2": ("T2SPIR/DICOM_anon", "T2SPIR/Ground"),
}
#: The challenge's PNG grey values (with the ranges its description allows) -> class name of the task registry.
GREY_VALUES = {
    (55, 70): "liver",
    (110, 135): "right kidney",
    (175, 200): "left kidney",
    (240, 255): "spleen",
}


def find(src: Path, dataset: str) -> Found:
    found = Found()
    patients = sorted({p.parent for p in src.rglob("T2SPIR") if p.parent.name.isdigit()}, key=lambda p: int(p.name))
    for patient in patients:
        for sequence, (dicom, ground) in SERIES.items():
            name = case_name(dataset, patient.name, sequence)
            missing = [str(patient / f) for f in (dicom, ground) if not (patient / f).is_dir()]
            if missing:
                found.problems.append((patient.name, name, f"missing case: no folder {missing[0]}"))
                continue
            files = {"dicom": str(patient / dicom), "ground": str(patient / ground)}
            found.cases.append(SourceCase(dataset, patient.name, name, files, sequence=sequence))
    return found


def _class_values(registry: TaskRegistry) -> list[tuple[int, int, int]]:
    return [(low, high, label_of(registry, "chaos", name)) for (low, high), name in GREY_VALUES.items()]


def ground_truth(pngs: list[Path], registry: TaskRegistry) -> list[np.ndarray]:
    """The PNG slices as (column, row) arrays of registry label values."""
    from PIL import Image

    classes = _class_values(registry)
    slices = []
    for png in pngs:
        try:
            grey = np.asarray(Image.open(png).convert("L"), dtype=np.int32)
        except Exception as err:  # PIL raises several types for damaged files
            raise CaseProblem(f"{png} cannot be read as PNG ({type(err).__name__}: {err})") from err
        label = np.zeros(grey.shape, dtype=np.uint8)
        known = grey == 0
        for low, high, value in classes:
            inside = (grey >= low) & (grey <= high)
            label[inside] = value
            known |= inside
        if not known.all():
            strange = sorted(set(np.unique(grey[~known]).tolist()))[:5]
            raise CaseProblem(
                f"{png}: grey values {strange} are not CHAOS classes (liver 63, right kidney 126, left kidney 189, "
                "spleen 252)"
            )
        slices.append(label.T)
    return slices


def load(case: SourceCase, registry: TaskRegistry) -> tuple[Volume, Volume]:
    from ...io.dicom import dicom_files_in, read_dicom_series  # imports MONAI: only where DICOM is read

    try:
        series = read_dicom_series(case.files["dicom"])
    except CaseError as err:
        raise CaseProblem(str(err)) from err
    pngs = sorted(Path(case.files["ground"]).glob("*.png"), key=lambda p: natural_key(p.name))
    if len(pngs) != len(series.files):
        raise CaseProblem(
            f"{case.files['ground']} has {len(pngs)} ground-truth PNG slices but the DICOM series "
            f"{case.files['dicom']} has {len(series.files)} slices"
        )
    by_name = sorted(dicom_files_in(case.files["dicom"]), key=lambda p: natural_key(p.name))
    png_of = {str(dicom): png for dicom, png in zip(by_name, pngs)}
    ordered = [png_of[f] for f in series.files]
    planes = ground_truth(ordered, registry)
    for png, plane in zip(ordered, planes):
        if plane.shape != series.array.shape[:2]:
            raise CaseProblem(
                f"{png} is {plane.shape[0]}x{plane.shape[1]} pixels but the DICOM slices of {case.files['dicom']} "
                f"are {series.array.shape[0]}x{series.array.shape[1]}"
            )
    array = series.array
    if np.array_equal(array, np.round(array)) and array.min() >= -32768 and array.max() <= 32767:
        array = array.astype(np.int16)
    return Volume(array, series.affine), Volume(np.stack(planes, axis=-1), series.affine.copy())
