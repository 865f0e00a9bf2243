"""autoPET (MICCAI 2022): the FDG-PET/CT whole-body studies of TCIA's FDG-PET-CT-Lesions collection, as NIfTI.

Release: the challenge's NIfTI conversion (``FDG-PET-CT-Lesions/PETCT_<patient>/<study>/SUV.nii.gz`` and
``SEG.nii.gz``, with CT, CTres and PET beside them, study folders named ``MM-DD-YYYY-NA-PET-CT ...``). The image is
SUV, the label SEG (1 lesion). A patient's studies are ``PETCT_<patient>_0``, ``_1``, ... in date order (then folder
name): the published ids numbered them in directory-listing order, which is not reproducible.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..cases import Found, SourceCase, case_name
from .common import load_pair

DATASETS = ("autopet",)
RELEASE = "autoPET NIfTI (FDG-PET-CT-Lesions): PETCT_<patient>/<study date folder>/SUV.nii.gz and SEG.nii.gz"
load = load_pair


def study_order(folder: Path) -> tuple:
    """A study folder's place among its patient's studies: its date (``MM-DD-YYYY`` prefix), then its name."""
    match = re.match(r"(\d{2})-(\d{2})-(\d{4})", folder.name)
    date = (int(match.group(3)), int(match.group(1)), int(match.group(2))) if match else (9999, 99, 99)
    return date, folder.name


def find(src: Path, dataset: str) -> Found:
    found = Found()
    studies: dict[Path, list[Path]] = {}
    for suv in src.rglob("SUV.nii.gz"):
        if suv.parent.parent.name.startswith("PETCT_"):
            studies.setdefault(suv.parent.parent, []).append(suv.parent)
    for patient in sorted(studies, key=lambda p: p.name):
        for index, study in enumerate(sorted(studies[patient], key=study_order)):
            official = f"{patient.name}_{index}"
            name = case_name(dataset, official)
            if not (study / "SEG.nii.gz").is_file():
                found.problems.append((official, name, f"missing case: {study / 'SUV.nii.gz'} has no SEG.nii.gz"))
                continue
            files = {"image": str(study / "SUV.nii.gz"), "label": str(study / "SEG.nii.gz")}
            found.cases.append(SourceCase(dataset, official, name, files))
    return found
